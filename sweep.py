#!/usr/bin/env python
"""Ablation grids and Optuna searches.

    python sweep.py ablation=psm_k [seeds=2] [workers=2] [experiment=...] [other overrides]
    python sweep.py search=toy [trials=N] [other overrides]     # Optuna; run it in several shells for more workers
    python sweep.py ablation=psm_k table                        # only print the table of finished cells
"""

import sys

from vipo.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main())
