"""Medians and 95 % intervals for the bench: a ratio of two medians gets a percentile-bootstrap interval, each side
resampled on its own (its samples come from interleaved rounds, so slow spells of a shared machine hit both)."""

from __future__ import annotations

import random
import statistics
from typing import Sequence

CONFIDENCE = 0.95
RESAMPLES = 4000


def _quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    tail = (1 - CONFIDENCE) / 2
    return ordered[int(tail * (len(ordered) - 1))], ordered[int(round((1 - tail) * (len(ordered) - 1)))]


def median_interval(values: Sequence[float], seed: int = 0) -> tuple[float, float, float] | None:
    """(median, low, high) of `values` with a bootstrap 95 % interval of the median; None without values."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    rng = random.Random(seed)
    boots = [statistics.median(rng.choices(xs, k=len(xs))) for _ in range(RESAMPLES)]
    low, high = _quantiles(boots)
    return statistics.median(xs), low, high


def ratio_interval(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float] | None:
    """(median(a) / median(b), low, high): the ratio of medians with a bootstrap 95 % interval; None when either
    side has no values (or b's median is 0)."""
    xs, ys = [v for v in a if v is not None], [v for v in b if v is not None]
    if not xs or not ys or statistics.median(ys) == 0:
        return None
    rng = random.Random(seed)
    boots = []
    for _ in range(RESAMPLES):
        den = statistics.median(rng.choices(ys, k=len(ys)))
        if den:
            boots.append(statistics.median(rng.choices(xs, k=len(xs))) / den)
    low, high = _quantiles(boots)
    return statistics.median(xs) / statistics.median(ys), low, high


def paired_mean_interval(a: Sequence[float], b: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """(mean(a - b), low, high): the mean paired difference (a[i] and b[i] measured on the same item) with a
    bootstrap 95 % interval over the items."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    boots = [statistics.mean(rng.choices(diffs, k=len(diffs))) for _ in range(RESAMPLES)]
    low, high = _quantiles(boots)
    return statistics.mean(diffs), low, high


def fmt_interval(value: tuple[float, float, float] | None, digits: int = 2) -> str:
    """'1.03 [0.97, 1.08]' (or — when there is nothing to show)."""
    if value is None:
        return "—"
    mid, low, high = value
    return f"{mid:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
