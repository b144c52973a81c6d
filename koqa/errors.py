"""The one error type the CLI prints as a single line, without a traceback."""

from __future__ import annotations


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
        super().__init__(text)
