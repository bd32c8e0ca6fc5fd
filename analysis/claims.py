"""The verdict on each claim of a study file (``claims:`` of ``experiments/study/<name>.yaml``), read from its
finished runs: one row per (claim, reward, reference) and a combined row per (claim, reward).

A claim names an ablation, a cell, one or more reference cells, a structure metric and where it is read
(``at: matched`` or ``at: final``). At matched reward its effect is the ``mean`` step of
``analysis.tables.pairwise_matched_table``: per seed, the mean of ``cell - reference`` over three reward levels
inside the range the pair covers, then a Student-t interval over seeds. It "holds" when the interval lies on the
metric's better side of 0, "fails" when it lies on the other side, and is "undecided" otherwise (or with one
seed). Against several references a claim holds only if it holds against each, and fails if it fails against any.

A study with a ``confirmatory:`` block has its pre-registered claims judged first, against its frozen plan
(``analysis.confirm``; refused when the plan is missing or the study changed since it was frozen); the rest of
its claims are exploratory.

    python -m analysis.claims toy [--root results/toy_study]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.metrics import direction, metric_info
from analysis.stats import verdict
from analysis.tables import MissingData, paired_table, pairwise_matched_table

COLUMNS = ["claim", "reward", "cell", "reference", "metric", "levels", "effect", "lo", "hi", "n", "n_sign",
           "verdict"]
AT = ("matched", "final")


def _combine(verdicts: Sequence[str]) -> str:
    if "fails" in verdicts:
        return "fails"
    return "holds" if verdicts and all(v == "holds" for v in verdicts) else "undecided"


def _effect(df: pd.DataFrame, claim: dict, reference: str, interval_kind: str, confidence: float) -> dict:
    cell, metric = claim["cell"], claim["metric"]
    base = {"cell": cell, "reference": reference, "metric": metric, "levels": "", "effect": float("nan"),
            "lo": float("nan"), "hi": float("nan"), "n": 0, "n_sign": 0}
    have = set(df["tags.cell"].astype(str)) if len(df) else set()
    if cell not in have or reference not in have:
        return {**base, "verdict": "undecided", "levels": f"no finished run of {cell if cell not in have else reference}"}
    if claim.get("at", "matched") == "final":
        t = paired_table(df, [metric], reference, [cell], interval_kind=interval_kind, confidence=confidence)
        r = t[t["cell"] == cell].iloc[0]
        base["levels"] = "final"
    else:
        t = pairwise_matched_table(df, [metric], reference, cells=[cell], interval_kind=interval_kind,
                                   confidence=confidence)
        mine = t[t["cell"] == cell]
        if mine.empty:
            return {**base, "verdict": "undecided", "levels": "the pair shares no reward range"}
        r = mine[mine["step"] == "mean"].iloc[0]
        base["levels"] = ", ".join(f"{v:g}" for v in mine.loc[mine["step"] != "mean", "level"])  # the pair's levels
    v = verdict(r["lo"], r["hi"], direction(metric) or 1)
    return {**base, "effect": r["mean"], "lo": r["lo"], "hi": r["hi"], "n": int(r["n"]), "n_sign": int(r["n_sign"]),
            "verdict": v}


def claim_table(name: str | Path, root: str | Path | None = None, interval_kind: str = "t",
                confidence: float = 0.95) -> pd.DataFrame:
    """Every claim of the study on every reward its ablation runs on. Rows with ``reference`` "all" combine a
    claim's references (absent when it has one)."""
    from vipo.study import load_study, study_frame, study_root

    spec = load_study(name)
    root = study_root(spec, Path(root) if root else None)
    how = (spec.get("analysis") or {}).get("claim_levels", "pairwise")
    if how != "pairwise":
        raise ValueError(f"study {spec['name']}: analysis.claim_levels {how!r} is not supported (only 'pairwise')")
    rows = []
    for claim in spec.get("claims") or []:
        if claim.get("at", "matched") not in AT:
            raise ValueError(f"claim {claim['claim']!r}: 'at' must be one of {AT}, got {claim.get('at')!r}")
        part = next((p for p in spec["parts"] if p["ablation"] == claim["ablation"]), None)
        if part is None:
            raise ValueError(f"claim {claim['claim']!r} names ablation {claim['ablation']!r}, which is no part of "
                             f"study {spec['name']}")
        refs = claim["reference"] if isinstance(claim["reference"], list) else [claim["reference"]]
        for reward in part.get("rewards") or list(spec["rewards"]):
            df = study_frame(root, reward, claim["ablation"])
            found = []
            for ref in refs:
                try:
                    found.append(_effect(df, claim, ref, interval_kind, confidence))
                except MissingData as e:
                    found.append({"cell": claim["cell"], "reference": ref, "metric": claim["metric"],
                                  "levels": str(e), "verdict": "undecided", "n": 0})
            for f in found:
                rows.append({"claim": claim["claim"], "reward": reward, **f})
            if len(refs) > 1:
                rows.append({"claim": claim["claim"], "reward": reward, "cell": claim["cell"], "reference": "all",
                             "metric": claim["metric"], "levels": "", "n": min(f.get("n", 0) for f in found),
                             "verdict": _combine([f["verdict"] for f in found])})
    return pd.DataFrame(rows, columns=COLUMNS)


