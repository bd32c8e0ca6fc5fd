"""The tables of one group of runs (an ablation on one experiment, or a folder of untagged runs), built from the
builders of ``analysis.tables`` and ready to render, with a list of what is missing. ``make tables`` and the
notebooks both call these, so a notebook shows exactly what the command writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from analysis.metrics import METRICS
from analysis.render import Table, cells_view, markdown, matched_view, paired_view, pairwise_view, paper_view
from analysis.tables import (CELL, MissingData, cell_table, eval_curve, matched_paired_table, matched_reward_table,
                             numeric, paired_table, pairwise_matched_table, paper_side_by_side,
                             reward_levels)

REWARD = "eval/reward"
INTERVAL_NAMES = {"t": "Student-t", "bootstrap": "bootstrap"}
SIGN_NOTE = "(k/n same sign): seeds whose difference has the sign of the mean"
PAIRWISE_NOTE = ("levels: 3 evenly inside the reward range the cell and the reference both cover (above the highest "
                 "start, below the lower median best reward); mean over levels: per seed, the mean difference over "
                 "the levels both runs reach, then its interval over seeds")


@dataclass
class Report:
    name: str  # file stem: "<ablation>-<experiment>" or the folder of untagged runs
    tables: list[Table] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # what could not be shown, one line each
    run_dirs: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one per run: "<cell>-s<seed>"
    environment: list[str] = field(default_factory=list)  # how the runs' environments differ (analysis.environments)

    def note_environment(self, runs: pd.DataFrame) -> "Report":
        """Footnote every table with how the environments of ``runs`` differ (nothing when they do not)."""
        from analysis.environments import environment_notes

        self.environment = environment_notes(runs)
        for t in self.tables:
            t.notes = [*t.notes, *self.environment]
        return self


def sweep_runs(runs: pd.DataFrame, ablation: str, experiment: str | None = None) -> pd.DataFrame:
    """The finished runs of one ablation (``tags.ablation``), optionally of one experiment."""
    if runs.empty or "tags.ablation" not in runs.columns:
        return runs.iloc[0:0]
    sel = runs[runs["tags.ablation"].astype(str) == ablation]
    return sel[sel["experiment"].astype(str) == experiment] if experiment else sel


def eval_metrics(runs: pd.DataFrame) -> list[str]:
    """The registered evaluation metrics present in ``runs``, in registry order (rule-reward extras left out)."""
    return [m for m in METRICS if m in runs.columns and numeric(runs, m).notna().any()]


def _missing(runs: pd.DataFrame, cells: list[str], metrics: Sequence[str], by: str) -> list[str]:
    out = [f"metric {m}: no run has it" for m in metrics if not numeric(runs, m).notna().any()]
    have = set(runs[by].astype(str)) if by in runs.columns else set()
    out += [f"cell {c}: no finished seed" for c in cells if c not in have]
    for m in metrics:
        bad = runs[numeric(runs, m).isna()]
        if 0 < len(bad) < len(runs):
            out.append(f"metric {m}: missing or NaN in {len(bad)} run(s): " + ", ".join(bad["run_dir"].astype(str)))
    return out


def _matched(runs, metrics, cells, by, levels, interval_kind, confidence, title, missing,
             reference: str | None = None) -> list[Table]:
    structure = [m for m in metrics if m != REWARD and numeric(runs, m).notna().any()]
    if not structure or REWARD not in runs.columns:
        return []
    if not any(eval_curve(d, [REWARD])[REWARD].notna().any() for d in runs["run_dir"]):
        missing.append(f"matched reward: no run has {REWARD} evaluation rows in metrics.jsonl")
        return []
    tables = []
    if reference and not levels and (runs[by].astype(str) == reference).any():
        pw = pairwise_matched_table(runs, structure, reference, REWARD, cells, by, interval_kind=interval_kind,
                                    confidence=confidence)
        if len(pw):
            tables.append(pairwise_view(pw, f"{title}: difference from {reference} at matched reward, each pair at "
                                            f"levels inside the range both cover, paired by seed",
                                        notes=[SIGN_NOTE, PAIRWISE_NOTE], reward=REWARD))
    levels = list(levels) if levels else reward_levels(runs, REWARD, by=by)
    if not levels:
        missing.append("matched reward: the cells' evaluation curves share no reward range; no matched-reward table")
        return tables
    frame = matched_reward_table(runs, levels, structure, REWARD, cells, by, interval_kind, confidence)
    tables[:0] = [matched_view(frame, f"{title}: structure at matched reward (interpolated on each run's evaluation "
                                  f"curve, never extrapolated)", REWARD, name="matched")]
    if reference and (runs[by].astype(str) == reference).any():
        diff = matched_paired_table(runs, levels, structure, reference, REWARD, cells, by,
                                    interval_kind=interval_kind, confidence=confidence)
        tables.append(paired_view(diff, f"{title}: difference from {reference} at matched reward, paired by seed",
                                  notes=[SIGN_NOTE], name="matched_paired", reward=REWARD))
    return tables


def ablation_report(runs: pd.DataFrame, spec: dict, experiment: str | None, levels: Sequence[float] | None = None,
                    interval_kind: str = "t", confidence: float = 0.95, reference: str | None = None,
                    label: str | None = None, cells: Sequence[str] | None = None) -> Report:
    """Tables of an ablation (``vipo.sweep.load_ablation`` spec) on one experiment (None: every run tagged with the
    ablation, e.g. a study's frame of one reward): cells, differences from the reference cell (``reference:`` of
    the spec unless given) and matched reward. ``label`` names the group in titles and file names (default: the
    experiment); ``cells`` keeps a subset of the ablation's cells (a study part's ``cells:``), in the file's order."""
    from vipo.sweep import cell_names

    runs = sweep_runs(runs, spec["name"], experiment)
    label = label or experiment or "all runs"
    cells = [c for c in cell_names(spec) if cells is None or c in cells]
    metrics = list(spec.get("metrics") or eval_metrics(runs))
    rep = Report(f"{spec['name']}-{label}".replace("/", "-").replace(" ", "_"),
                 missing=_missing(runs, cells, metrics, CELL))
    if len(runs):
        rep.run_dirs, rep.labels = list(runs["run_dir"]), [f"{c}-s{s}" for c, s in zip(runs[CELL], runs["seed"])]
    how = f"mean ± {confidence:.0%} {INTERVAL_NAMES[interval_kind]} interval over seeds"
    title = f"{spec.get('table', spec['name'])} [{label}]"
    rep.tables.append(cells_view(cell_table(runs, metrics, cells, CELL, interval_kind, confidence),
                                 f"{title}: {how}", name="cells"))
    reference = reference or spec.get("reference")
    if reference:
        try:
            frame = paired_table(runs, metrics, reference, cells, CELL, interval_kind=interval_kind,
                                 confidence=confidence)
            rep.tables.append(paired_view(frame, f"{title}: difference from {reference}, paired by seed",
                                          notes=[SIGN_NOTE],
                                          name="paired"))
        except MissingData as e:
            rep.missing.append(f"paired differences: {e}")
    rep.tables += _matched(runs, metrics, cells, CELL, levels, interval_kind, confidence, title, rep.missing,
                           reference)
    return rep.note_environment(runs)


