"""Statistics behind the tables: intervals over seeds, paired differences, interpolation on a curve, verdicts.

Pure functions over plain sequences of floats; non-finite values (NaN from a failed metric) are dropped and
show up as a smaller ``n``. One value gives no interval (``lo = hi = nan``), never "± 0".
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np


class Estimate(NamedTuple):
    mean: float  # mean over the finite values (nan when there are none)
    lo: float  # lower end of the interval (nan with fewer than two values)
    hi: float  # upper end of the interval
    n: int  # finite values used


class Difference(NamedTuple):
    mean: float  # mean difference cell - reference
    lo: float
    hi: float
    n: int  # seeds paired (or values in the cell when unpaired)
    n_sign: int  # paired seeds whose difference has the sign of the mean (-1 when unpaired)
    paired: bool  # True when paired by seed, False for Welch's unpaired difference of means


def _t_quantile(p: float, dof: float) -> float:
    from scipy import stats  # (a slow import: only when an interval is computed)

    return float(stats.t.ppf(p, dof))


def finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def t_interval(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean and two-sided Student-t interval: mean ± t_{(1+level)/2, n-1} * s / sqrt(n), s with ddof=1."""
    a = finite(values)
    n = len(a)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = float(a.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1)
    half = _t_quantile((1 + level) / 2, n - 1) * float(a.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> Estimate:
    """Mean and percentile bootstrap interval (resampling the seeds with replacement; fixed ``seed``)."""
    a = finite(values)
    n = len(a)
    if n < 2:
        return t_interval(a, level)
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(a.mean()), float(lo), float(hi), n)


INTERVALS: dict[str, Callable[..., Estimate]] = {"t": t_interval, "bootstrap": bootstrap_interval}


def interval(values: Sequence[float], kind: str = "t", level: float = 0.95) -> Estimate:
    if kind not in INTERVALS:
        raise ValueError(f"unknown interval {kind!r}; known: {', '.join(INTERVALS)}")
    return INTERVALS[kind](values, level)


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """mean(a) - mean(b) with Welch's t interval (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    a, b = finite(a), finite(b)
    if len(a) == 0 or len(b) == 0:
        return Difference(math.nan, math.nan, math.nan, 0, -1, False)
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(d, math.nan, math.nan, min(len(a), len(b)), -1, False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(d, d, d, min(len(a), len(b)), -1, False)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _t_quantile((1 + level) / 2, dof) * se
    return Difference(d, d - half, d + half, min(len(a), len(b)), -1, False)


def paired_difference(cell: Mapping[int, float], reference: Mapping[int, float], kind: str = "t",
                      level: float = 0.95) -> Difference:
    """Difference ``cell - reference``. Paired by seed over the seeds both have (finite values); the interval is
    the one of the per-seed differences. Without a common seed: Welch's unpaired interval."""
    common = sorted(s for s in set(cell) & set(reference)
                    if math.isfinite(float(cell[s])) and math.isfinite(float(reference[s])))
    if not common:
        return welch_difference(list(cell.values()), list(reference.values()), level)
    d = np.array([float(cell[s]) - float(reference[s]) for s in common])
    est = interval(d, kind, level)
    n_sign = int((np.sign(d) == np.sign(est.mean)).sum()) if est.mean != 0 else 0
    return Difference(est.mean, est.lo, est.hi, est.n, n_sign, True)


def interpolate_at(x: Sequence[float], y: Sequence[float], level: float) -> float:
    """``y`` where the curve ``x`` (in iteration order) first reaches ``level``, linearly interpolated between the
    two evaluations around the crossing; nan when the curve never reaches it (no extrapolation). Points with a
    non-finite x or y are skipped."""
    pts = [(float(a), float(b)) for a, b in zip(x, y)
           if a is not None and b is not None and math.isfinite(float(a)) and math.isfinite(float(b))]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 == level:
            return y0
        if (x0 - level) * (x1 - level) < 0:
            return y0 + (level - x0) * (y1 - y0) / (x1 - x0)
    if pts and pts[-1][0] == level:
        return pts[-1][1]
    return math.nan


