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

Any override applies to every run, e.g. logger=wandb (W&B, offline unless logger.mode=online; docs/tracking.md).
The runs are ``vipo.sweep`` / ``vipo.study`` / ``vipo.hpo``; the tables printed at the end are the analysis
layer's (``analysis.report``), built from the summaries.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

# before torch loads: idle OpenMP threads sleep instead of spinning (several runs share the cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vipo.config import ConfigError  # noqa: E402


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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or "-h" in argv or "--help" in argv:
        from vipo.catalog import sweep_help

        print(__doc__.rstrip() + "\n\n" + sweep_help())
        return 0 if argv else 2
    if "plan" in argv:  # cost of every run before launch (vipo.plan)
        from vipo.plan.cli import plan_sweep

        return plan_sweep([a for a in argv if a != "plan"])
    only_table, freeze = "table" in argv, "freeze" in argv
    argv = [a for a in argv if a not in ("table", "freeze")]
    ablation, search, study = _take(argv, "ablation"), _take(argv, "search"), _take(argv, "study")
    try:
        if study and freeze:
            from vipo.study import freeze_study

            freeze_study(study)
            return 0
        if study:
            return _study(study, argv, only_table)
        if search:
            from vipo.hpo import print_trials, run_search

            if "trials" in argv:  # `search=<name> trials`: the trial table, nothing runs
                print_trials(search)
                return 0
            trials = _take(argv, "trials")
            run_search(search, argv, n_trials=_int("trials", trials) if trials else None)
            return 0
        if not ablation:
            print("sweep.py needs ablation=<name>, study=<name> or search=<name>", file=sys.stderr)
            return 2
        from analysis.render import cells_view, markdown
        from analysis.report import sweep_table
        from vipo.sweep import load_ablation, run_sweep

        spec = load_ablation(ablation)
        seeds = _seeds(_take(argv, "seeds"), spec.get("seeds"))
        workers = _int("workers", _take(argv, "workers", "1"))
        failed = []
        if not only_table:
            failed = [c for c in run_sweep(ablation, seeds, argv, workers=workers) if c.status == "failed"]
        cells = sweep_table(ablation, extra=argv)
        title = f"{spec.get('table', ablation)}: mean ± 95% t interval over seeds"
        print("\n" + (markdown(cells_view(cells, title)) if cells is not None else f"{title}\n(no finished runs)"))
        if only_table:
            from vipo.results import print_failed
            from vipo.sweep import default_root

            print_failed(default_root(ablation, argv), prefix="[sweep] ")
        if failed:  # a sweep with a failed run is not a success
            print(f"[sweep] {len(failed)} run(s) failed: {', '.join(c.run_dir.name for c in failed)}", file=sys.stderr)
            return 1
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


def _study(name: str, argv: list[str], only_table: bool) -> int:
    from vipo.study import load_study, run_study, study_root

    spec = load_study(name)
    workers = _int("workers", _take(argv, "workers", "1"))
    cap = _take(argv, "seeds")  # seeds=N caps every part at its first N seeds (for a quick pass)
    parts = _take(argv, "parts")  # parts=main,psm_k runs only the runs those parts need (main comparison first)
    failed = []
    if not only_table:
        runs = run_study(name, argv, workers=workers, seeds_cap=_int("seeds", cap) if cap else None,
                         only_parts=parts.split(",") if parts else None)
        failed = [r.cell for r in runs if r.cell.status == "failed"]
    from analysis.report import study_tables

    print(study_tables(name, study_root(spec)))
    if failed:
        print(f"[study] {len(failed)} run(s) failed: {', '.join(c.run_dir.name for c in failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
