"""What each evaluation metric is: its label, its direction (for the bold "best" cell) and its digits.

A registry, not string switches: add a metric here and every table renders it. Unknown metrics still render,
with no best cell marked (direction unknown).
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class MetricInfo(NamedTuple):
    label: str  # column heading
    higher_is_better: Optional[bool]  # None: direction unknown, no cell is marked best
    digits: int  # decimals shown


METRICS: dict[str, MetricInfo] = {
    "eval/reward": MetricInfo("reward", True, 3),
    "eval/shape_acc": MetricInfo("shape acc.", True, 3),
    "eval/colour_acc": MetricInfo("colour acc.", True, 3),
    "eval/fd": MetricInfo("FD", False, 1),  # Fréchet distance of judge features to real images
    "eval/hps": MetricInfo("HPSv2.1", True, 4),
    "eval/pickscore": MetricInfo("PickScore", True, 4),
    "eval/imagereward": MetricInfo("ImageReward", True, 4),
    "eval/videoalign_vq": MetricInfo("VQ", True, 4),
    "eval/videoalign_mq": MetricInfo("MQ", True, 4),
    "eval/videoalign_ta": MetricInfo("TA", True, 4),
    "eval/videoalign_overall": MetricInfo("VideoAlign", True, 4),
    "eval/vbench_quality": MetricInfo("VBench Quality", True, 4),
    "eval/vbench_semantic": MetricInfo("VBench Semantic", True, 4),
    "eval/vbench_total": MetricInfo("VBench Total", True, 4),
}

# Families by prefix (checked after exact names): the rule rewards the toy metrics also report.
PREFIXES: dict[str, MetricInfo] = {
    "eval/reward_": MetricInfo("", True, 3),
    "eval/vbench_": MetricInfo("", True, 4),  # VBench dimensions (fractions) and partial totals
}


def metric_info(name: str) -> MetricInfo:
    if name in METRICS:
        return METRICS[name]
    for prefix, info in PREFIXES.items():
        if name.startswith(prefix):
            return info._replace(label=name[len("eval/"):])
    return MetricInfo(name.removeprefix("eval/"), None, 3)


def direction(name: str) -> int:
    """+1 higher is better, -1 lower is better, 0 unknown."""
    h = metric_info(name).higher_is_better
    return 0 if h is None else (1 if h else -1)
