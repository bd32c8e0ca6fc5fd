"""Trainer benchmark on the toy world: per-iteration time split, the PSM share of an iteration and the
iteration time for 4 prompts x 8 samples x 10 steps (targets: PSM <= 3%, iteration <= 2 s on 2 cores).

    python bench/bench_train.py [--iterations 6] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vipo.config import load  # noqa: E402
from vipo.records import read_jsonl  # noqa: E402
from vipo.train import run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, raw = load(["experiment=toy_redness", "logger=none", f"train.iterations={args.iterations}",
                         "train.prompts_per_iter=4", "train.group_size=8", "sde.num_steps=10", "eval.every=0",
                         "eval.metrics=[]", "eval.grid_samples=0", f"results_root={tmp}", "run_id=bench",
                         *args.overrides])
        run(cfg, raw)
        rows = [r for r in read_jsonl(Path(tmp) / "bench" / "metrics.jsonl") if r["iteration"] >= 1]  # skip warm-up
    med = {k: statistics.median(r[k] for r in rows) for k in
           ("time_sample", "time_reward", "time_map", "time_update", "time_iter")}
    print(f"toy world, 4 prompts x 8 samples x 10 steps, {len(rows)} timed iterations (median seconds):")
    for k, v in med.items():
        print(f"  {k[5:]:>7}: {v:.3f} s  ({100 * v / med['time_iter']:.1f}% of the iteration)")
    psm_share = med["time_map"] / med["time_iter"]
    print(f"PSM share of an iteration: {100 * psm_share:.2f}% (target <= 3%)")
    print(f"iteration time: {med['time_iter']:.2f} s (target <= 2 s on 2 cores)")
    print(f"BENCH psm_share={psm_share:.4f} iteration_seconds={med['time_iter']:.3f}")


if __name__ == "__main__":
    main()
