"""Verdicts on a study's pre-registered (confirmatory) claims, judged against its frozen plan (vipo/confirm.py).

Per claim: the per-seed effect is the mean of ``cell - reference`` over the plan's FIXED reward levels that both
runs of the seed reach (``analysis.tables.pair_seed_effects``); over seeds, a paired t test of 0 (two-sided) and
the TOST test of equivalence within the metric's margin. Both families of p-values are adjusted by the plan's
correction (Holm: ``analysis.stats.holm``). Verdict: "holds" / "fails" when the adjusted difference test rejects
at alpha (by the side of the effect; the metric's better direction is the expected side), else "equivalent" when
the adjusted TOST rejects, else "undecided". The adjusted interval is the two-sided t interval at the level the
correction tests the claim at (Holm: ``holm_levels``), so it excludes 0 exactly when the claim holds or fails.

    python -m analysis.confirm toy_confirm [--root results/toy_confirm]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.metrics import direction, metric_info
from analysis.stats import confirmatory_verdict, holm, holm_levels, t_interval_at, tost
from analysis.tables import CELL, SEED, _runs_of, pair_seed_effects

COLUMNS = ["claim", "reward", "cell", "reference", "metric", "levels", "seeds_per_level", "n", "finished", "planned",
           "effect", "lo", "hi", "p", "p_adj", "level_adj", "lo_adj", "hi_adj", "margin", "p_equiv", "p_equiv_adj",
           "verdict"]
LEVEL_COLUMNS = ["claim", "cell", "reference", "metric", "level", "n", "effect", "lo", "hi", "n_sign"]


def _adjust(p: list[float], correction: str, alpha: float) -> tuple[list[float], list[float]]:
    """(adjusted p-values, the level each hypothesis is tested at)."""
    m = sum(math.isfinite(x) for x in p)
    if correction == "holm":
        return holm(p), holm_levels(p, alpha)
    if correction == "bonferroni":
        return ([min(1.0, x * m) if math.isfinite(x) else math.nan for x in p],
                [alpha / m if math.isfinite(x) else math.nan for x in p])
    return list(p), [alpha if math.isfinite(x) else math.nan for x in p]


def confirmatory_table(name: str | Path, root: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per confirmatory claim (the primary family) and the frozen plan it was judged with. Raises
    ``vipo.confirm.PlanError`` when the study has no frozen plan or changed since."""
    frame, plan, _ = judge(name, root)
    return frame, plan


