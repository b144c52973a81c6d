"""The evaluation report: predictions.csv, metrics.json, report.md (with the error analysis of
koqa.eval.error_analysis), errors.csv (every answer that is not an exact match, classified), a
per-question F1 histogram, and report.html, the page to look at the answers in (koqa.eval.html_report)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from koqa.atomic import OutputFolder, atomic_path, write_json, write_text
from koqa.eval.error_analysis import analyse, report_lines
from koqa.eval.html_report import write_html_report
from koqa.eval.scoring import add_intervals, score_questions

# every file a scored evaluation writes into its --out folder, beside the answer log generations.jsonl
OUTPUTS = ("predictions.csv", "metrics.json", "report.md", "report.html", "f1_hist.png", "errors.csv")
ERROR_COLUMNS = ["id", "question", "answer", "prediction", "f1", "error", "question_type", "answer_type"]


def write_predictions_csv(path: Path, rows: Sequence[dict], with_gold: bool) -> None:
    columns = ["id", "question", "answer", "prediction", "f1", "em"] if with_gold else ["id", "question", "prediction"]
    write_rows_csv(path, rows, columns)


def write_rows_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{row[k]:.4f}" if isinstance(row.get(k), float) else row.get(k, "")) for k in columns}
            )


def write_report(
    out: Path, rows: Sequence[dict], metrics: dict, settings: dict, analysis: dict, worst: int = 15
) -> None:
    lines = [
        "# koqa eval report",
        "",
        f"- questions: {metrics['n']}",
        f"- leaderboard F1: {metrics['f1']:.4f} ({metrics['f1']:.2%}), 95% interval "
        f"[{metrics['f1_ci95'][0]:.4f}, {metrics['f1_ci95'][1]:.4f}]",
        f"- exact match: {metrics['exact_match']:.4f} ({metrics['exact_match']:.2%}), 95% interval "
        f"[{metrics['exact_match_ci95'][0]:.4f}, {metrics['exact_match_ci95'][1]:.4f}]",
        f"- token F1: {metrics['token_f1']:.4f}",
    ]
    for key, name in (("has_answer", "answerable (HasAns)"), ("no_answer", "unanswerable (NoAns)")):
        if key in metrics:  # SQuAD 2.0 data
            part = metrics[key]
            lines.append(
                f"- {name}: {part['n']} questions, leaderboard F1 {part['f1']:.4f}, "
                f"exact match {part['exact_match']:.4f}, token F1 {part['token_f1']:.4f}"
            )
    lines += ["", "## Settings", ""] + [f"- {k}: {v}" for k, v in settings.items()] + [""]
    lines += report_lines(analysis, metrics["n"])
    lines += [
        f"## The {worst} worst answers",
        "",
        "| id | question | gold | prediction | F1 |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: r["f1"])[:worst]:
        cells = [
            str(row[k]).replace("|", "\\|").replace("\n", " ")[:80] for k in ("id", "question", "answer", "prediction")
        ]
        lines.append("| " + " | ".join(cells) + f" | {row['f1']:.2f} |")
    write_text(out / "report.md", "\n".join(lines) + "\n")
    write_json(out / "metrics.json", metrics)
    write_rows_csv(out / "errors.csv", [row for row in rows if row["error"]], ERROR_COLUMNS)
    _f1_histogram([r["f1"] for r in rows], out / "f1_hist.png")


def _f1_histogram(values: Sequence[float], path: Path) -> None:
    from koqa.plots import new_figure, write_png

    fig, ax = new_figure()
    ax.hist(values, bins=20, range=(0, 1), color="#228833")
    ax.set_xlabel("leaderboard F1 per question")
    ax.set_ylabel("questions")
    write_png(fig, path)


def score_and_report(
    records: list,
    predictions: dict,
    out: Path,
    config,
    settings: dict,
    extra_metrics: dict | None = None,
    analysed=None,
) -> dict:
    """predictions.csv for {id: final answer}; with gold answers also metrics.json, report.md and
    the F1 histogram, all replacing an earlier run's as one unit. Returns the metrics ({} without
    gold answers) and the rows. `analysed`: see `koqa.eval.error_analysis.analyse`."""
    with_gold = all(r.has_gold for r in records)
    metrics, analysis = {}, {}
    if with_gold:
        rows, metrics = score_questions(records, predictions, morphemes=config.morphemes)
        add_intervals(rows, metrics)
        metrics.update(extra_metrics or {})
        analysis = analyse(records, rows, analysed)
        metrics.update(analysis)
    else:
        rows = [{"id": r.id, "question": r.question, "prediction": predictions[r.id]} for r in records]
    with OutputFolder(out, OUTPUTS) as folder:
        write_predictions_csv(folder / "predictions.csv", rows, with_gold=with_gold)
        if with_gold:
            write_report(folder, rows, metrics, settings, analysis)
            write_html_report(folder / "report.html", records, rows, metrics, settings, folder / "f1_hist.png")
    return {"metrics": metrics, "rows": rows}
