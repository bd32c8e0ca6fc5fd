"""How many seeds a claim needs, from the spread of its per-seed effect in a (pilot) study.

A claim's effect is a mean over seeds of per-seed differences (``analysis.tables.pair_seed_effects``), so with SD
``s`` of those differences and ``n`` seeds:

- the two-sided ``1 - alpha`` Student-t interval has half-width t_{1 - alpha/2, n-1} * s / sqrt(n);
  ``seeds_for_half_width`` is the smallest ``n`` that brings it to ``h`` (at the pilot's SD);
- the paired t test of 0 at two-sided ``alpha`` detects a true effect ``delta`` with probability
  P(|T'| > t_{1 - alpha/2, n-1}), T' noncentral t with n - 1 degrees of freedom and noncentrality
  delta / s * sqrt(n); ``seeds_for_power`` is the smallest ``n`` with that power.

With a family of ``m`` tests under Holm's correction the first step is tested at alpha / m, so sizing at alpha / m
is the conservative choice (``--family``).

    python -m analysis.power toy [--half-width 0.03] [--power 0.8] [--delta 0.05] [--alpha 0.05] [--family 4]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

N_MAX = 10_000  # search limit for the seed counts


class BeyondSearch(ValueError):
    """More than ``N_MAX`` seeds would be needed."""


def _check(sd: float, what: float, name: str) -> None:
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"SD must be a finite number >= 0, got {sd}")
    if not (math.isfinite(what) and what > 0):
        raise ValueError(f"{name} must be > 0, got {what}")


def half_width(sd: float, n: int, alpha: float = 0.05) -> float:
    """Half-width of the two-sided 1 - alpha t interval of a mean of ``n`` values with SD ``sd``."""
    from scipy import stats

    return float(stats.t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)


def seeds_for_half_width(sd: float, h: float, alpha: float = 0.05) -> int:
    """Smallest n >= 2 with ``half_width(sd, n, alpha) <= h``."""
    _check(sd, h, "half-width")
    for n in range(2, N_MAX + 1):
        if half_width(sd, n, alpha) <= h:
            return n
    raise BeyondSearch(f"more than {N_MAX} seeds needed for half-width {h} at SD {sd}")


def paired_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test at level ``alpha`` with ``n`` pairs when the true mean is ``delta``."""
    from scipy import stats

    if n < 2:
        return math.nan
    if sd == 0:
        return 1.0 if delta != 0 else alpha
    dof, ncp = n - 1, delta / sd * math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, dof))
    return float(stats.nct.sf(crit, dof, ncp) + stats.nct.cdf(-crit, dof, ncp))


def seeds_for_power(delta: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Smallest n >= 2 whose ``paired_power`` reaches ``power``."""
    _check(sd, abs(delta), "effect to detect (delta)")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    for n in range(2, N_MAX + 1):
        if paired_power(delta, sd, n, alpha) >= power:
            return n
    raise BeyondSearch(f"more than {N_MAX} seeds needed for power {power} at delta {delta}, SD {sd}")


def _seeds_or_inf(fn, *args) -> float:
    """``fn(*args)``, or inf when more than ``N_MAX`` seeds would be needed (a table row, not a crash: a metric on
    another scale, e.g. FD against a half-width meant for accuracies, needs that many)."""
    try:
        return fn(*args)
    except BeyondSearch:
        return math.inf


def power_table(name: str | Path, root: str | Path | None = None, h: float = 0.03, delta: float = 0.05,
                power: float = 0.8, alpha: float = 0.05, family: int = 1) -> pd.DataFrame:
    """One row per (claim, reward, reference) of the study: the pair's levels, the per-seed effects' n, mean and
    SD, and the seeds needed for half-width ``h`` and for ``power`` against ``delta`` at alpha / family."""
    from analysis.tables import pair_seed_effects, pairwise_levels
    from vipo.study import load_study, study_frame, study_root

    spec = load_study(name)
    root = study_root(spec, Path(root) if root else None)
    a = alpha / family
    rows = []
    for claim in spec.get("claims") or []:
        part = next((p for p in spec["parts"] if p["ablation"] == claim["ablation"]), None)
        if part is None:
            continue
        refs = claim["reference"] if isinstance(claim["reference"], list) else [claim["reference"]]
        for reward in part.get("rewards") or list(spec["rewards"]):
            df = study_frame(root, reward, claim["ablation"])
            for ref in refs:
                levels = pairwise_levels(df, claim["cell"], ref) if len(df) else []
                eff = pair_seed_effects(df, claim["metric"], claim["cell"], ref, levels) if levels else {}
                v = np.array(list(eff.values()), dtype=float)
                sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
                ok = math.isfinite(sd)
                rows.append({"claim": claim["claim"], "reward": reward, "pair": f"{claim['cell']} vs {ref}",
                             "metric": claim["metric"], "levels": ", ".join(f"{x:g}" for x in levels),
                             "n": len(v), "mean": float(v.mean()) if len(v) else math.nan, "sd": sd,
                             "seeds_half_width": _seeds_or_inf(seeds_for_half_width, sd, h, a) if ok else None,
                             "seeds_power": _seeds_or_inf(seeds_for_power, delta, sd, power, a) if ok else None})
    return pd.DataFrame(rows)


def power_markdown(t: pd.DataFrame, h: float, delta: float, power: float, alpha: float, family: int) -> str:
    a = alpha / family
    lines = [f"Per-seed effect = cell - reference at matched reward (mean over the pair's levels); SD over seeds "
             f"(ddof 1). Seeds for a {100 * (1 - a):g}% t interval of half-width {h:g}, and for power {power:g} "
             f"to detect {delta:g} (two-sided paired t, alpha {a:g} = {alpha:g} / {family}), at that SD; half-width "
             f"and effect are in each row's metric units (> {N_MAX}: beyond the search).", "",
             "| claim | reward | pair | levels | n | mean | SD | seeds (half-width) | seeds (power) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in t.itertuples():
        f = lambda x: "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:+.3f}"
        g = lambda x: ("" if x is None or (isinstance(x, float) and math.isnan(x))
                       else f"> {N_MAX}" if math.isinf(x) else f"{int(x)}")
        lines.append(f"| {r.claim} | {r.reward} | {r.pair} | {r.levels} | {r.n} | {f(r.mean)} | "
                     f"{'' if not math.isfinite(r.sd) else f'{r.sd:.3f}'} | {g(r.seeds_half_width)} | "
                     f"{g(r.seeds_power)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.power", description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="study name (experiments/study/<name>.yaml) or path")
    ap.add_argument("--root", default=None, help="results folder (default: the study's root)")
    ap.add_argument("--half-width", type=float, default=0.03, help="target half-width of the interval")
    ap.add_argument("--delta", type=float, default=0.05, help="true effect the test should detect")
    ap.add_argument("--power", type=float, default=0.8)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--family", type=int, default=1, help="tests in the family (sizing at alpha / family)")
    args = ap.parse_args(argv)
    t = power_table(args.study, args.root, args.half_width, args.delta, args.power, args.alpha, args.family)
    print(power_markdown(t, args.half_width, args.delta, args.power, args.alpha, args.family))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