def folder_report(runs: pd.DataFrame, name: str, levels: Sequence[float] | None = None, interval_kind: str = "t",
                  confidence: float = 0.95) -> Report:
    """Tables of runs that no sweep tagged (e.g. ``python train.py`` runs in one folder): one row per run folder."""
    runs = runs.assign(run=[Path(d).name for d in runs["run_dir"]])
    metrics = eval_metrics(runs)
    rep = Report(name.replace("/", "-"), run_dirs=list(runs["run_dir"]), labels=list(runs["run"]))
    rep.missing = _missing(runs, [], metrics, "run")
    rep.tables.append(cells_view(cell_table(runs, metrics, None, "run", interval_kind, confidence),
                                 f"Runs in {name} (one seed each: no interval)", row_header="run", name="cells"))
    rep.tables += _matched(runs, metrics, None, "run", levels, interval_kind, confidence, f"Runs in {name}",
                           rep.missing)
    for t in rep.tables:
        t.row_header = "run"
    return rep.note_environment(runs)


def paper_report(paper: dict, runs: pd.DataFrame, experiment: str | None = None, interval_kind: str = "t",
                 confidence: float = 0.95) -> Table:
    """The paper's table beside ours (runs of ``experiment``, default the paper's own)."""
    from analysis.environments import environment_notes

    t = paper_view(paper_side_by_side(paper, runs, experiment, interval_kind, confidence), paper, experiment)
    ours = runs[runs["experiment"].astype(str) == (experiment or paper["experiment"])] \
        if "experiment" in runs.columns else runs
    t.notes = [*t.notes, *environment_notes(ours)]
    return t

def sweep_table(ablation: str, root: str | Path | None = None, metrics: Sequence[str] | None = None,
                extra: Sequence[str] = ()) -> pd.DataFrame | None:
    """Per cell of an ablation sweep (in the ablation file's order): mean, 95% t interval and n over seeds, from
    the summaries under the sweep folder (``vipo.sweep.default_root`` unless given); ``None`` when no run has
    finished. ``python sweep.py ablation=NAME`` prints it."""
    from vipo.results import collect
    from vipo.sweep import cell_names, default_root, load_ablation

    spec = load_ablation(ablation)
    df = collect(Path(root or default_root(ablation, extra)), cache=False)
    if df.empty:
        return None
    return cell_table(df, metrics or spec.get("metrics"), cell_names(spec))


def study_tables(name: str | Path, root: Path) -> str:
    """The tables of ``ablation_report`` (cells with intervals over seeds, paired differences from the reference
    cell, matched reward) for every (reward, part) of a study that has finished runs, as Markdown text with what is
    missing. ``python sweep.py study=NAME`` prints it."""
    from vipo.study import load_study, read_index, study_frame
    from vipo.sweep import load_ablation

    from vipo.results import failed_runs

    spec = load_study(name)
    try:
        read_index(root)
    except FileNotFoundError as e:
        return f"[study] {e}"
    out = [f"[study] FAILED {d}: {error}" for d, error in failed_runs(root)]  # listed, never counted as finished
    for part in spec["parts"]:
        abl = load_ablation(part["ablation"])
        for reward in part.get("rewards") or list(spec["rewards"]):
            df = study_frame(root, reward, part["ablation"])
            if df.empty:
                out.append(f"\n{abl.get('table', part['ablation'])}  [reward: {reward}]\n(no finished runs)")
                continue
            rep = ablation_report(df, abl, None, label=f"reward: {reward}", cells=part.get("cells"))
            out.append("\n" + "\n".join(markdown(t) for t in rep.tables))
            out += [f"missing: {m}" for m in rep.missing]
    return "\n".join(out)


def show(*items) -> None:
    """Display tables, or reports (their tables, then what is missing), as Markdown in a notebook."""
    from IPython.display import Markdown, display

    for item in items:
        for t in item.tables if isinstance(item, Report) else [item]:
            display(Markdown(markdown(t)))
        if isinstance(item, Report) and item.missing:
            display(Markdown(f"Missing in {item.name}:\n" + "\n".join(f"- {m}" for m in item.missing)))
