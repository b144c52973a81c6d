"""The one record type every reader produces and every stage consumes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from koqa.atomic import atomic_path


@dataclass
class QARecord:
    """One question about one context, with zero (test data) or more gold answers."""

    id: str
    context: str
    question: str
    answers: list[str] = field(default_factory=list)
    answer_starts: list[int] = field(default_factory=list)  # -1 where unknown
    source: str = ""  # file the record came from
    row: str = ""  # where in that file: CSV line number or SQuAD JSON path
    title: str = ""
    unanswerable: bool = False  # a SQuAD 2.0 question the context does not answer (its answers are empty)

    @property
    def has_gold(self) -> bool:
        """Whether the record can be scored: it has answers, or is known to have none."""
        return bool(self.answers) or self.unanswerable

    def first_answer_start(self) -> int:
        """Where the first gold answer starts in the context: its recorded offset, else found (-1: absent)."""
        return self.answer_starts[0] if self.answer_starts else self.context.find(self.answers[0])

    def to_json(self) -> dict:
        # not dataclasses.asdict, whose deep copy of every field is most of writing a large set
        return {name: _copy(getattr(self, name)) for name in FIELD_NAMES}


FIELD_NAMES = tuple(f.name for f in fields(QARecord))


def _copy(value):
    return list(value) if isinstance(value, list) else value


@dataclass
class BadRow:
    """A row a reader excluded, and why. Never dropped silently: reported and written out."""

    file: str
    row: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}: field '{self.field}': {self.reason}"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
