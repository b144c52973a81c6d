"""`koqa submit`: answers in `sample_submission.csv` order, written atomically."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from koqa.atomic import atomic_path
from koqa.config import encoding_setting, setting
from koqa.data_tools.readers import read_csv_rows, read_predictions_with_rows
from koqa.errors import KoqaError
from koqa.eval.scoring import match_predictions

EMPTY_POLICIES = ("fail", "keep", "fill")


@dataclass
class SubmitConfig:
    pred: str | None = setting(help="predictions.csv from koqa eval (or id,answer CSV)", required=True)
    sample: str | None = setting(help="the contest's sample_submission.csv", required=True)
    out: str | None = setting(help="submission CSV to write", required=True)
    empty: str = setting(
        "fail",
        choices=EMPTY_POLICIES,
        help="what to do with empty answers: fail, keep them empty (reported), or fill with --fill-text",
    )
    fill_text: str = setting("없음", help="text for empty answers with --empty fill")
    encoding: str = encoding_setting()


def submit(config: SubmitConfig) -> dict:
    """Write `config.out` with the sample's id order and the predicted answers.

    Fails on ids missing from the predictions, on predictions for ids the sample does not have
    (another test set?), on duplicates; empty/NaN answers follow `config.empty` and are counted.
    """
    header, rows = read_csv_rows(Path(config.sample), config.encoding, ("id",))
    if len(header) < 2:
        raise KoqaError("sample submission needs an id column and an answer column", file=config.sample, row=1)
    answer_column = "answer" if "answer" in header else header[1]
    sample_ids: list[str] = []
    seen: dict[str, int] = {}
    for line_no, row in rows:
        rid = row["id"].strip()
        if rid in seen:
            raise KoqaError(
                f"duplicate id '{rid}' (also row {seen[rid]})", file=config.sample, row=line_no, field="id"
            )
        seen[rid] = line_no
        sample_ids.append(rid)
    predictions, where = read_predictions_with_rows(config.pred, encoding=config.encoding)
    match_predictions(sample_ids, predictions, pred_file=config.pred, expected_file=config.sample)
    empty_ids = []
    answers = {}
    for rid in sample_ids:
        text = predictions[rid]
        text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text).strip()
        if not text or text.lower() == "nan":
            empty_ids.append(rid)
            if config.empty == "fail":
                raise KoqaError(
                    f"empty answer for id '{rid}'",
                    file=config.pred,
                    row=where[rid],
                    field="answer",
                    fix="pass --empty keep or --empty fill --fill-text TEXT",
                )
            text = config.fill_text if config.empty == "fill" else ""
        answers[rid] = text
    with atomic_path(config.out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", answer_column])
        for rid in sample_ids:
            writer.writerow([rid, answers[rid]])
    return {
        "rows": len(sample_ids),
        "empty": len(empty_ids),
        "empty_policy": config.empty,
        "empty_ids": empty_ids[:20],
    }
