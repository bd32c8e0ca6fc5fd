"""``python -m analysis.tables <results root> [--ablation NAME ...] [--format md,tex,csv] [--out DIR]`` (and
``make tables``): every table whose runs exist under the root, written to ``--out`` with the curve figures of
``analysis.curves``, and a list of what is missing (ablations without runs, cells without a finished seed,
metrics no run has). Exits 0 when there is nothing to build, saying so.

``python -m analysis.tables <root> --by COLUMN [--metrics M ...]`` instead prints one table of the runs under the
root grouped by a column of ``vipo.results.collect`` (mean ± 95% t interval over runs) and writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from analysis.render import RENDERERS, cells_view, markdown
from analysis.report import REWARD, Report, ablation_report, eval_metrics, folder_report, paper_report, sweep_runs
from analysis.tables import cell_table, numeric, paper_tables


def _say(msg: str) -> None:
    print(f"[tables] {msg}", flush=True)


def _write(rep: Report, out: Path, formats: Sequence[str], figures: bool, collected: list[str]) -> None:
    if rep.tables:
        collected.append(f"## {rep.name}\n")
    for t in rep.tables:
        for fmt in formats:
            path = out / f"{rep.name}_{t.name}.{fmt}"
            path.write_text(RENDERERS[fmt](t))
        collected.append(markdown(t))
    if figures and rep.run_dirs:
        _figure(rep, out)
    for line in rep.missing:
        _say(f"  missing in {rep.name}: {line}")
    for line in rep.environment:
        _say(f"  warning in {rep.name}: {line}")


def _figure(rep: Report, out: Path) -> None:
    """Reward and the first structure metric against iteration, and the matched-reward view (analysis.curves)."""
    import pandas as pd

    from analysis.curves import plot_curves
    from vipo.records import read_jsonl

    rows = [r for d in rep.run_dirs for r in read_jsonl(Path(d) / "metrics.jsonl")]
    present = pd.DataFrame(rows) if rows else pd.DataFrame()
    metrics = [c for c in present.columns if c.startswith("eval/") and c != REWARD and not c.startswith("eval/reward_")
               and numeric(present, c).notna().any()]
    if not rows or not metrics:
        _say(f"  no evaluation curves in {rep.name}; no figure")
        return
    metric = "eval/shape_acc" if "eval/shape_acc" in metrics else metrics[0]
    path = out / f"{rep.name}_curves.png"
    plot_curves(rep.run_dirs, path, metric=metric, labels=rep.labels)
    _say(f"  figure {path}")


def _study(sroot: Path, root: Path, names: Sequence[str], out: Path, formats, levels, interval_kind, figures,
           collected: list[str]) -> list[Report]:
    """One report per (reward, ablation) of a study folder (``vipo.study``), from its ``index.json``."""
    from vipo.study import load_study, read_index, study_frame, study_of_root
    from vipo.sweep import load_ablation

    reports = []
    index = read_index(sroot)
    pairs = dict.fromkeys((e["reward"], e["ablation"]) for e in index if e["ablation"] in names)
    for reward, ablation in pairs:
        part_cells = {e["cell"] for e in index if (e["reward"], e["ablation"]) == (reward, ablation)}
        label = f"{sroot.relative_to(root) if sroot != root else sroot.name}/{reward}"
        df = study_frame(sroot, reward, ablation)
        if df.empty:
            _say(f"study {label}, ablation {ablation}: no finished runs yet")
            continue
        _say(f"study {label}, ablation {ablation}: {len(df)} runs")
        spec = load_ablation(ablation)
        reports.append(ablation_report(df, spec, None, levels, interval_kind, label=label, cells=part_cells))
        _write(reports[-1], out, formats, False, collected)
        if figures:
            from analysis.study_figures import study_figures
            from vipo.sweep import cell_names

            for line in study_figures(df, reports[-1].name, out, f"{spec.get('table', ablation)} [{label}]",
                                      [c for c in cell_names(spec) if c in part_cells]):
                _say(f"  missing in {reports[-1].name}: {line}")
            _say(f"  figures {out / reports[-1].name}_curves.png, _samples.png")
    name = study_of_root(sroot)
    if name and (load_study(name).get("claims") or load_study(name).get("confirmatory")):
        from analysis.claims import write_claims
        from vipo.confirm import PlanError

        try:
            text, frame = write_claims(name, sroot, out, interval_kind)
        except PlanError as e:
            _say(f"study {name}: claims not judged: {e}")
            return reports
        collected[0:0] = ["## Claims\n", text]
        _say(f"study {name}: {claim_counts(frame)} -> {out / 'claims.md'}")
    return reports


def claim_counts(frame) -> str:
    """What claims.md lists, counted the same way: its rows, split into comparisons with one reference and rows
    that combine a claim's references (``vs all``), each with its verdicts."""
    if not len(frame):
        return "0 claim rows"
    combined = frame["reference"] == "all"

    def verdicts(rows) -> str:
        return ", ".join(f"{v} {n}" for v, n in rows["verdict"].value_counts().sort_index().items())

    text = f"{len(frame)} claim rows: {int((~combined).sum())} comparisons ({verdicts(frame[~combined])})"
    if combined.any():
        text += f" + {int(combined.sum())} combined over references ({verdicts(frame[combined])})"
    return text


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


