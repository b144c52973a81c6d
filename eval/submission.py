"""The submission writer: answers in `sample_submission.csv` order, written atomically."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from koqa.atomic import atomic_path
from koqa.data_tools.readers import read_csv_rows, read_predictions_with_rows
from koqa.errors import KoqaError

EMPTY_POLICIES = ("fail", "keep", "fill")


def write_submission(pred_path: str, sample_path: str, out_path: str, *, empty: str = "fail",
                     fill_text: str = "없음", encoding: str = "utf-8") -> dict:
    """Write `out_path` with the sample's columns and id order and the predicted answers.

    Fails on ids missing from the predictions, on predictions for ids the sample does not have
    (another test set?), on duplicates; empty/NaN answers follow `empty` and are counted.
    """
    if empty not in EMPTY_POLICIES:
        raise KoqaError(f"empty must be one of {EMPTY_POLICIES}", field="empty")
    header, rows = read_csv_rows(Path(sample_path), encoding, ("id",))
    if len(header) < 2:
        raise KoqaError("sample submission needs an id column and an answer column", file=sample_path, row=1)
    answer_column = "answer" if "answer" in header else header[1]
    sample_ids: list[str] = []
    seen: dict[str, int] = {}
    for line_no, row in rows:
        rid = row["id"].strip()
        if rid in seen:
            raise KoqaError(f"duplicate id '{rid}' (also row {seen[rid]})", file=sample_path, row=line_no, field="id")
        seen[rid] = line_no
        sample_ids.append(rid)
    predictions, where = read_predictions_with_rows(pred_path, encoding=encoding)
    missing = [i for i in sample_ids if i not in predictions]
    extra = [i for i in predictions if i not in seen]
    if extra and len(extra) == len(predictions):
        raise KoqaError("no prediction id is in the sample submission: predictions for another test set?",
                        file=pred_path, field="id", fix=f"e.g. '{extra[0]}' is not in {sample_path}")
    if missing:
        raise KoqaError(f"{len(missing)} sample id(s) have no prediction, e.g. '{missing[0]}'", file=pred_path,
                        field="id", fix="run `koqa eval` on the whole test.csv")
    if extra:
        raise KoqaError(f"{len(extra)} prediction id(s) are not in the sample, e.g. '{extra[0]}'", file=pred_path,
                        field="id", fix="predictions for another test set?")
    empty_ids = []
    answers = {}
    for rid in sample_ids:
        text = predictions[rid]
        text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text).strip()
        if not text or text.lower() == "nan":
            empty_ids.append(rid)
            if empty == "fail":
                raise KoqaError(f"empty answer for id '{rid}'", file=pred_path, row=where[rid], field="answer",
                                fix="pass --empty keep or --empty fill --fill-text TEXT")
            text = fill_text if empty == "fill" else ""
        answers[rid] = text
    with atomic_path(out_path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", answer_column])
        for rid in sample_ids:
            writer.writerow([rid, answers[rid]])
    return {"rows": len(sample_ids), "empty": len(empty_ids), "empty_policy": empty, "empty_ids": empty_ids[:20]}
