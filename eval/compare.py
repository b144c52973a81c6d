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

from koqa.config import NON_NEGATIVE, POSITIVE, setting
from koqa.errors import KoqaError
from koqa.trackers import missing_packages, report_to_setting

RESAMPLES = 2000
SEED = 0


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
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
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
            rows[row["id"]] = {"prediction": row.get("prediction", ""), **scores}
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


def bootstrap_interval(values, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95) -> list[float]:
    """The `level` percentile interval of the mean of `values` over `resamples` bootstrap resamples."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return [0.0, 0.0]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [float(low), float(high)]


def sign_flip_p_value(diffs, resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided p-value of a paired sign-flip permutation test that the mean difference is 0."""
    import numpy as np

    diffs = np.asarray(diffs, dtype=float)
    observed = abs(diffs.mean()) if len(diffs) else 0.0
    if observed == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(resamples, len(diffs)))
    extreme = int((np.abs((signs * diffs).mean(axis=1)) >= observed - 1e-12).sum())
    return (extreme + 1) / (resamples + 1)


def mcnemar_p_value(base_only: int, other_only: int) -> float:
    """McNemar's exact two-sided test: of the questions exactly one run got right, is each run equally
    likely to be that one? (A binomial test of `base_only` against n = base_only + other_only, p = 1/2.)"""
    n = base_only + other_only
    if n == 0:
        return 1.0
    k = min(base_only, other_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare_two(base: dict[str, dict], other: dict[str, dict], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Paired statistics of `other` against `base`, both {id: {prediction, f1, em}} over the same ids."""
    ids = sorted(base)
    out: dict = {"n": len(ids)}
    for metric, name in (("f1", "f1"), ("em", "exact_match")):
        diffs = [other[i][metric] - base[i][metric] for i in ids]
        out[f"delta_{name}"] = sum(diffs) / len(diffs)
        out[f"delta_{name}_ci95"] = bootstrap_interval(diffs, resamples, seed)
        out[f"delta_{name}_p"] = sign_flip_p_value(diffs, resamples, seed)
    base_only = sum(base[i]["em"] == 1 and other[i]["em"] == 0 for i in ids)
    other_only = sum(base[i]["em"] == 0 and other[i]["em"] == 1 for i in ids)
    out["exact_match_mcnemar_p"] = mcnemar_p_value(base_only, other_only)
    out["answers_differ"] = sum(base[i]["prediction"].strip() != other[i]["prediction"].strip() for i in ids)
    out["wins"] = sum(other[i]["f1"] > base[i]["f1"] for i in ids)
    out["losses"] = sum(other[i]["f1"] < base[i]["f1"] for i in ids)
    return out


@dataclass
class CompareConfig:
    runs: list[str] = setting(
        [],
        positional=True,
        required=True,
        help="`koqa eval` folders (or their predictions.csv) over the same questions; each is compared with the first",
    )
    out: str | None = setting(help="folder for compare.json and compare.md")
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
    """`koqa compare`: every run against the first; writes compare.json and compare.md with --out."""
    from koqa.atomic import write_json, write_text
    from koqa.config import check

    check(config)
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
        result["runs"].append({"run": run, **means(table), **compare_two(base, table, config.resamples, config.seed)})
    result["markdown"] = compare_markdown(result)
    if config.out:
        write_json(Path(config.out) / "compare.json", {k: v for k, v in result.items() if k != "markdown"})
        write_text(Path(config.out) / "compare.md", result["markdown"])
    if config.report_to:
        from koqa.trackers import log_scores

        table = {Path(row["run"]).name: {k: v for k, v in row.items() if k != "run"} for row in result["runs"]}
        log_scores(config.report_to, {"base": result["base"], **table}, Path(config.out), prefix="compare")
    return result
