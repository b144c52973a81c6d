"""Rows of named fields (a JSONL line, a parquet/Arrow/`datasets` row, a CSV row) turned into records.

koqa's names are id, context, question, answers, title and is_impossible; `--columns` maps them to a
source's own (`id=guid,context=passage`). Answers come in every form QA sets use: a list of strings,
SQuAD's list of {text, answer_start}, `datasets`' {text: [...], answer_start: [...]}, or one string.
"""

from __future__ import annotations

import json

from koqa.data_tools.validation import ReadResult, RecordChecker
from koqa.errors import KoqaError


def parse_answer_field(value: str) -> list[str]:
    """An answer cell is plain text, or a JSON list of strings ("['a', 'b']" is parsed, never eval'd)."""
    text = value.strip()
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        for candidate in (text, text.replace("'", '"')):
            try:
                parsed = json.loads(candidate)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(parsed, list) and parsed and all(isinstance(a, str) for a in parsed):
                return parsed
    return [value]


FIELDS = ("id", "context", "question", "answers", "title", "is_impossible")


def parse_columns(items: list[str] | dict | None) -> dict[str, str]:
    """``["id=guid", "context=passage"]`` (or that dict) → {koqa field: column}, checked."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else (item.partition("=")[::2] for item in items)
    mapping = {}
    for field_name, column in pairs:
        field_name, column = str(field_name).strip(), str(column).strip()
        if field_name not in FIELDS or not column:
            raise KoqaError(
                f"--columns takes FIELD=COLUMN pairs, FIELD one of {', '.join(FIELDS)}; got '{field_name}={column}'",
                field="columns",
            )
        mapping[field_name] = column
    # each column feeds one field: the mapped ones, and the others under their own names
    feeds: dict[str, list[str]] = {}
    for f in FIELDS:
        own = ("answers", "answer") if f == "answers" else (f,)
        for column in (mapping[f],) if f in mapping else own:
            feeds.setdefault(column, []).append(f)
    for f, column in mapping.items():
        if len(feeds[column]) > 1:
            other = next(g for g in feeds[column] if g != f)
            raise KoqaError(
                f"--columns gives column '{column}' to {f} and to {other}: one column feeds one field",
                field="columns",
                fix=f"map {other} to another column too" if other not in mapping else "name each column once",
            )
    return mapping


def _answers_value(value: object, plain_text: bool) -> tuple[object, object]:
    """(answer texts, answer starts) of an answers cell in any of the forms datasets use: a list of
    strings, SQuAD's list of {text, answer_start}, the `datasets` form {text: [...], answer_start: [...]},
    or, with `plain_text` (a column other than `answers`), one string (a JSON list in a string is parsed).
    Anything else is returned as is, for the checker to name."""
    if isinstance(value, str) and plain_text:
        return parse_answer_field(value), None
    if isinstance(value, dict) and "text" in value:
        return value["text"], value.get("answer_start")
    if isinstance(value, list) and value and all(isinstance(a, dict) for a in value):
        return [a.get("text") for a in value], [a.get("answer_start") for a in value]
    return value, None


def add_rows(checker: RecordChecker, rows, columns: dict[str, str] | None = None) -> ReadResult:
    """Records of ``(row label, {column: value})`` pairs (JSONL lines, parquet/Arrow/`datasets` rows):
    columns named as koqa names them, or as `columns` maps them; a Dacon-style `answer` column is read
    where there is no `answers`."""
    columns = columns or {}
    name = {f: columns.get(f, f) for f in FIELDS}
    missing_checked = False
    for row, item in rows:
        if not isinstance(item, dict):
            checker.bad(row, "row", f"is a JSON {type(item).__name__}, not an object")
            continue
        if not missing_checked:
            absent = [f"{c} (for {f})" for f, c in columns.items() if c not in item]
            if absent:
                raise KoqaError(
                    f"has no column {', '.join(absent)} (its columns: {', '.join(map(str, item))[:200]})",
                    file=checker.file,
                    field="columns",
                    fix="name existing columns in --columns FIELD=COLUMN",
                )
            missing_checked = True
            known = {*name.values(), "answer", "answer_starts", "unanswerable"}
            checker.unread_columns = [str(c) for c in item if c not in known]
        answers_column = name["answers"] if name["answers"] in item or "answers" in columns else "answer"
        answers, starts = _answers_value(item.get(answers_column, []), plain_text=answers_column != "answers")
        title = item.get(name["title"])
        # SQuAD 2.0 and KLUE-MRC say `is_impossible`; koqa's own JSONL says `unanswerable`
        unanswerable = item.get(name["is_impossible"], item.get("unanswerable", False))
        checker.add(
            row,
            id=item.get(name["id"]),
            context=item.get(name["context"]),
            question=item.get(name["question"]),
            answers=answers,
            answer_starts=item.get("answer_starts", starts),
            title=title if isinstance(title, str) else "",
            answers_field=answers_column,
            unanswerable=unanswerable,
        )
    return checker.finish()
