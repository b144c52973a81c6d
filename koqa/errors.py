"""The one error type the CLI prints as a single line, without a traceback, and the one redaction
that every message koqa prints or logs goes through."""

from __future__ import annotations

import re

# Strings shaped like an access token: Hugging Face (hf_...), OpenAI-style API keys (sk-...) and
# GitHub tokens (ghp_..., gho_...). Anywhere in a string: a letter before the prefix hides nothing.
SECRET_SHAPE = re.compile(r"hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with every token-shaped part replaced by [redacted]."""
    return SECRET_SHAPE.sub(REDACTED, text)


class KoqaError(Exception):
    """A problem the user can fix: bad input, a bad setting, a missing file.

    The message names where the problem is (file, row or id, field) and, when known,
    what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: object = None,
        field: str | None = None,
        fix: str | None = None,
    ):
        file, field = (redact(str(v)) if v is not None else None for v in (file, field))
        self.file, self.row, self.field, self.fix = file, row, field, fix
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        text = ": ".join([*where, message])
        if fix:
            text += f" ({fix})"
        super().__init__(redact(text))
