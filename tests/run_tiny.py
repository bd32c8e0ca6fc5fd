"""``python tests/run_tiny.py <overrides>``: train.py with the tiny test components registered.
``python tests/run_tiny.py search <spec.yaml> <root> [--storage URL] <overrides>`` runs an Optuna worker instead;
``python tests/run_tiny.py sweep <ablation> <root> <seeds> <workers> <overrides>`` runs a sweep whose cells run
through this script (exit 1 when a run failed, as ``sweep.py`` does)."""

import sys

import tiny  # noqa: F401
from vipo.cli import main

if __name__ == "__main__":
    if sys.argv[1:2] == ["search"]:
        from vipo.hpo import main as search_worker

        sys.exit(search_worker(sys.argv[2:]))
    if sys.argv[1:2] == ["sweep"]:
        from pathlib import Path

        from vipo.sweep import run_sweep

        ablation, root, seeds, workers, *extra = sys.argv[2:]
        cells = run_sweep(ablation, [int(s) for s in seeds.split(",")], extra, workers=int(workers), root=Path(root),
                          runner=[sys.executable, __file__])
        sys.exit(1 if any(c.status == "failed" for c in cells) else 0)
    sys.exit(main(sys.argv[1:]))
