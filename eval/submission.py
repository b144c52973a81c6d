"""`koqa submit`: answers in `sample_submission.csv` order, written atomically."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from koqa.atomic import atomic_path
from koqa.data_tools.predictions import read_predictions_with_rows
from koqa.data_tools.readers import read_csv_rows
from koqa.errors import KoqaError
from koqa.eval.scoring import match_predictions
from koqa.settings import check, encoding_setting, setting

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

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.empty == "fill" and not (self.fill_text or "").strip():
            found.append(("fill_text", "--empty fill needs a non-empty --fill-text"))
        if self.out and any(_same_file(self.out, other) for other in (self.pred, self.sample) if other):
            found.append(("out", f"--out {self.out} is one of the input files; choose another path"))
        return found


def _same_file(a: str, b: str) -> bool:
    a_path, b_path = Path(a), Path(b)
    if a_path.exists() and b_path.exists():
        return a_path.samefile(b_path)
    return a_path.resolve() == b_path.resolve()


def submit(config: SubmitConfig) -> dict:
    """Write `config.out`: the sample submission with its answer column filled from the predictions,
    every other column, the ids and the row order as the sample has them.

    Fails on ids missing from the predictions, on predictions for ids the sample does not have
    (another test set?), on duplicates; empty answers (NaN and null included) follow `config.empty`
    and are counted.
    """
    check(config)
    header, rows = read_csv_rows(Path(config.sample), config.encoding, ("id",))
    if len(header) < 2:
        raise KoqaError("sample submission needs an id column and an answer column", file=config.sample, row=1)
    answer_column = "answer" if "answer" in header else next(h for h in header if h != "id")
    seen: dict[str, int] = {}
    for line_no, row in rows:
        rid = row["id"].strip()
        if rid in seen:
            raise KoqaError(
                f"duplicate id '{rid}' (also row {seen[rid]})", file=config.sample, row=line_no, field="id"
            )
        seen[rid] = line_no
    predictions, where = read_predictions_with_rows(config.pred, encoding=config.encoding)
    match_predictions(list(seen), predictions, pred_file=config.pred, expected_file=config.sample)
    empty_ids = [rid for rid in seen if not predictions[rid]]
    if empty_ids and config.empty == "fail":
        rid = empty_ids[0]
        raise KoqaError(
            f"empty answer for id '{rid}'",
            file=config.pred,
            row=where[rid],
            field="answer",
            fix="pass --empty keep or --empty fill --fill-text TEXT",
        )
    fill = config.fill_text if config.empty == "fill" else ""
    with atomic_path(config.out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for _, row in rows:
            row[answer_column] = predictions[row["id"].strip()] or fill
            writer.writerow([row[column] for column in header])
    return {"rows": len(rows), "empty": len(empty_ids), "empty_policy": config.empty, "empty_ids": empty_ids[:20]}
