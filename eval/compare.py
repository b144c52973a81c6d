"""`koqa compare`: evaluation runs on the same questions, each against the first, with paired statistics.

Two adapters scored on the same questions often differ by less than the standard error of either
mean, yet much of each question's difficulty is shared by both runs, so the difference of the
per-question scores has a much smaller error. For each run against the first this reports:
ΔF1 and ΔEM with a paired bootstrap 95% interval (questions resampled with replacement, the same
resamples for both runs), a paired sign-flip permutation p-value for each, McNemar's exact test for
EM, the questions whose answers differ, and how many each run wins. Every resampling is seeded and
the number of resamples is recorded, so a comparison is reproducible.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from koqa.errors import KoqaError
from koqa.eval.significance import RESAMPLES, SEED, compare_two
from koqa.settings import NON_NEGATIVE, POSITIVE, setting
from koqa.trackers import missing_packages, report_to_setting


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    n: int
    mean: float  # mean over questions of (other - base)
    standard_error: float  # of that mean; 0 when n < 2


def read_scores(path: str | Path, metric: str) -> dict[str, float]:
    """{id: score} from a `koqa eval` predictions.csv."""
    return {qid: row[metric] for qid, row in read_scored_rows(path, (metric,)).items()}


def read_scored_rows(path: str | Path, metrics: tuple[str, ...] = ("f1", "em")) -> dict[str, dict]:
    """{id: {prediction, metric: score...}} from a scored `koqa eval` predictions.csv (or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "predictions.csv"
    if not path.is_file():
        raise KoqaError("no predictions.csv here (pass a `koqa eval` folder or its predictions.csv)", file=str(path))
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return _scored_rows(csv.DictReader(handle), path, metrics)
    except (UnicodeDecodeError, csv.Error) as exc:
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"not a CSV file ({exc})"
        raise KoqaError(f"is {reason}: a predictions.csv written by koqa eval is UTF-8 CSV", file=str(path)) from None


def _scored_rows(reader: csv.DictReader, path: Path, metrics: tuple[str, ...]) -> dict[str, dict]:
    missing = [m for m in ("id", *metrics) if m not in (reader.fieldnames or [])]
    if missing:
        raise KoqaError(
            f"no '{missing[0]}' column (is this a predictions.csv scored against gold answers?)",
            file=str(path),
            field=missing[0],
        )
    rows: dict[str, dict] = {}
    for row_number, row in enumerate(reader, start=2):
        if row["id"] in rows:
            raise KoqaError(f"duplicate id '{row['id']}'", file=str(path), row=row_number, field="id")
        scores = {}
        for metric in metrics:
            try:
                scores[metric] = float(row[metric])
            except (TypeError, ValueError):
                raise KoqaError(
                    f"'{row[metric]}' is not a number", file=str(path), row=row_number, field=metric
                ) from None
            if not 0 <= scores[metric] <= 1:
                raise KoqaError(
                    f"{scores[metric]} is not a score in [0, 1]", file=str(path), row=row_number, field=metric
                )
        rows[row["id"]] = {"prediction": row.get("prediction", ""), "question": row.get("question"), **scores}
    return rows


def _same_questions(base: dict, other: dict, base_name: str, other_name: str) -> None:
    if set(base) != set(other):
        only_base, only_other = sorted(set(base) - set(other)), sorted(set(other) - set(base))
        example = (only_base or only_other)[:3]
        raise KoqaError(
            f"{base_name} and {other_name} answered different questions ({len(only_base)} only in the "
            f"first, {len(only_other)} only in the second; e.g. {example})",
            field="runs",
            fix="compare runs evaluated on the same data and --limit",
        )


def _same_question_texts(base: dict, other: dict, base_name: str, other_name: str) -> None:
    """Two scored runs over the same ids ask the same questions there (where their files name them)."""
    asked_otherwise = [
        i
        for i in base
        if base[i].get("question") is not None and other[i].get("question") not in (None, base[i]["question"])
    ]
    if asked_otherwise:
        raise KoqaError(
            f"{base_name} and {other_name} asked other questions under the same ids ({len(asked_otherwise)}, "
            f"e.g. '{asked_otherwise[0]}'): their scores are not paired",
            field="runs",
            fix="compare runs evaluated on the same data",
        )


def paired_difference(base: dict[str, float], other: dict[str, float], metric: str = "f1") -> PairedDifference:
    """Mean and standard error of other - base over the questions both runs answered. The two runs
    must cover the same ids: a difference over different questions is not a paired one."""
    _same_questions(base, other, "the base run", "the other run")
    diffs = [other[i] - base[i] for i in base]
    n = len(diffs)
    if n == 0:
        raise KoqaError("no questions to compare", field=metric)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(metric, n, mean, 0.0)
    variance = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return PairedDifference(metric, n, mean, math.sqrt(variance / n))


@dataclass
class CompareConfig:
    runs: list[str] = setting(
        [],
        positional=True,
        required=True,
        help="`koqa eval` folders (or their predictions.csv) over the same questions; each is compared with the first",
    )
    out: str | None = setting(help="folder for compare.json, compare.md and compare.html")
    resamples: int = setting(RESAMPLES, help="bootstrap and permutation resamples", check=POSITIVE)
    seed: int = setting(SEED, help="seed of the resampling", check=NON_NEGATIVE)

    report_to: list[str] = report_to_setting("the differences and their intervals (a run in --out)")

    def problems(self) -> list[tuple[str, str]]:
        found = missing_packages(self.report_to)
        if self.report_to and not self.out:
            found.append(("report_to", "a tracker run is kept in --out: pass --out"))
        return found + ([] if len(self.runs) >= 2 else [("runs", "compare needs two runs or more")])


def _fmt(value: float) -> str:
    return f"{value:+.4f}"


def compare_markdown(result: dict) -> str:
    lines = [
        f"Each run against `{result['base']['run']}` (F1 {result['base']['f1']:.4f}, EM "
        f"{result['base']['exact_match']:.4f}) on {result['n']} questions; 95% intervals from {result['resamples']} "
        f"paired bootstrap resamples (seed {result['seed']}).",
        "",
        "| run | F1 | ΔF1 [95% CI] | p | EM | ΔEM [95% CI] | p | McNemar p | answers differ | wins / losses |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["runs"]:
        f1_low, f1_high = row["delta_f1_ci95"]
        em_low, em_high = row["delta_exact_match_ci95"]
        lines.append(
            f"| {row['run']} | {row['f1']:.4f} | {_fmt(row['delta_f1'])} [{_fmt(f1_low)}, {_fmt(f1_high)}] | "
            f"{row['delta_f1_p']:.3g} | {row['exact_match']:.4f} | {_fmt(row['delta_exact_match'])} "
            f"[{_fmt(em_low)}, {_fmt(em_high)}] | {row['delta_exact_match_p']:.3g} | "
            f"{row['exact_match_mcnemar_p']:.3g} | {row['answers_differ']} | {row['wins']} / {row['losses']} |"
        )
    return "\n".join(lines) + "\n"


def compare(config: CompareConfig) -> dict:
    """`koqa compare`: every run against the first; writes compare.json, compare.md and compare.html (the
    questions whose answers differ, in their passages) with --out."""
    from koqa.atomic import write_json, write_text
    from koqa.settings import check

    check(config)
    if config.out:
        from koqa.outputs import check_out

        check_out(config.out, [("run", run) for run in config.runs], command="compare")
    tables = [read_scored_rows(run) for run in config.runs]
    base = tables[0]
    if not base:
        raise KoqaError("holds no scored questions", file=config.runs[0])

    def means(table):
        return {
            "f1": sum(r["f1"] for r in table.values()) / len(table),
            "exact_match": sum(r["em"] for r in table.values()) / len(table),
        }

    result = {
        "n": len(base),
        "resamples": config.resamples,
        "seed": config.seed,
        "base": {"run": config.runs[0], **means(base)},
        "runs": [],
    }
    for run, table in zip(config.runs[1:], tables[1:]):
        _same_questions(base, table, config.runs[0], run)
        _same_question_texts(base, table, config.runs[0], run)
        result["runs"].append({"run": run, **means(table), **compare_two(base, table, config.resamples, config.seed)})
    result["markdown"] = compare_markdown(result)
    if config.out:
        from koqa.eval.html_report import compare_page, read_page_data, render

        write_json(Path(config.out) / "compare.json", {k: v for k, v in result.items() if k != "markdown"})
        write_text(Path(config.out) / "compare.md", result["markdown"])
        first = Path(config.runs[0])
        base_page = read_page_data((first if first.is_dir() else first.parent) / "report.html")
        write_text(Path(config.out) / "compare.html", render(compare_page(result, config.runs, tables, base_page)))
    if config.report_to:
        from koqa.trackers import log_scores

        table = {Path(row["run"]).name: {k: v for k, v in row.items() if k != "run"} for row in result["runs"]}
        log_scores(config.report_to, {"base": result["base"], **table}, Path(config.out), prefix="compare")
    return result
