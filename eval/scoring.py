"""Scoring in one place: matching predictions to questions by id, and per-question scores.

`koqa eval`, `koqa score` and `koqa submit` all go through `match_predictions`, so that a prediction
file for another test set, a missing answer or an unknown id is met with the same words everywhere;
`score_questions` gives every question its leaderboard F1, exact match and token F1 (koqa.eval.metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from koqa.errors import KoqaError
from koqa.eval.metrics import score_one
from koqa.settings import columns_setting, encoding_setting, setting

METRICS = ("f1", "exact_match", "token_f1")


@dataclass
class Matched:
    missing: list[str]  # expected ids without a prediction
    unknown: list[str]  # predicted ids that are not expected


def match_predictions(
    expected: Sequence[str],
    predictions: Mapping[str, object],
    *,
    pred_file: str,
    expected_file: str,
    allow_missing: bool = False,
    allow_unknown: bool = False,
) -> Matched:
    """Check the predictions' ids against the expected ones. Predictions of which no id is expected
    are always refused (another test set); missing and unknown ids are refused unless allowed."""
    name = Path(expected_file).name
    wanted = set(expected)
    unknown = [i for i in predictions if i not in wanted]
    missing = [i for i in expected if i not in predictions]
    if predictions and len(unknown) == len(predictions):
        raise KoqaError(
            f"no prediction id is in {name}: predictions for another test set?",
            file=pred_file,
            field="id",
            fix=f"e.g. '{unknown[0]}' is not there",
        )
    if not predictions:
        raise KoqaError("holds no predictions", file=pred_file, field="id")
    if missing and not allow_missing:
        raise KoqaError(
            f"{len(missing)} id(s) of {name} have no prediction, e.g. '{missing[0]}'",
            file=pred_file,
            field="id",
            fix="run `koqa eval` on the whole file",
        )
    if unknown and not allow_unknown:
        raise KoqaError(
            f"{len(unknown)} prediction id(s) are not in {name}, e.g. '{unknown[0]}'",
            file=pred_file,
            field="id",
            fix="predictions for another test set?",
        )
    return Matched(missing, unknown)


def add_intervals(rows: Sequence[dict], metrics: dict) -> dict:
    """95% bootstrap intervals of the mean F1 and EM over the questions, seeded, the resamples recorded."""
    from koqa.eval.significance import RESAMPLES, SEED, bootstrap_interval

    metrics["f1_ci95"] = bootstrap_interval([row["f1"] for row in rows], RESAMPLES, SEED)
    metrics["exact_match_ci95"] = bootstrap_interval([row["em"] for row in rows], RESAMPLES, SEED)
    metrics["bootstrap"] = {"resamples": RESAMPLES, "seed": SEED}
    return metrics


def score_questions(
    records: Sequence, predictions: Mapping[str, str], *, morphemes: bool = False
) -> tuple[list[dict], dict]:
    """(one row per question: id, question, prediction, gold answers and its scores; the means over
    every question). A question without a prediction scores 0."""
    rows, totals, each = [], dict.fromkeys(METRICS, 0.0), []
    for r in records:
        prediction = predictions.get(r.id)
        row = {"id": r.id, "question": r.question, "prediction": prediction or "", "answer": " | ".join(r.answers)}
        scores = (
            score_one(prediction, r.answers, morphemes=morphemes)
            if prediction is not None
            else dict.fromkeys(METRICS, 0.0)
        )
        row.update(f1=scores["f1"], em=scores["exact_match"])
        each.append(scores)
        for key in METRICS:
            totals[key] += scores[key]
        rows.append(row)
    n = len(rows)
    means = {key: (totals[key] / n if n else 0.0) for key in METRICS}
    means["n"] = n
    if any(r.unanswerable for r in records):  # SQuAD 2.0: answerable and unanswerable questions apart
        for name, wanted in (("has_answer", False), ("no_answer", True)):
            part = [scores for scores, r in zip(each, records) if r.unanswerable == wanted]
            means[name] = {"n": len(part)} | {
                key: (sum(scores[key] for scores in part) / len(part) if part else 0.0) for key in METRICS
            }
    return rows, means


@dataclass
class ScoreConfig:
    gold: str | None = setting(help="questions with answers, in any input form koqa reads", required=True)
    pred: str | None = setting(help="CSV id,answer (or id,prediction) or JSON {id: answer}", required=True)
    out: str | None = setting(help="folder for metrics.json")
    morphemes: bool = setting(False, help="token F1 over kiwipiepy morphemes")
    encoding: str = encoding_setting()
    columns: list[str] = columns_setting()


def score(config: ScoreConfig) -> dict:
    """`koqa score`: the metrics of existing predictions against gold answers (metrics.json with --out)."""
    from koqa.data_tools.predictions import read_predictions
    from koqa.data_tools.readers import read_records

    if config.out:
        from koqa.outputs import check_out

        check_out(config.out, [("--gold", config.gold), ("--pred", config.pred)], command="score")
    gold = read_records(config.gold, encoding=config.encoding, check_span=False, columns=config.columns)
    if not gold.has_answers:
        raise KoqaError("has no gold answers", file=config.gold, fix="pass a train.csv-style file or SQuAD JSON")
    predictions = read_predictions(config.pred, encoding=config.encoding)
    matched = match_predictions(
        [r.id for r in gold.records],
        predictions,
        pred_file=config.pred,
        expected_file=config.gold,
        allow_missing=True,
        allow_unknown=True,
    )
    rows, metrics = score_questions(gold.records, predictions, morphemes=config.morphemes)
    add_intervals(rows, metrics)
    metrics.update(answered=len(gold.records) - len(matched.missing), unknown_ids=len(matched.unknown))
    if config.out:
        write_scored_folder(Path(config.out), gold.records, rows, metrics, {"gold": config.gold, "pred": config.pred})
    return metrics


def write_scored_folder(out: Path, records: list, rows: list[dict], metrics: dict, settings: dict) -> None:
    """metrics.json and report.html (with the error analysis) of `koqa score --out`, replaced as one unit."""
    from koqa.atomic import OutputFolder, write_json
    from koqa.eval.error_analysis import analyse
    from koqa.eval.html_report import write_html_report

    metrics.update(analyse(records, rows))
    with OutputFolder(out, ("metrics.json", "report.html")) as folder:
        write_json(folder / "metrics.json", metrics)
        write_html_report(folder / "report.html", records, rows, metrics, settings, None)
