"""Whether the runs of one table came from one environment: ``environment_notes(runs)`` reads the ``env.*`` columns
that ``vipo.results`` fills from each run's ``env.json`` (``vipo.environment``) and returns one line per thing that
differs (a package version, Python, the accelerator, the git commit, uncommitted changes, a resume in another
environment, runs that record nothing). ``analysis.report`` adds them to every table of a group as footnotes and
``python -m analysis.tables`` prints them as warnings. No line: every run recorded the same environment.
"""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from vipo.environment import COMPARED

ENV_NOTE = "environment"  # the prefix of the notes, so a reader can find them


def _value(x) -> str | None:
    """A cell of an ``env.*`` column as a string; None when missing (NaN, None, or the cache's "nan"/"None")."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    s = str(x)
    return None if s in ("", "nan", "None", "NaN", "<NA>") else s


def _counts(values: list[str]) -> str:
    return ", ".join(f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in sorted(Counter(values).items()))


def environment_notes(runs: pd.DataFrame) -> list[str]:
    """The lines that say how the environments of ``runs`` differ (empty when they do not, or there are no runs)."""
    if runs is None or runs.empty:
        return []
    has = runs["env.python"].map(_value).notna() if "env.python" in runs.columns else pd.Series(False, index=runs.index)
    rec = runs[has]
    out = []
    if (~has).any():
        out.append(f"{ENV_NOTE}: {int((~has).sum())} of {len(runs)} runs record no environment (no env.json: "
                   "package versions unknown)")
    for field in COMPARED:
        col = f"env.{field}"
        values = [_value(v) or "not installed" for v in rec[col]] if col in rec.columns else []
        if len(set(values)) > 1:
            out.append(f"{ENV_NOTE}: runs differ in {field}: {_counts(values)}")
    commits = [(_value(v) or "no git checkout")[:10] for v in rec.get("env.git_commit", [])]
    if len(set(commits)) > 1:
        out.append(f"{ENV_NOTE}: runs come from {len(set(commits))} commits of the code: {_counts(commits)}")
    dirty = rec[rec["env.git_dirty"].map(_value) == "True"] if "env.git_dirty" in rec.columns else rec.iloc[0:0]
    if len(dirty):
        diffs = {_value(v) for v in dirty.get("env.git_diff", [])} - {None}
        out.append(f"{ENV_NOTE}: {len(dirty)} of {len(rec)} runs ran on a tree with uncommitted changes"
                   f" ({len(diffs)} different diff{'s' if len(diffs) != 1 else ''})")
    if "env.resumed_differs" in rec.columns:
        moved = rec[rec["env.resumed_differs"].map(_value).notna()]
        for _, r in moved.iterrows():
            out.append(f"{ENV_NOTE}: {r['run_dir']} was resumed in another environment ({r['env.resumed_differs']} "
                       "changed; see its env.json)")
    return out