class Pages:
    """``make tables`` output as one Markdown page per study, sweep (ablation x experiment) and folder of runs,
    each with a heading per report, and ``tables.md`` as their index."""

    def __init__(self):
        self.pages: dict[str, tuple[str, list[str]]] = {}  # file stem -> (title, blocks)
        self.tables = 0  # tables listed on the pages (claims included)

    def page(self, stem: str, title: str) -> list[str]:
        return self.pages.setdefault(_slug(stem), (title, []))[1]

    def write(self, out: Path, root: Path) -> Path | None:
        if not self.pages:
            return None
        index = [f"# Tables of the runs under `{Path(root).resolve().name}/`", "",
                 "Built by `python -m analysis.tables <results folder>` (`make tables`) from the run files; one page "
                 "per study, sweep and folder of runs. Every table is also in its own `.md`, `.tex` and `.csv` file.",
                 "",
                 "| page | tables |", "|---|---:|"]
        for stem, (title, blocks) in self.pages.items():
            n = sum(1 for b in blocks if b.startswith("**"))
            self.tables += n
            (out / f"{stem}.md").write_text(f"# {title}\n\n" + "\n".join(blocks))
            index.append(f"| [{title}]({stem}.md) | {n} |")
        path = out / "tables.md"
        path.write_text("\n".join(index) + "\n")
        return path


