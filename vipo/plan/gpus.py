"""GPUs as data (``data/gpus.yaml``: dense bf16 peak, memory, source) and time from FLOPs at a stated MFU."""

from __future__ import annotations

import math
from functools import lru_cache

from vipo.plan.arch import DATA, PlanError

DEFAULT_MFU = 0.40  # MFU assumed when none is given: the DanceGRPO and MixGRPO anchors imply 39-40% if their GPUs were A100s (docs/costs.md)


@lru_cache(maxsize=None)
def gpus() -> dict:
    import yaml

    return yaml.safe_load((DATA / "gpus.yaml").read_text())


def gpu_spec(name: str) -> dict:
    key = str(name).lower()
    if key not in gpus():
        raise PlanError(f"plan error: unknown GPU {name!r}; known: {', '.join(gpus())}")
    return gpus()[key]


def seconds(flops: float, gpu: str, mfu: float) -> float:
    """Wall seconds for ``flops`` on one ``gpu`` running at ``mfu`` of its dense bf16 peak."""
    if not 0 < mfu <= 1:
        raise PlanError(f"plan error: mfu must be in (0, 1], got {mfu}")
    return flops / (mfu * gpu_spec(gpu)["bf16_tflops"] * 1e12)


def slurm_resources(gpus_: int, hours: float, host_gb: float, margin: float = 1.5, gpus_per_node: int = 8) -> dict:
    """Resources of one run in hydra-submitit-launcher's ``submitit_slurm`` parameter names: one task per GPU,
    a time limit of ``margin`` x the estimate plus 15 minutes (start-up, checkpoints), host memory per node."""
    per_node = min(gpus_, gpus_per_node)
    nodes = math.ceil(gpus_ / per_node)
    return {"nodes": nodes, "gpus_per_node": per_node, "tasks_per_node": per_node, "cpus_per_task": 8,
            "mem_gb": int(math.ceil(host_gb)), "timeout_min": int(math.ceil(hours * 60 * margin + 15))}
