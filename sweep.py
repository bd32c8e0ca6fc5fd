#!/usr/bin/env python
"""Ablation grids, studies and Optuna searches.

    python sweep.py ablation=psm_k [seeds=2] [workers=2] [experiment=...] [other overrides]
    python sweep.py search=toy [trials=N] [other overrides]     # Optuna; run it in several shells for more workers
    python sweep.py ablation=psm_k table                        # only print the table of finished cells
    python sweep.py study=toy [workers=2] [seeds=N] [parts=a,b]  # several ablations x rewards x seeds, resumable
    python sweep.py study=toy status                            # per run: done / running / pending / failed

Any of them on a SLURM cluster (docs/cluster.md): add launcher=slurm [launcher.partition=gpu ...] [wait=true];
results_root=/shared/results puts the results there instead of results/; search=<name> launcher=slurm workers=N
storage=postgresql://... starts N array tasks on one Optuna database.
"""

import sys

from vipo.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main())