def build(root: str | Path, out: str | Path, ablations: Sequence[str] | None = None,
          formats: Sequence[str] = ("md", "tex", "csv"), levels: Sequence[float] | None = None,
          interval_kind: str = "t", figures: bool = True) -> list[Report]:
    from vipo.results import collect

    root, out = Path(root), Path(out)
    t0 = time.perf_counter()
    runs = collect(root, cache=False) if root.exists() else None
    if runs is None or runs.empty:
        _say(f"no finished runs (summary.json) under {root}; no tables to build")
        return []
    _say(f"{len(runs)} finished runs under {root} -> {out}")
    from vipo.results import failed_runs

    for run_dir, error in failed_runs(root):  # listed, never counted as finished
        _say(f"FAILED {run_dir}: {error}")
    from vipo.config import CONFIG_DIR
    from vipo.sweep import load_ablation

    out.mkdir(parents=True, exist_ok=True)
    names = list(ablations or sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")))
    reports, pages, no_runs = [], Pages(), []
    studies = sorted(p.parent for p in root.rglob("index.json"))
    in_study = runs["run_dir"].map(lambda d: any(Path(d).is_relative_to(s) for s in studies))
    from vipo.study import read_index, study_of_root

    studied = set()
    for sroot in studies:  # a study's runs serve several (ablation, cell) pairs: its index.json says which
        try:
            studied |= {e["ablation"] for e in read_index(sroot)}  # (an unreadable index is rebuilt when possible)
        except FileNotFoundError as e:
            print(f"warning: {e}; that study's tables are skipped", file=sys.stderr, flush=True)
            continue
        where = sroot.relative_to(root) if sroot != root else Path(sroot.name)
        study = study_of_root(sroot)
        collected = pages.page(f"study-{where}", f"Study {study or where} (`{where}`)")
        reports += _study(sroot, root, names, out, formats, levels, interval_kind, figures, collected)
    runs = runs[~in_study]
    for name in names:
        spec = load_ablation(name)
        sel = sweep_runs(runs, name)
        if sel.empty:
            if name not in studied:
                no_runs.append(name)
            continue
        for experiment in sorted(sel["experiment"].astype(str).unique()):
            _say(f"ablation {name} on {experiment}: {len(sweep_runs(sel, name, experiment))} runs")
            reports.append(ablation_report(runs, spec, experiment, levels, interval_kind))
            collected = pages.page(f"sweep-{name}-{experiment}", f"Ablation {name} on {experiment}")
            _write(reports[-1], out, formats, figures, collected)
    if not ablations:  # runs of no known ablation (plain train.py runs, other tags): one table per folder
        loose = runs[~runs["tags.ablation"].isin(names)] if "tags.ablation" in runs.columns else runs
        folders = [Path(d).parent for d in loose["run_dir"]]
        for folder in sorted(set(folders)):
            sel = loose[[f == folder for f in folders]]
            name = str(folder.relative_to(root)) if folder != root else root.name
            _say(f"runs in {name}: {len(sel)}")
            reports.append(folder_report(sel, name, levels, interval_kind))
            _write(reports[-1], out, formats, False, pages.page(f"runs-{name}", f"Runs in `{name}`"))
            if figures:
                _figure(reports[-1], out)
    for paper in paper_tables():
        have = runs["experiment"].astype(str).eq(paper["experiment"]).any() if "experiment" in runs.columns else False
        if not have:
            _say(f"paper Table {paper['table']} ({paper['experiment']}): no runs of {paper['experiment']}; not built")
            continue
        t = paper_report(paper, runs, interval_kind=interval_kind)
        for fmt in formats:
            (out / f"{t.name}.{fmt}").write_text(RENDERERS[fmt](t))
        pages.page("paper", "The paper's tables beside ours").append(markdown(t))
        _say(f"paper Table {paper['table']} beside ours -> {out / t.name}.*")
    if no_runs:
        _say(f"no runs for ablation(s): {', '.join(no_runs)} (run: python sweep.py ablation=<name>)")
    index = pages.write(out, root)
    _say(f"wrote {pages.tables} tables ({', '.join(formats)}) on {len(pages.pages)} page(s) to {out} in "
         f"{time.perf_counter() - t0:.1f}s; index: {index}")
    return reports


def grouped(root: str | Path, by: str, metrics: Sequence[str] | None = None) -> str:
    """The runs under ``root`` grouped by column ``by``: mean ± 95% t interval over runs, as Markdown."""
    from vipo.results import collect

    df = collect(root)
    if df.empty:
        return f"no runs with summary.json under {root}"
    if by not in df.columns:
        raise SystemExit(f"--by {by}: no such column in the runs under {root}; columns include "
                         + ", ".join(c for c in df.columns if c.startswith(("tags.", "cfg.train.", "experiment"))))
    table = cell_table(df, list(metrics or eval_metrics(df)), by=by)
    return markdown(cells_view(table, f"{root} by {by}: mean ± 95% t interval over runs", row_header=by))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="results", help="folder searched for run folders (summary.json)")
    ap.add_argument("--ablation", nargs="*", default=None, help="only these ablations (default: every one with runs)")
    ap.add_argument("--format", default="md,tex,csv", help="comma-separated: md, tex, csv")
    ap.add_argument("--out", default="analysis/out", help="output folder")
    ap.add_argument("--levels", default=None, help="reward levels of the matched-reward tables, e.g. 0.1,0.2 "
                                                    "(default: 3 levels inside the range every cell covers)")
    ap.add_argument("--interval", default="t", choices=["t", "bootstrap"], help="interval over seeds")
    ap.add_argument("--no-figures", action="store_true", help="skip the curve figures")
    ap.add_argument("--by", default=None, help="only print one table of the runs grouped by this column")
    ap.add_argument("--metrics", nargs="*", default=None, help="with --by: metric columns (default: eval/*)")
    args = ap.parse_args(argv)
    if args.by:
        print(grouped(args.root, args.by, args.metrics))
        return 0
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in RENDERERS]
    if bad:
        ap.error(f"unknown format(s) {bad}; known: {', '.join(RENDERERS)}")
    levels = [float(v) for v in args.levels.split(",")] if args.levels else None
    if not Path(args.root).is_dir():
        print(f"error: results root {args.root} does not exist", file=sys.stderr)
        return 2
    build(args.root, args.out, args.ablation, formats, levels, args.interval, not args.no_figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
