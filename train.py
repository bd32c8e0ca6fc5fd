#!/usr/bin/env python
"""Train GRPO / ViPO: ``python train.py [overrides]`` (see vipo/cli.py and the README)."""

import os
import sys

# before torch loads: idle OpenMP threads sleep instead of spinning (several runs share the cores)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from vipo.cli import main

if __name__ == "__main__":
    sys.exit(main())
