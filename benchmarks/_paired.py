"""Paired-by-seed statistics for benchmark tables: mean ± sd, and a difference with its 95% t-interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def describe(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for one value) of ``values``."""
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "mean": mean, "sd": sd}


def paired_difference(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> dict[str, Any]:
    """``a - b`` paired element by element (same seed), with a two-sided t-interval for its mean.

    The interval is mean ± t(level, n-1) · sd / sqrt(n): it assumes the per-seed differences are roughly
    normal, which is what a handful of seeds allows. With one pair there is no interval (None).
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired samples need the same non-zero length, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    stats = describe(diffs)
    stats["per_pair"] = diffs
    n = len(diffs)
    if n < 2:
        stats.update(ci_low=None, ci_high=None, t_critical=None)
        return stats
    from scipy.stats import t

    critical = float(t.ppf(0.5 + level / 2.0, n - 1))
    half = critical * stats["sd"] / math.sqrt(n)
    stats.update(ci_low=stats["mean"] - half, ci_high=stats["mean"] + half, t_critical=critical)
    return stats
