"""Command line of ``sweep.py`` (see its docstring)."""

from __future__ import annotations

import sys
from typing import Sequence

from vipo.config import ConfigError


def _take(argv: list[str], key: str, default=None):
    for a in list(argv):
        if a.startswith(key + "="):
            argv.remove(a)
            return a.split("=", 1)[1]
    return default


def _seeds(value: str | None, spec_seeds) -> list[int]:
    if value is None:
        return list(spec_seeds or [0])
    if value.startswith("["):
        return [int(v) for v in value.strip("[]").split(",") if v.strip()]
    return list(range(int(value)))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        import sweep  # noqa: F401  (only for its docstring when run as a script)

        print(sys.modules["sweep"].__doc__)
        return 0
    only_table = "table" in argv
    only_plan = "plan" in argv
    argv = [a for a in argv if a not in ("table", "plan")]
    ablation, search, study = _take(argv, "ablation"), _take(argv, "search"), _take(argv, "study")
    try:
        if only_plan:
            return _plan(ablation, study, argv)
        if study:
            return _study(study, argv, only_table)
        if search:
            from vipo.hpo import run_search

            trials = _take(argv, "trials")
            run_search(search, argv, n_trials=int(trials) if trials else None)
            return 0
        if not ablation:
            print("sweep.py needs ablation=<name>, study=<name> or search=<name>", file=sys.stderr)
            return 2
        from analysis.render import cells_view, markdown
        from vipo.sweep import load_ablation, run_sweep, table

        spec = load_ablation(ablation)
        seeds = _seeds(_take(argv, "seeds"), spec.get("seeds"))
        workers = int(_take(argv, "workers", "1"))
        if not only_table:
            run_sweep(ablation, seeds, argv, workers=workers)
        cells = table(ablation, extra=argv)
        title = f"{spec.get('table', ablation)}: mean ± 95% t interval over seeds"
        print("\n" + (markdown(cells_view(cells, title)) if cells is not None else f"{title}\n(no finished runs)"))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


def _plan(ablation: str | None, study: str | None, argv: list[str]) -> int:
    """``sweep.py ablation=<name>|study=<name> plan [gpus=N gpu=h100 mfu=0.3 ...]``: cost of every run before launch
    (vipo.plan), written beside the results as plan.json."""
    from pathlib import Path

    from vipo.plan.arch import PlanError
    from vipo.plan.cli import plan_runs, split_options

    try:
        opts, extra = split_options(argv)
        if study:
            from vipo.study import load_study, plan_study, study_root

            spec = load_study(study)
            runs, _ = plan_study(study, extra)
            items = [(f"{r.reward}/{r.cell.run_dir.name}", [*r.cell.overrides, f"train.seed={r.cell.seed}"])
                     for r in runs]
            out = study_root(spec) / "plan.json"
            title = f"study {study}: {len(items)} runs"
        elif ablation:
            from vipo.sweep import cell_overrides, default_root, load_ablation, plan

            spec = load_ablation(ablation)
            seeds = _seeds(_take(extra, "seeds"), spec.get("seeds"))
            root = default_root(ablation, extra)
            cells = plan(ablation, seeds, extra, root)
            items = [(f"{c.name}-s{c.seed}", cell_overrides(c, ablation, root, extra)) for c in cells]
            out = root / "plan.json"
            title = f"ablation {ablation}: {len(items)} runs ({spec.get('table', ablation)})"
        else:
            print("sweep.py plan needs ablation=<name> or study=<name>", file=sys.stderr)
            return 2
        plan_runs(items, opts, title, Path(opts["out"]) if opts["out"] else out)
    except PlanError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


def _study(name: str, argv: list[str], only_table: bool) -> int:
    from vipo.study import load_study, run_study, study_root

    spec = load_study(name)
    workers = int(_take(argv, "workers", "1"))
    cap = _take(argv, "seeds")  # seeds=N caps every part at its first N seeds (for a quick pass)
    parts = _take(argv, "parts")  # parts=main,psm_k runs only the runs those parts need (main comparison first)
    if not only_table:
        run_study(name, argv, workers=workers, seeds_cap=int(cap) if cap else None,
                  only_parts=parts.split(",") if parts else None)
    from vipo.study import print_tables

    print_tables(name, study_root(spec))
    return 0
