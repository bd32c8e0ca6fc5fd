"""``python tests/run_tiny.py <overrides>``: train.py with the tiny test components registered.
``python tests/run_tiny.py search <spec.yaml> <overrides>`` runs an Optuna worker instead."""

import sys

import tiny  # noqa: F401
from vipo.cli import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["search"]:
        from pathlib import Path

        from vipo.hpo import run_search

        spec, root, *extra = sys.argv[2:]
        run_search(spec, extra, root=Path(root))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
