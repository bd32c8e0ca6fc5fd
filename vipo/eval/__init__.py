"""Evaluation: metrics computed on ODE samples during training and by ``python -m vipo.eval``.

An evaluator is built by name from ``EVALUATORS`` with the run's training reward (``reward=``) and maps
``(images [N, 3, (F), H, W] in [0, 1], prompts) -> {metric: float}``; it is a ``vipo.eval.metrics.Metric``,
which also gives per-sample scores in batches (``.scores``) and set-level values (``.finish``).

Names: ``reward`` (the training reward), ``toy`` (judge accuracy, FD, rule rewards), ``videoalign``
(VQ / MQ / TA / overall), and every registered reward under its own name (``hps``, ``pickscore``,
``imagereward``, ``redness``, ...): scorers are training rewards, one registry, one signature.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from vipo.eval.metrics import (Metric, reward_metric_factory, toy_metric, training_reward_metric,
                               videoalign_metric)
from vipo.registry import Registry

Evaluator = Callable[[torch.Tensor, Sequence[str]], dict]
EVALUATORS: Registry[Callable[..., Metric]] = Registry("evaluator")

EVALUATORS.register("reward")(training_reward_metric)
EVALUATORS.register("toy")(toy_metric)
EVALUATORS.register("videoalign")(videoalign_metric)


def _register_rewards() -> None:
    from vipo.rewards import REWARDS

    for name in REWARDS.names():
        if name not in EVALUATORS:
            EVALUATORS.register(name)(reward_metric_factory(name))


_register_rewards()


def metric_names() -> list[str]:
    """Every name ``build_metric`` accepts (evaluators plus rewards registered after import)."""
    from vipo.rewards import REWARDS

    return sorted(set(EVALUATORS.names()) | set(REWARDS.names()))


def build_metric(name: str, reward=None, **kwargs) -> Metric:
    """``EVALUATORS`` entry ``name``, or a ``RewardMetric`` for a reward registered later; else a KeyError
    listing the known metrics."""
    from vipo.rewards import REWARDS

    if name in EVALUATORS:
        return EVALUATORS.build(name, reward=reward, **kwargs)
    if name in REWARDS:
        return reward_metric_factory(name)(reward=reward, **kwargs)
    raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(metric_names())}")
