#!/usr/bin/env python
"""Ablation grids, studies and Optuna searches.

    python sweep.py ablation=psm_k [seeds=2] [workers=2] [experiment=...] [other overrides]
    python sweep.py search=toy [trials=N] [other overrides]     # Optuna; run it in several shells for more workers
    python sweep.py ablation=psm_k table                        # only print the table of finished cells
    python sweep.py study=toy [workers=2] [seeds=N] [parts=a,b]  # several ablations x rewards x seeds, resumable
"""

import os
import sys

# before torch loads: idle OpenMP threads sleep instead of spinning (several runs share the cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vipo.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main())
