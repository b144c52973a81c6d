"""The record invariants every reader applies, in one place.

Whatever the file (Dacon CSV, SQuAD JSON, JSONL), a record has a non-empty id, context and question,
all of them text: no NaN, no NUL byte, no lone surrogate (text that cannot be written as UTF-8);
ids are unique in a file; answers are non-empty text and, for training data, each one a span of its
context. A file either has answers for every question or for none: a question without an answer
among answered ones is a bad row, never a test row, unless the file says it is unanswerable
(SQuAD 2.0's `is_impossible`), which makes it a record with no answers that scores an empty prediction.

A bad row names the file, the row (CSV line, JSON path or JSONL line) and the field. With
``on_bad_row="fail"`` (the default) the first one raises a `KoqaError`; with ``"skip"`` it is
collected and reported, never dropped silently.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from koqa.data_tools.records import BadRow, QARecord
from koqa.errors import KoqaError

ON_BAD_ROW = ("fail", "skip")
log = logging.getLogger(__name__)


def text_problem(value: object) -> str | None:
    """Why `value` is not usable text, or None when it is."""
    if value is None:
        return "is missing"
    if isinstance(value, float) and math.isnan(value):
        return "is NaN"
    if not isinstance(value, str):
        return f"is a JSON {type(value).__name__}, not text"
    if not value.strip() or value.strip().lower() == "nan":
        return "is empty, whitespace-only or NaN"
    if "\x00" in value:
        return "contains a NUL byte"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


@dataclass
class ReadResult:
    records: list[QARecord] = field(default_factory=list)
    bad_rows: list[BadRow] = field(default_factory=list)
    has_answers: bool = True
    # rows whose answer_start did not point at its answer, corrected to the occurrence nearest it
    corrected_starts: list[str] = field(default_factory=list)


class RecordChecker:
    """Checks the rows of one file and turns the good ones into records."""

    def __init__(self, file: str, on_bad_row: str = "fail", check_span: bool = True):
        if on_bad_row not in ON_BAD_ROW:
            raise KoqaError(f"on_bad_row must be one of {', '.join(ON_BAD_ROW)}, got '{on_bad_row}'")
        self.file, self.on_bad_row, self.check_span = file, on_bad_row, check_span
        self.result = ReadResult()
        self.seen: dict[str, object] = {}
        self.unanswered: list[tuple[object, QARecord]] = []
        self.unread_columns: list[str] = []  # columns no field is read from (set by the reader)

    def bad(self, row: object, field_name: str, reason: str, fix: str | None = None) -> None:
        if self.on_bad_row == "fail":
            raise KoqaError(
                reason,
                file=self.file,
                row=row,
                field=field_name,
                fix=fix or "fix the row, or pass --on-bad-row skip to exclude it",
            )
        self.result.bad_rows.append(BadRow(self.file, str(row), field_name, reason))

    def add(
        self,
        row: object,
        *,
        id: object,
        context: object,
        question: object,
        answers: object = (),
        answer_starts: object = None,
        title: str = "",
        answers_field: str = "answers",
        unanswerable: object = False,
    ) -> QARecord | None:
        """The record of one row, or None (after reporting it) when the row breaks an invariant."""
        for name, value in (("id", id), ("context", context), ("question", question)):
            problem = text_problem(value)
            if problem:
                self.bad(row, name, problem)
                return None
        rid = id.strip()
        if rid in self.seen:
            self.bad(row, "id", f"duplicate id '{rid}' (first seen on row {self.seen[rid]})")
            return None
        if not isinstance(answers, (list, tuple)):
            self.bad(row, answers_field, f"is a JSON {type(answers).__name__}, not a list of answers")
            return None
        if unanswerable is None:
            unanswerable = False
        if not isinstance(unanswerable, bool):
            self.bad(row, "is_impossible", f"is a {type(unanswerable).__name__}, not true or false")
            return None
        if unanswerable and answers:
            self.bad(row, "is_impossible", "is true, but the question has answers", fix="empty its answers")
            return None
        for answer in answers:
            problem = text_problem(answer)
            if problem:
                self.bad(row, answers_field, f"an answer {problem}")
                return None
        starts = self._starts(row, context, list(answers), answer_starts, answers_field)
        if starts is None:
            return None
        missing = next((a for a, s in zip(answers, starts) if s < 0), None)
        if self.check_span and missing is not None:
            self.bad(
                row,
                answers_field,
                f"answer '{missing[:40]}' does not occur in the context",
                fix="correct the answer, or pass --on-bad-row skip",
            )
            return None
        self.seen[rid] = row
        record = QARecord(
            id=rid,
            context=context,
            question=question.strip(),
            answers=list(answers),
            answer_starts=starts,
            source=self.file,
            row=str(row),
            title=title,
            unanswerable=unanswerable,
        )
        self.result.records.append(record)
        if not answers and not unanswerable:
            self.unanswered.append((row, record))
        return record

    def _starts(
        self, row: object, context: str, answers: list[str], given: object, field_name: str
    ) -> list[int] | None:
        """Where each answer starts (-1: absent), or None after reporting a bad row.

        No offsets given (a Dacon CSV, answers as strings): the first occurrence. An offset that is a
        whole number and points at its answer: kept. One that does not: the occurrence nearest to it,
        counted in `corrected_starts` (as SQuAD's preprocessing corrects them). Offsets that are not
        whole numbers (text, booleans) or not one per answer: a bad row."""
        if given is None or (isinstance(given, (list, tuple)) and all(s is None for s in given)):
            return [context.find(answer) for answer in answers]
        if not isinstance(given, (list, tuple)) or len(given) != len(answers):
            self.bad(row, "answer_start", f"holds {given!r}: not one character offset per answer")
            return None
        starts, corrected = [], False
        for answer, start in zip(answers, given):
            if start is None:
                starts.append(context.find(answer))
                continue
            if isinstance(start, bool) or not isinstance(start, int):
                self.bad(row, "answer_start", f"{start!r} is not a character offset (a whole number)")
                return None
            if 0 <= start and context[start : start + len(answer)] == answer:
                starts.append(start)
                continue
            found = [i for i in _occurrences(context, answer)]
            starts.append(min(found, key=lambda i: abs(i - start)) if found else -1)
            corrected = corrected or bool(found)
        if corrected:
            self.result.corrected_starts.append(str(row))
        return starts

    def finish(self) -> ReadResult:
        """The result: all questions answered (training data), or none (test data)."""
        answered = len(self.result.records) - len(self.unanswered)
        if answered and self.unanswered:
            self.result.records = [r for r in self.result.records if r.has_gold]
            for row, _ in self.unanswered:
                self.bad(
                    row,
                    "answers",
                    "has no answer, while other questions in the file have answers",
                    fix="give it an answer; if it is unanswerable, mark it with is_impossible: true (SQuAD 2.0)",
                )
        self.result.has_answers = answered > 0
        if not answered and self.unread_columns:
            # read as questions without answers: if one of these columns holds them, say so before scoring nothing
            log.warning(
                "%s: no answer column, so its questions have no gold answers; columns not read: %s "
                "(if one holds the answers: --columns answers=COLUMN)",
                self.file,
                ", ".join(self.unread_columns)[:200],
            )
        return self.result


def _occurrences(text: str, part: str):
    """Every offset at which `part` occurs in `text`, overlapping ones included."""
    start = text.find(part)
    while start >= 0:
        yield start
        start = text.find(part, start + 1)
