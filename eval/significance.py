"""The statistics koqa reports, in one place: bootstrap intervals of a mean, the paired sign-flip
permutation test, McNemar's exact test, and the paired comparison of two runs' per-question scores
built from them. Every resampling is seeded and its count recorded, so each figure is reproducible.
"""

from __future__ import annotations

import math

RESAMPLES = 2000
SEED = 0


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
