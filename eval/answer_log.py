"""Resumable generation: answers are appended to a JSONL log as they are produced.

The first line fingerprints the settings that decide the answers (model, adapter, template,
lengths); a re-run with the same settings skips the ids already answered, a re-run with other
settings is refused instead of mixing answers from two configurations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from koqa.errors import KoqaError


class AnswerLog:
    def __init__(self, path: str | os.PathLike, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.done: dict[str, str] = {}
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.write(json.dumps({"fingerprint": fingerprint}, ensure_ascii=False) + "\n")

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        try:
            header = json.loads(lines[0])["fingerprint"]
        except (json.JSONDecodeError, KeyError, IndexError):
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
        for line in lines[1:]:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash: that answer is produced again
            self.done[item["id"]] = item["prediction"]

    def append(self, items: list[tuple[str, str]]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            for qid, prediction in items:
                handle.write(json.dumps({"id": qid, "prediction": prediction}, ensure_ascii=False) + "\n")
                self.done[qid] = prediction
            handle.flush()
            os.fsync(handle.fileno())
