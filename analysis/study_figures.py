"""Figures of a study's (reward, ablation) group, built from committed run files:

- ``interval_curves``: per cell, the evaluation reward and a structure metric against iteration, and the metric
  against reward (matched reward), each the mean over seeds with its 95% Student-t band;
- ``sample_grid``: per cell, the evaluation samples of its first seed at the evaluation point whose reward is
  nearest a given level (``images/samples_it*.png`` written by the trainer; cells without them are named), with
  the list of the images it read beside it (``*_samples.txt``: what a study commits of its runs' images).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.metrics import metric_info
from analysis.stats import interpolate_at, t_interval
from analysis.tables import CELL, cell_order, eval_curve

REWARD = "eval/reward"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(values: np.ndarray) -> tuple[float, float, float]:
    est = t_interval(values)
    return est.mean, est.lo, est.hi


def cell_curves(runs: pd.DataFrame, cell: str, metric: str, points: int = 25) -> dict:
    """Means and t bands over the cell's seeds: ``iteration`` -> reward and metric (iterations every run has),
    and ``levels`` -> metric at matched reward (levels every run of the cell reaches, interpolated)."""
    curves = [eval_curve(d, [REWARD, metric]) for d in runs[runs[CELL].astype(str) == cell]["run_dir"]]
    curves = [c.dropna() for c in curves if len(c.dropna())]
    out = {"runs": len(curves), "iteration": [], "reward": [], "metric": [], "levels": [], "matched": []}
    if not curves:
        return out
    iters = sorted(set.intersection(*(set(c["iteration"]) for c in curves)))
    for it in iters:
        out["iteration"].append(it)
        out["reward"].append(_band(np.array([c.loc[c["iteration"] == it, REWARD].iloc[0] for c in curves])))
        out["metric"].append(_band(np.array([c.loc[c["iteration"] == it, metric].iloc[0] for c in curves])))
    lo = max(c[REWARD].iloc[0] for c in curves)
    hi = min(c[REWARD].max() for c in curves)  # levels every seed reaches: no survivor bias along the curve
    for level in np.linspace(lo, hi, points) if hi > lo else []:
        vals = np.array([interpolate_at(c[REWARD], c[metric], level) for c in curves])
        if np.isfinite(vals).all():
            out["levels"].append(float(level))
            out["matched"].append(_band(vals))
    return out


def interval_curves(runs: pd.DataFrame, out: str | Path, metric: str = "eval/shape_acc", title: str = "",
                    cells: Sequence[str] | None = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.9))
    for i, cell in enumerate(cell_order(runs, cells)):
        c = cell_curves(runs, cell, metric)
        if not c["runs"]:
            continue
        colour = f"C{i % 10}"
        label = f"{cell} (n={c['runs']})"
        for a, x, ys in ((ax[0], c["iteration"], c["reward"]), (ax[1], c["iteration"], c["metric"]),
                         (ax[2], c["levels"], c["matched"])):
            if not ys:
                continue
            mean, lo, hi = (np.array(v, dtype=float) for v in zip(*ys))
            a.plot(x, mean, color=colour, label=label, lw=1.5)
            if c["runs"] > 1:
                a.fill_between(x, lo, hi, color=colour, alpha=0.15, lw=0)
    rl, ml = metric_info(REWARD).label, metric_info(metric).label
    ax[0].set(xlabel="iteration", ylabel=rl, title="evaluation reward")
    ax[1].set(xlabel="iteration", ylabel=ml, title=ml)
    ax[2].set(xlabel=rl, ylabel=ml, title=f"{ml} at matched reward")
    for a in ax:
        a.grid(alpha=0.3)
    ax[2].legend(fontsize=7)
    fig.suptitle(f"{title}: mean over seeds, 95% t band (matched: reward levels every seed of the cell reaches)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def nearest_eval(curve: pd.DataFrame, level: float) -> tuple[int, float]:
    """(evaluation row iteration, its reward) of the point of ``curve`` (``eval_curve`` with the reward) whose
    reward is nearest ``level``."""
    c = curve.dropna(subset=[REWARD])
    i = (c[REWARD] - level).abs().idxmin()
    return int(c.loc[i, "iteration"]) - 1, float(c.loc[i, REWARD])


def grid_images(runs: pd.DataFrame, levels: Sequence[float], cells: Sequence[str] | None = None
                ) -> tuple[list[list[tuple[str, Path]]], list[str]]:
    """The sample images a grid shows: one row per cell, one (label, path) per level (its first seed's evaluation
    samples at the evaluation point whose reward is nearest the level; a run whose best reward stays below the
    level says so in the label), and lines naming cells whose images are missing (those cells get no row)."""
    grid, missing = [], []
    for cell in cell_order(runs, cells):
        sub = runs[runs[CELL].astype(str) == cell]
        if sub.empty:
            continue
        run = sub.sort_values("seed").iloc[0]
        curve = eval_curve(run["run_dir"], [REWARD])  # read once: every level of the row uses it
        best = float(curve[REWARD].max())
        row = []
        for level in levels:
            it, reward = nearest_eval(curve, level)
            path = Path(run["run_dir"]) / "images" / f"samples_it{it:05d}.png"
            if not path.exists():
                missing.append(f"{cell}: {path} not found")
                break
            short = " (never reaches the level)" if best < level else ""
            row.append((f"{cell} s{run['seed']}, it {it}, reward {reward:.3f}{short}", path))  # it: the file's
        else:
            grid.append(row)
    return grid, missing


def sample_grid(runs: pd.DataFrame, out: str | Path, levels: Sequence[float], title: str = "",
                cells: Sequence[str] | None = None) -> tuple[Path | None, list[str]]:
    """The grid of ``grid_images`` as one figure; returns (path or None, cells without sample images). The
    images it read are listed beside it (``<out stem>.txt``, one path per line) so that they can be committed."""
    from PIL import Image

    rows, missing = grid_images(runs, levels, cells)
    grid = [[(label, np.asarray(Image.open(p).convert("RGB"))) for label, p in row] for row in rows]
    if not grid:
        return None, missing
    plt = _plt()
    h, w = grid[0][0][1].shape[:2]
    fig, ax = plt.subplots(len(grid), len(levels), figsize=(len(levels) * w / 60, len(grid) * (h / 60 + 0.35)),
                           squeeze=False)
    for r, row in enumerate(grid):
        for c, (label, img) in enumerate(row):
            ax[r, c].imshow(img, interpolation="nearest")
            ax[r, c].set_title(label, fontsize=7, loc="left")
            ax[r, c].axis("off")
    at = ", ".join(f"{v:g}" for v in levels)
    fig.suptitle(f"{title}\nevaluation samples (first seed) nearest {metric_info(REWARD).label} {at}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    listed = [os.path.relpath(p, Path(out).parent) for row in rows for _, p in row]  # relative to the figure
    Path(out).with_suffix(".txt").write_text("".join(f"{p}\n" for p in listed))
    return Path(out), missing


def levels_for_grids(runs: pd.DataFrame) -> list[float]:
    """Two levels: the highest of the three matched levels every cell reaches (``analysis.tables.reward_levels``),
    and the same without the slowest cell (where the faster cells part ways; the slowest is shown below it)."""
    from analysis.tables import reward_levels

    common = reward_levels(runs, REWARD)
    if not common:
        return []
    cells = cell_order(runs)
    tops = {c: np.median([eval_curve(d, [REWARD])[REWARD].max() for d in runs[runs[CELL].astype(str) == c]["run_dir"]])
            for c in cells}
    slowest = min(tops, key=tops.get)
    rest = reward_levels(runs[runs[CELL].astype(str) != slowest], REWARD) if len(cells) > 2 else []
    return [common[-1]] + ([rest[-1]] if rest and rest[-1] > common[-1] else [])


def study_figures(runs: pd.DataFrame, name: str, out: Path, title: str, cells: Sequence[str] | None = None,
                  metric: str = "eval/shape_acc") -> list[str]:
    """Both figures of one study group into ``out``; returns lines naming what is missing."""
    missing = []
    if metric not in runs.columns or not pd.to_numeric(runs[metric], errors="coerce").notna().any():
        return [f"figures: no run has {metric}"]
    interval_curves(runs, out / f"{name}_curves.png", metric, title, cells)
    levels = levels_for_grids(runs)
    if not levels:
        return ["sample grid: the cells share no reward range"]
    path, gaps = sample_grid(runs, out / f"{name}_samples.png", levels, title, cells)
    missing += [f"sample grid: {g}" for g in gaps]
    if path is None:
        missing.append("sample grid: no run has sample images")
    return missing