def verdict(lo: float, hi: float, expected_sign: int = 1) -> str:
    """"holds" when the interval lies on the expected side of zero, "fails" when it lies on the other side,
    "undecided" when it includes zero or is missing (one seed)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undecided"
    if lo > 0 or hi < 0:
        return "holds" if (lo > 0) == (expected_sign > 0) else "fails"
    return "undecided"


# -- tests for pre-registered (confirmatory) claims -----------------------------------------------------------------
class PairedTest(NamedTuple):
    mean: float  # mean of the per-seed differences
    se: float  # standard error s / sqrt(n) (s with ddof=1)
    n: int  # finite differences
    p_diff: float  # two-sided p of the paired t test of mean = 0
    p_equiv: float  # TOST p within (-margin, +margin): max of the two one-sided p (nan without a margin)


def _t_sf(x: float, dof: float) -> float:
    from scipy import stats

    return float(stats.t.sf(x, dof))


def tost(values: Sequence[float], margin: float | None = None) -> PairedTest:
    """Paired t test of mean 0 (two-sided) and the two one-sided tests (TOST) of equivalence within ``margin``.

    With t_lo = (mean + margin) / se and t_hi = (mean - margin) / se on n - 1 degrees of freedom, TOST's p is
    max(P(T >= t_lo), P(T <= t_hi)): below alpha exactly when the 1 - 2 alpha t interval lies inside
    (-margin, +margin). Fewer than two values, or zero spread, give nan p-values (nothing can be concluded)."""
    a = finite(values)
    n = len(a)
    if n < 2:
        return PairedTest(float(a.mean()) if n else math.nan, math.nan, n, math.nan, math.nan)
    mean, se = float(a.mean()), float(a.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return PairedTest(mean, 0.0, n, math.nan, math.nan)
    dof = n - 1
    p_diff = 2 * _t_sf(abs(mean) / se, dof)
    if margin is None:
        return PairedTest(mean, se, n, p_diff, math.nan)
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    p_lower = _t_sf((mean + margin) / se, dof)  # H0: mean <= -margin
    p_upper = _t_sf((margin - mean) / se, dof)  # H0: mean >= +margin
    return PairedTest(mean, se, n, p_diff, max(p_lower, p_upper))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sort ascending, p_(j) * (m - j + 1) for j = 1..m, running maximum,
    capped at 1. A nan p (no test) is left nan and does not count in m."""
    p = [float(x) for x in p_values]
    idx = sorted((i for i in range(len(p)) if math.isfinite(p[i])), key=lambda i: p[i])
    m, out, running = len(idx), [math.nan] * len(p), 0.0
    for j, i in enumerate(idx):
        running = max(running, min(1.0, (m - j) * p[i]))
        out[i] = running
    return out


def holm_levels(p_values: Sequence[float], alpha: float = 0.05) -> list[float]:
    """The significance level at which Holm's procedure tests each hypothesis: alpha / (m - j + 1) at step j for
    the hypotheses it rejects, and the level of the step where it stops for every other one. A two-sided
    1 - level interval then excludes 0 exactly when Holm rejects (not a simultaneous coverage guarantee).
    nan for a nan p."""
    p = [float(x) for x in p_values]
    idx = sorted((i for i in range(len(p)) if math.isfinite(p[i])), key=lambda i: p[i])
    m, out = len(idx), [math.nan] * len(p)
    stop = None
    for j, i in enumerate(idx):
        level = alpha / (m - j)
        if stop is None and p[i] > level:
            stop = level
        out[i] = level if stop is None else stop
    return out


def t_interval_at(mean: float, se: float, n: int, level: float) -> tuple[float, float]:
    """mean ± t_{(1+level)/2, n-1} * se (nan ends with fewer than two values or a nan level)."""
    if n < 2 or not math.isfinite(se) or not math.isfinite(level):
        return math.nan, math.nan
    half = _t_quantile((1 + level) / 2, n - 1) * se
    return mean - half, mean + half


def confirmatory_verdict(p_diff_adj: float, p_equiv_adj: float, mean: float, expected_sign: int,
                         alpha: float) -> str:
    """"holds" / "fails" when the adjusted difference test rejects (by the side of the mean), else "equivalent"
    when the adjusted TOST rejects, else "undecided"."""
    if math.isfinite(p_diff_adj) and p_diff_adj < alpha:
        return "holds" if (mean > 0) == (expected_sign > 0) else "fails"
    if math.isfinite(p_equiv_adj) and p_equiv_adj < alpha:
        return "equivalent"
    return "undecided"