def _fmt(x: float, digits: int = 3) -> str:
    return "" if pd.isna(x) else f"{x:+.{digits}f}"


def claims_markdown(frame: pd.DataFrame, title: str = "Claims") -> str:
    """One line per (claim, reward, reference): effect with its interval, seeds and verdict."""
    lines = [f"**{title}**: effect = cell - reference, per seed the mean over the pair's matched reward levels, "
             "mean and 95% Student-t interval over seeds; n = seeds; k/n = seeds with the sign of the mean.", "",
             "| claim | reward | cell vs reference | metric | levels | effect [95% interval] | n | verdict |",
             "|---|---|---|---|---|---|---:|---|"]
    for r in frame.itertuples():
        digits = metric_info(r.metric).digits
        if pd.isna(r.effect):
            eff = ""
        elif pd.isna(r.lo):
            eff = f"{_fmt(r.effect, digits)} (one seed: no interval)"
        else:
            eff = f"{_fmt(r.effect, digits)} [{_fmt(r.lo, digits)}, {_fmt(r.hi, digits)}] ({int(r.n_sign)}/{int(r.n)})"
        lines.append(f"| {r.claim} | {r.reward} | {r.cell} vs {r.reference} | {metric_info(r.metric).label} | "
                     f"{r.levels} | {eff} | {int(r.n)} | **{r.verdict}** |")
    return "\n".join(lines) + "\n"


def _confirmatory(name: str, root: Path | None) -> tuple[str, pd.DataFrame] | None:
    """The confirmatory section of a study with a ``confirmatory:`` block (None without one); raises
    ``vipo.confirm.PlanError`` when its plan is missing or changed."""
    from analysis.confirm import confirmatory_markdown, judge, per_level_markdown
    from vipo.study import load_study

    if not load_study(name).get("confirmatory"):
        return None
    frame, plan, levels = judge(name, root)
    return confirmatory_markdown(frame, plan, "../plan.json") + "\n" + per_level_markdown(levels), frame


def write_claims(name: str, root: Path, out: Path, interval_kind: str = "t") -> tuple[str, pd.DataFrame]:
    """``claims.md`` and ``claims.csv`` of a study into ``out`` (what ``make tables`` writes); returns both. A study
    with confirmatory claims gets them first (and ``confirmatory.csv``), then its other claims as exploratory."""
    frame = claim_table(name, root, interval_kind)
    conf = _confirmatory(name, root)
    if conf is None:
        text = claims_markdown(frame, f"Claims of study {name}")
    else:
        text = conf[0] + "\n" + claims_markdown(frame, f"Exploratory claims of study {name} (not pre-registered, "
                                                       "levels from the data, no multiplicity correction)")
        conf[1].to_csv(out / "confirmatory.csv", index=False, float_format="%.6g")
    (out / "claims.md").write_text(text)
    frame.to_csv(out / "claims.csv", index=False, float_format="%.6g")
    return text, frame


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.claims", description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="study name (experiments/study/<name>.yaml) or path")
    ap.add_argument("--root", default=None, help="results folder (default: the study's root)")
    ap.add_argument("--interval", default="t", choices=["t", "bootstrap"])
    args = ap.parse_args(argv)
    from vipo.confirm import PlanError

    try:
        conf = _confirmatory(args.study, args.root)
        frame = claim_table(args.study, args.root, args.interval)
    except (PlanError, FileNotFoundError) as e:
        print(str(e), file=sys.stderr)
        return 2
    if conf is None:
        print(claims_markdown(frame))
    else:
        print(conf[0] + "\n" + claims_markdown(frame, "Exploratory claims (not pre-registered)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
