#!/usr/bin/env python
"""Ablation grids, studies and Optuna searches.

    python sweep.py ablation=psm_k [seeds=2] [workers=2] [experiment=...] [other overrides]
    python sweep.py search=toy [trials=N] [other overrides]     # Optuna; run it in several shells for more workers
    python sweep.py ablation=psm_k table                        # only print the table of finished cells
    python sweep.py study=toy [workers=2] [seeds=N] [parts=a,b]  # several ablations x rewards x seeds, resumable
    python sweep.py study=toy_confirm freeze                    # write the plan of its confirmatory claims
    python sweep.py search=toy trials                           # the trial table (state, value, parameters)
    python sweep.py ablation=psm_k plan [experiment=flux_hps] [gpus=8 gpu=h100 mfu=0.4]  # cost before launch
    python sweep.py study=toy plan                               # (vipo.plan; docs/costs.md)

Any of them on a SLURM cluster (docs/cluster.md): add launcher=slurm [launcher.partition=gpu ...] [wait=true];
results_root=/shared/results puts the results there instead of results/; search=<name> launcher=slurm workers=N
storage=postgresql://... starts N array tasks on one Optuna database; `status` after study=/ablation=/search=
prints done / running / pending / failed per run.
Any override applies to every run, e.g. logger=wandb (W&B, offline unless logger.mode=online; docs/tracking.md).
The runs are ``vipo.sweep`` / ``vipo.study`` / ``vipo.hpo``; the tables printed at the end are the analysis
layer's (``analysis.report``), built from the summaries.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

# before torch loads: idle OpenMP threads sleep instead of spinning (several runs share the cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vipo.config import ConfigError  # noqa: E402

FLAGS = ("table", "status", "freeze")


def _take(argv: list[str], key: str, default=None):
    for a in list(argv):
        if a.startswith(key + "="):
            argv.remove(a)
            return a.split("=", 1)[1]
    return default


def _int(key: str, value: str, low: int = 1) -> int:
    """A whole-number command-line value, at least ``low``; else a one-line ``ConfigError``."""
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"config error: {key}={value}: not a whole number") from None
    if n < low:
        raise ConfigError(f"config error: {key}={value}: must be at least {low}")
    return n


def _seeds(value: str | None, spec_seeds) -> list[int]:
    """``seeds=N`` (the first N seeds, N >= 1) or ``seeds=[0,3,7]`` (those seeds, each >= 0)."""
    if value is None:
        return list(spec_seeds or [0])
    if value.startswith("["):
        seeds = [_int("seeds", v.strip(), 0) for v in value.strip("[]").split(",") if v.strip()]
        if not seeds:
            raise ConfigError(f"config error: seeds={value}: the list is empty")
        return seeds
    return list(range(_int("seeds", value)))


def _launcher(argv: list[str], workers: int | None):
    """``launcher=<name>`` (default local) with its ``launcher.<key>=<value>`` overrides and ``wait=``."""
    from vipo.launchers import get_launcher, load_options

    name = _take(argv, "launcher", "local")
    overrides = [a for a in argv if a.startswith("launcher.")]
    for a in overrides:
        argv.remove(a)
    wait = _take(argv, "wait")
    if wait is not None:
        overrides.append(f"wait={wait}")
    threads = _take(argv, "threads")
    if threads is not None:
        overrides.append(f"threads={threads}")
    kind = load_options(name)["launcher"]
    extra = {"workers": workers} if kind == "local" and workers is not None else {}
    return get_launcher(name, overrides, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        from vipo.catalog import sweep_help

        print(__doc__.rstrip() + "\n\n" + sweep_help())
        return 0 if argv else 2
    if "plan" in argv:  # cost of every run before launch (vipo.plan)
        from vipo.plan.cli import plan_sweep

        return plan_sweep([a for a in argv if a != "plan"])
    flags = {f for f in FLAGS if f in argv}
    argv = [a for a in argv if a not in FLAGS]
    ablation, search, study = _take(argv, "ablation"), _take(argv, "search"), _take(argv, "study")
    results = _take(argv, "results_root")  # where results/ is for this command: a shared file system on a cluster
    results = Path(results).resolve() if results else None
    try:
        if study and "freeze" in flags:
            from vipo.study import freeze_study

            freeze_study(study)
            return 0
        workers = _take(argv, "workers")
        workers = _int("workers", workers) if workers is not None else None
        if study:
            return _study(study, argv, flags, workers, results)
        if search:
            return _search(search, argv, flags, workers, results)
        if not ablation:
            print("sweep.py needs ablation=<name>, study=<name> or search=<name>", file=sys.stderr)
            return 2
        return _ablation(ablation, argv, flags, workers, results)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2


def _ablation(ablation: str, argv: list[str], flags: set, workers: int | None, results: Path | None) -> int:
    from analysis.render import cells_view, markdown
    from analysis.report import sweep_table
    from vipo.sweep import default_root, load_ablation, run_sweep, sweep_jobs

    spec = load_ablation(ablation)
    seeds = _seeds(_take(argv, "seeds"), spec.get("seeds"))
    launcher = _launcher(argv, workers)
    root = default_root(ablation, argv, results)
    if "status" in flags:
        return _status(sweep_jobs(ablation, seeds, argv, root), root, f"ablation {ablation}")
    failed = []
    if "table" not in flags:
        failed = [c for c in run_sweep(ablation, seeds, argv, root=root, launcher=launcher) if c.status == "failed"]
    cells = sweep_table(ablation, root=root, extra=argv)
    title = f"{spec.get('table', ablation)}: mean ± 95% t interval over seeds"
    print("\n" + (markdown(cells_view(cells, title)) if cells is not None else f"{title}\n(no finished runs)"))
    if "table" in flags:
        from vipo.results import print_failed

        print_failed(root, prefix="[sweep] ")
    if failed:  # a sweep with a failed run is not a success
        print(f"[sweep] {len(failed)} run(s) failed: {', '.join(c.run_dir.name for c in failed)}", file=sys.stderr)
        return 1
    return 0


def _study(name: str, argv: list[str], flags: set, workers: int | None, results: Path | None) -> int:
    from analysis.report import study_tables
    from vipo.study import load_study, run_study, study_jobs, study_root

    spec = load_study(name)
    cap = _take(argv, "seeds")  # seeds=N caps every part at its first N seeds (for a quick pass)
    parts = _take(argv, "parts")  # parts=main,psm_k runs only the runs those parts need (main comparison first)
    launcher = _launcher(argv, workers)
    root = study_root(spec, results=results)
    only = parts.split(",") if parts else None
    cap = _int("seeds", cap) if cap else None
    if "status" in flags:
        jobs, _ = study_jobs(name, argv, root, seeds_cap=cap, only_parts=only)
        return _status(jobs, root, f"study {spec['name']}")
    failed = []
    if "table" not in flags:
        runs = run_study(name, argv, root=root, seeds_cap=cap, only_parts=only, launcher=launcher)
        failed = [r.cell for r in runs if r.cell.status == "failed"]
    print(study_tables(name, root))
    if failed:
        print(f"[study] {len(failed)} run(s) failed: {', '.join(c.run_dir.name for c in failed)}", file=sys.stderr)
        return 1
    return 0


def _search(name: str, argv: list[str], flags: set, workers: int | None, results: Path | None) -> int:
    from vipo.hpo import ROOT, print_trials, run_search, submit_search

    if "trials" in argv:  # `search=<name> trials`: the trial table, nothing runs
        print_trials(name)
        return 0
    trials = _take(argv, "trials")
    storage = _take(argv, "storage")  # a SQLAlchemy URL replacing the spec's (PostgreSQL for workers on a cluster)
    root = (results or ROOT / "results") / "optuna"
    launcher = _launcher(argv, workers)
    n = _int("trials", trials) if trials else None
    if "status" in flags:
        from vipo.hpo import build_study, finished, load_spec

        spec = load_spec(name)
        spec.storage = storage or spec.storage
        study = build_study(spec, root)
        print(f"[status] search {spec.name}: {finished(study)}/{n or spec.n_trials} trials finished")
        jobs = _worker_jobs(root, spec.name)
        return _status(jobs, root, f"search {spec.name} workers") if jobs else 0
    if launcher.name == "local" and (workers or 1) == 1:  # one worker in this process, as before
        run_search(name, argv, root=root, n_trials=n, storage=storage)
        return 0
    submit_search(name, argv, root, workers or 1, launcher, n_trials=n, storage=storage)
    return 0


def _worker_jobs(root: Path, name: str) -> list:
    from vipo.launchers import Job

    folders = sorted((root / f"{name}_workers").glob("w*"))
    return [Job(f, [], resumable=False, done_file=None) for f in folders]


def _status(jobs, root: Path, label: str) -> int:
    from vipo.launchers import format_status, states

    print(format_status(states(jobs), root, label), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
