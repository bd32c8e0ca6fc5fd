"""The anchors' efficiency: published GRPO runs on FLUX (``data/anchors.yaml``) planned by us, and the
model-FLOP utilisation their measured seconds per iteration imply on each candidate GPU.

``python -m vipo.plan.anchors [gpu=a100,h800,h20]`` prints one line per anchor and GPU:
``MFU = (FLOPs per GPU per iteration) / (seconds per iteration x dense bf16 peak)``.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from vipo.plan.arch import DATA
from vipo.plan.gpus import gpu_spec


@lru_cache(maxsize=None)
def anchors() -> dict:
    import yaml

    return yaml.safe_load((DATA / "anchors.yaml").read_text())


def anchor_flops(name: str) -> dict | None:
    """Our cost of one anchor iteration (per GPU), or None when its settings are not all known."""
    from vipo.config import load
    from vipo.plan.estimate import estimate

    a = anchors()[name]
    if not a.get("overrides"):
        return None
    cfg, _ = load(["experiment=flux_hps", *a["overrides"]])
    return estimate(cfg, gpus=a["gpus"]).flops


def implied_mfu(flops_per_gpu: float, seconds: float, gpu: str) -> float:
    return flops_per_gpu / (seconds * gpu_spec(gpu)["bf16_tflops"] * 1e12)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    gpus = next((a.split("=", 1)[1] for a in argv if a.startswith("gpu=")), "a100,h800,h20").split(",")
    for name, a in anchors().items():
        f = anchor_flops(name)
        if f is None:
            print(f"{name}: {a['seconds_per_iteration']} s/iteration on {a['gpus']} GPUs; not planned (settings "
                  "unknown: see vipo/plan/data/anchors.yaml)")
            continue
        achieved = f["total"] / a["seconds_per_iteration"] / 1e12
        mfus = ", ".join(f"{g} {implied_mfu(f['total'], a['seconds_per_iteration'], g):.1%}" for g in gpus)
        print(f"{name}: rollout {f['rollout'] / 1e15:.2f} + reward {f['reward'] / 1e15:.3f} + update "
              f"{f['update'] / 1e15:.2f} = {f['total'] / 1e15:.2f} PFLOP per GPU per iteration in "
              f"{a['seconds_per_iteration']} s = {achieved:.0f} TFLOP/s per GPU; implied MFU: {mfus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
