"""Costs of the map sources beyond the PSM: the reward-saliency map's share of a toy iteration, and the
attention capture's overhead on the tiny FLUX rollout (it must not add a forward pass).

1. Toy world, 4 prompts x 8 samples x 10 steps, reward toy_match (a CNN classifier): median ``time_map``
   over the timed iterations for psm.source=backbone and psm.source=saliency (plain and SmoothGrad 4).
2. Tiny FLUX (tests/tiny_models.py), 4 prompts x 2 samples x 10 steps: rollout time with and without the
   capture (all layers, all steps) and the transformer forward calls of each.

    python bench/bench_maps.py [--iterations 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from vipo.config import load  # noqa: E402
from vipo.records import read_jsonl  # noqa: E402
from vipo.train import run  # noqa: E402


def toy_split(iterations: int, *overrides: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg, raw = load(["experiment=toy_redness", "reward=toy_match", "logger=none", f"train.iterations={iterations}",
                         "train.prompts_per_iter=4", "train.group_size=8", "sde.num_steps=10", "eval.every=0",
                         "eval.metrics=[]", "eval.grid_samples=0", f"results_root={tmp}", "run_id=bench", *overrides])
        run(cfg, raw)
        rows = [r for r in read_jsonl(Path(tmp) / "bench" / "metrics.jsonl") if r["iteration"] >= 1]  # skip warm-up
    return {k: statistics.median(r[k] for r in rows) for k in ("time_map", "time_iter")}


def flux_capture(repeats: int = 3) -> tuple[float, float, int, int]:
    import tiny_models

    from vipo.attention import attention_capture
    from vipo.config import MapConfig
    from vipo.rollout import rollout

    gen = tiny_models.tiny_flux()
    prompts = ["a red cat", "a blue ball", "a green tree", "a big white house"]
    rows = [p for p in prompts for _ in range(2)]
    calls: list = []
    gen.transformer.register_forward_pre_hook(lambda *a: calls.append(1))

    def once(capture: bool) -> tuple[float, int]:
        calls.clear()
        tic = time.perf_counter()
        kw = dict(kind="flow_grpo", noise_level=0.7, reduction="position", micro_batch=8,
                  gen=torch.Generator().manual_seed(0))
        if capture:
            with attention_capture(gen, MapConfig(), rows, 10, "flux") as cap:
                rollout(gen, prompts, 2, gen.sigmas(10), **kw)
            cap.maps(gen.map_grid(), MapConfig())
        else:
            rollout(gen, prompts, 2, gen.sigmas(10), **kw)
        return time.perf_counter() - tic, len(calls)

    once(False), once(True)  # warm-up
    plain = [once(False) for _ in range(repeats)]
    captured = [once(True) for _ in range(repeats)]
    return (statistics.median(t for t, _ in plain), statistics.median(t for t, _ in captured),
            plain[0][1], captured[0][1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=4)
    args = ap.parse_args()
    print(f"toy world, reward toy_match, 4 prompts x 8 samples x 10 steps, {args.iterations - 1} timed iterations "
          "(median seconds):")
    shares = {}
    for label, ov in [("backbone", []), ("saliency", ["psm.source=saliency"]),
                      ("saliency smooth_n=4", ["psm.source=saliency", "psm.saliency.smooth_n=4"])]:
        t = toy_split(args.iterations, *ov)
        shares[label] = t["time_map"] / t["time_iter"]
        print(f"  {label:>20}: map {t['time_map']:.3f} s of {t['time_iter']:.3f} s  ({100 * shares[label]:.1f}%)")
    plain, captured, n_plain, n_captured = flux_capture()
    overhead = captured / plain - 1
    print(f"tiny FLUX rollout, 4 prompts x 2 samples x 10 steps: {plain * 1e3:.1f} ms plain, {captured * 1e3:.1f} ms "
          f"with attention capture (+{100 * overhead:.0f}%); transformer forwards {n_plain} vs {n_captured}")
    print(f"BENCH saliency_share={shares['saliency']:.4f} saliency_smooth4_share={shares['saliency smooth_n=4']:.4f} "
          f"attention_overhead={overhead:.3f} attention_extra_forwards={n_captured - n_plain}")


if __name__ == "__main__":
    main()
