"""``python tests/run_tiny.py <overrides>``: train.py with the tiny test components registered.
``python tests/run_tiny.py search <spec.yaml> <root> [--storage URL] <overrides>`` runs an Optuna worker instead."""

import sys

import tiny  # noqa: F401
from vipo.cli import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["search"]:
        from vipo.hpo import main as search_worker

        sys.exit(search_worker(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
