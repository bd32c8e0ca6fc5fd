#!/usr/bin/env python
"""Train GRPO / ViPO: ``python train.py [overrides]`` (see vipo/cli.py and the README)."""

import sys

from vipo.cli import main

if __name__ == "__main__":
    sys.exit(main())
