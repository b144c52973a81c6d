"""Prediction files: a CSV with id and answer (or prediction) columns, or a JSON object {id: answer}.

The same rules on every path (`koqa score`, `koqa submit`): an id is non-empty text and appears once
(a JSON key repeated in the object is refused, not overwritten); an answer is text; an empty answer,
a JSON null and the literal text NaN all read as empty, and what happens to an empty answer is the
command's to decide.
"""

from __future__ import annotations

from pathlib import Path

from koqa.data_tools.readers import load_json, read_csv_rows, read_text
from koqa.errors import KoqaError


def answer_text(value: str | None) -> str:
    """A predicted answer as text: stripped; empty for None and for the literal NaN."""
    text = (value or "").strip()
    return "" if text.lower() == "nan" else text


def read_predictions(path: str | Path, encoding: str = "auto") -> dict[str, str]:
    """{id: answer} of a prediction file."""
    return read_predictions_with_rows(path, encoding)[0]


def read_predictions_with_rows(path: str | Path, encoding: str = "auto") -> tuple[dict[str, str], dict[str, object]]:
    """`read_predictions` plus where each answer is: its CSV line number, or `id 'X'` in JSON."""
    path = Path(path)
    file = str(path)
    if path.suffix.lower() == ".json":
        doc = load_json(read_text(path, encoding), file)
        if not isinstance(doc, dict):
            raise KoqaError(f"expected a JSON object {{id: answer}}, found a {type(doc).__name__}", file=file)
        predictions: dict[str, str] = {}
        for key, value in doc.items():
            if value is not None and not isinstance(value, str):
                raise KoqaError(
                    f"the answer for id '{key[:40]}' is a JSON {type(value).__name__}, not a string",
                    file=file,
                    field="answer",
                    fix="write every answer as a string",
                )
            if not key.strip():
                raise KoqaError("an id is empty", file=file, field="id")
            predictions[key.strip()] = answer_text(value)
        return predictions, {k: f"id '{k}'" for k in predictions}
    header, rows = read_csv_rows(path, encoding, ("id",))
    column = "prediction" if "prediction" in header else "answer"
    if column not in header:
        raise KoqaError("missing column answer (or prediction)", file=file, row=1, field="answer")
    predictions, where = {}, {}
    for line_no, row in rows:
        rid = row["id"].strip()
        if not rid:
            raise KoqaError("is empty", file=file, row=line_no, field="id")
        if rid in predictions:
            raise KoqaError(f"duplicate id '{rid}' (also row {where[rid]})", file=file, row=line_no, field="id")
        predictions[rid] = answer_text(row[column])
        where[rid] = line_no
    return predictions, where
