"""Resumable generation: answers are appended to a JSONL log as they are produced.

The first line fingerprints the settings that decide the answers (model, adapter, template,
lengths); a re-run with the same settings skips the ids already answered, a re-run with other
settings is refused instead of mixing answers from two configurations. Each answer line also holds a
digest of its question and passage (`questions`), so that a re-run over other questions under the
same ids is refused rather than answered with the log's answers to the old ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from koqa.errors import KoqaError


class AnswerLog:
    """The answers so far, `done` ({id: raw answer}); with `path` None they are kept in memory only
    (an evaluation during training, which has no output folder)."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: dict, questions: dict[str, str] | None = None):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint
        self.questions = questions or {}  # {id: question_digest(...)}: what each id asked when answered
        self.done: dict[str, str] = {}
        if self.path is None:
            return
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().split("\n")
            header = json.loads(lines[0])["fingerprint"]
            if not isinstance(header, dict):
                raise TypeError
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError, RecursionError):
            raise KoqaError(
                "is not a koqa answer log", file=str(self.path), fix="delete it, or choose another --out"
            ) from None
        if header != self.fingerprint:
            changed = sorted(
                k for k in set(header) | set(self.fingerprint) if header.get(k) != self.fingerprint.get(k)
            )
            raise KoqaError(
                f"holds answers made with other settings ({', '.join(changed)})",
                file=str(self.path),
                fix="use another --out, or delete the file to start over",
            )
        changed = []
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: that answer is produced again
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue  # likewise: not an answer line of this log
            qid, asked = item["id"], self.questions.get(item["id"])
            if asked is not None and item.get("question") != asked:
                changed.append(qid)
                continue
            self.done[qid] = str(item.get("prediction", ""))
        if changed:
            raise KoqaError(
                f"holds answers to other questions or passages under the same ids ({len(changed)}, e.g. "
                f"'{changed[0]}')",
                file=str(self.path),
                fix="use another --out for other data, or delete the file to start over",
            )

    def append(self, items: list[tuple[str, str]]) -> None:
        if self.path is None:
            self.done.update(items)
            return
        if not self.path.exists():  # made with the first answers: a run refused before them leaves no file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({"fingerprint": self.fingerprint}, ensure_ascii=False) + "\n")
        with open(self.path, "a", encoding="utf-8") as handle:
            for qid, prediction in items:
                line = {"id": qid, "prediction": prediction}
                if qid in self.questions:
                    line["question"] = self.questions[qid]
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                self.done[qid] = prediction
            handle.flush()
            os.fsync(handle.fileno())


def question_digest(context: str, question: str) -> str:
    """What an answer was an answer to: a digest of its passage and question."""
    return hashlib.sha256(f"{context}\x00{question}".encode()).hexdigest()[:16]
