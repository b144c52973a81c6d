"""Paired comparison of two evaluation runs on the same questions.

Two adapters scored on the same questions often differ by less than the standard error of either
mean, yet much of each question's difficulty is shared by both runs, so the difference of the
per-question scores has a smaller error (docs/recipe.md's ablation tables report it). This is what
an ablation table should report.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from koqa.errors import KoqaError


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    n: int
    mean: float  # mean over questions of (other - base)
    standard_error: float  # of that mean; 0 when n < 2


def read_scores(path: str | Path, metric: str) -> dict[str, float]:
    """{id: score} from a `koqa eval` predictions.csv."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if metric not in (reader.fieldnames or []):
            raise KoqaError(
                f"no '{metric}' column (is this a predictions.csv scored against gold answers?)",
                file=path,
                field=metric,
            )
        scores = {}
        for row_number, row in enumerate(reader, start=2):
            try:
                scores[row["id"]] = float(row[metric])
            except ValueError:
                raise KoqaError(f"'{row[metric]}' is not a number", file=path, row=row_number, field=metric) from None
    return scores


def paired_difference(base: dict[str, float], other: dict[str, float], metric: str = "f1") -> PairedDifference:
    """Mean and standard error of other - base over the questions both runs answered. The two runs
    must cover the same ids: a difference over different questions is not a paired one."""
    if set(base) != set(other):
        missing, extra = sorted(set(base) - set(other)), sorted(set(other) - set(base))
        raise KoqaError(
            f"the runs answered different questions ({len(missing)} only in the base run, "
            f"{len(extra)} only in the other; e.g. {(missing or extra)[:3]})",
            field=metric,
        )
    diffs = [other[i] - base[i] for i in base]
    n = len(diffs)
    if n == 0:
        raise KoqaError("no questions to compare", field=metric)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(metric, n, mean, 0.0)
    variance = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return PairedDifference(metric, n, mean, math.sqrt(variance / n))