def per_level_table(name: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """Exploratory breakdown of the confirmatory claims: the paired effect at each fixed level on its own (the seeds
    whose pair reaches that level), mean and 95% t interval, no multiplicity correction. It shows where along the
    reward a claim's effect comes from; the verdicts stay those of ``confirmatory_table``."""
    return judge(name, root)[2]


def judge(name: str | Path, root: str | Path | None = None) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """``confirmatory_table``'s frame and plan and ``per_level_table``'s frame from one reading of the runs."""
    from vipo.confirm import check_plan, planned_seeds, study_path
    from vipo.study import load_study, study_frame, study_root

    spec = load_study(name)
    root = study_root(spec, Path(root) if root else None)
    plan = check_plan(spec, study_path(name), root)
    block = plan["confirmatory"]
    alpha, correction = float(block.get("alpha", 0.05)), block.get("correction", "holm")
    rows, level_rows = [], []
    for c in block["claims"]:
        levels = [float(x) for x in block["levels"][c["reward"]]]
        df = study_frame(root, c["reward"], c["ablation"])
        eff = pair_seed_effects(df, c["metric"], c["cell"], c["reference"], levels) if len(df) else {}
        # each fixed level on its own: how many seeds' pairs reach it (a per-seed effect averages over the levels
        # its pair reaches) and the exploratory per-level effect
        by_level = [pair_seed_effects(df, c["metric"], c["cell"], c["reference"], [lv]) if len(df) else {}
                    for lv in levels]
        for lv, e in zip(levels, by_level):
            tl = tost(list(e.values()))
            lo_l, hi_l = t_interval_at(tl.mean, tl.se, tl.n, 0.95)
            level_rows.append({"claim": c["claim"], "cell": c["cell"], "reference": c["reference"],
                               "metric": c["metric"], "level": lv, "n": tl.n, "effect": tl.mean, "lo": lo_l,
                               "hi": hi_l, "n_sign": sum(1 for v in e.values() if v * tl.mean > 0)})
        margin = float(block["margins"][c["metric"]])
        sign = direction(c["metric"]) or 1
        # the test is on the effect in the metric's better direction (sign), so a margin is symmetric anyway
        t = tost(list(eff.values()), margin)
        lo, hi = t_interval_at(t.mean, t.se, t.n, 0.95)
        planned = (planned_seeds(plan["parts"], c["ablation"], c["cell"])
                   & planned_seeds(plan["parts"], c["ablation"], c["reference"]))
        rows.append({"claim": c["claim"], "reward": c["reward"], "cell": c["cell"], "reference": c["reference"],
                     "metric": c["metric"], "levels": ", ".join(f"{x:g}" for x in levels),
                     "seeds_per_level": ", ".join(str(len(e)) for e in by_level), "n": t.n,
                     "finished": len(planned & _finished_pairs(df, c["cell"], c["reference"])),
                     "planned": len(planned), "effect": t.mean, "lo": lo, "hi": hi,
                     "p": t.p_diff, "margin": margin, "p_equiv": t.p_equiv, "sign": sign, "se": t.se})
    p_adj, level = _adjust([r["p"] for r in rows], correction, alpha)
    pe_adj, _ = _adjust([r["p_equiv"] for r in rows], correction, alpha)
    for r, pa, lv, pe in zip(rows, p_adj, level, pe_adj):
        lo_adj, hi_adj = t_interval_at(r["effect"], r.pop("se"), r["n"], 1 - lv)
        r.update(p_adj=pa, level_adj=lv, lo_adj=lo_adj, hi_adj=hi_adj, p_equiv_adj=pe,
                 verdict=confirmatory_verdict(pa, pe, r["effect"], r.pop("sign"), alpha))
    return pd.DataFrame(rows, columns=COLUMNS), plan, pd.DataFrame(level_rows, columns=LEVEL_COLUMNS)


def _finished_pairs(df: pd.DataFrame, cell: str, reference: str) -> set[int]:
    """The seeds whose runs of ``cell`` and of ``reference`` both finished (have a summary)."""
    if SEED not in df.columns:
        return set()
    cell_seeds, reference_seeds = ({int(x) for x in _runs_of(df, c, CELL)[SEED]} for c in (cell, reference))
    return cell_seeds & reference_seeds


def _f(x: float, digits: int = 3) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def _p(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else (f"{x:.4f}" if x >= 1e-4 else f"{x:.1e}")


def confirmatory_markdown(frame: pd.DataFrame, plan: dict, plan_link: str = "plan.json") -> str:
    block = plan["confirmatory"]
    incomplete = frame[frame["finished"] < frame["planned"]]
    state = ("**interim: not every planned seed has finished; these verdicts are not the study's result**"
             if len(incomplete) else "all planned seeds finished")
    unmatched = frame[frame["n"] < frame["finished"]]
    if len(unmatched):  # finished pairs that reach none of the fixed levels are left out, as the plan says
        state += "; " + ", ".join(f"{r.cell} vs {r.reference}: {r.finished - r.n} finished seed(s) reach no level"
                                  for r in unmatched.itertuples())
    lines = [f"**Confirmatory claims** (primary family, frozen plan [`{Path(plan_link).name}`]({plan_link}): "
             f"commit {str(plan.get('commit'))[:12]}, frozen {plan.get('frozen_at')}; {state}). Effect = cell - "
             f"reference, per seed the mean over the fixed reward levels both runs reach; paired t test and TOST "
             f"(margin) over seeds; {block.get('correction', 'holm')} correction over the family at alpha "
             f"{block.get('alpha', 0.05)}; the adjusted interval is the t interval at the level the correction "
             "tests the claim at.", "",
             "| claim | reward | cell vs reference | metric | levels | n / planned | effect [95% interval] | p | "
             "adjusted p | adjusted interval | TOST margin, adjusted p | verdict |",
             "|---|---|---|---|---|---:|---|---:|---:|---|---|---|"]
    for r in frame.itertuples():
        d = metric_info(r.metric).digits
        levels = r.levels
        if any(int(k) < r.n for k in str(r.seeds_per_level).split(", ") if k):
            levels += f" (seeds reaching each: {r.seeds_per_level})"
        eff = f"{_f(r.effect, d)} [{_f(r.lo, d)}, {_f(r.hi, d)}]" if math.isfinite(r.effect) else ""
        adj = (f"[{_f(r.lo_adj, d)}, {_f(r.hi_adj, d)}] ({100 * (1 - r.level_adj):.2f}%)"
               if math.isfinite(r.lo_adj) else "")
        lines.append(f"| {r.claim} | {r.reward} | {r.cell} vs {r.reference} | {metric_info(r.metric).label} | "
                     f"{levels} | {r.n} / {r.planned} | {eff} | {_p(r.p)} | {_p(r.p_adj)} | {adj} | "
                     f"±{r.margin:g}, {_p(r.p_equiv_adj)} | **{r.verdict}** |")
    return "\n".join(lines) + "\n"


def per_level_markdown(frame: pd.DataFrame) -> str:
    lines = ["**Per level (exploratory: each fixed level on its own, the seeds whose pair reaches it, 95% t interval, "
             "no correction)**; k/n = seeds with the sign of the mean.", "",
             "| cell vs reference | metric | level | effect [95% interval] | k/n |", "|---|---|---:|---|---:|"]
    for r in frame.itertuples():
        d = metric_info(r.metric).digits
        eff = f"{_f(r.effect, d)} [{_f(r.lo, d)}, {_f(r.hi, d)}]" if math.isfinite(r.lo) else _f(r.effect, d)
        lines.append(f"| {r.cell} vs {r.reference} | {metric_info(r.metric).label} | {r.level:g} | {eff} | "
                     f"{r.n_sign}/{r.n} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from vipo.confirm import PlanError

    ap = argparse.ArgumentParser(prog="python -m analysis.confirm", description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="study name (experiments/study/<name>.yaml) or path")
    ap.add_argument("--root", default=None, help="results folder (default: the study's root)")
    args = ap.parse_args(argv)
    try:
        frame, plan, levels = judge(args.study, args.root)
    except PlanError as e:
        print(str(e), file=__import__("sys").stderr)
        return 2
    print(confirmatory_markdown(frame, plan))
    print(per_level_markdown(levels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
