"""Evaluation: metrics computed on ODE samples during training and by ``python -m vipo.eval``.

An evaluator is built by name from ``EVALUATORS`` with the run's training reward, and maps
``(images [N, 3, H, W] in [0, 1], prompts) -> {metric: float}``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from vipo.registry import Registry

Evaluator = Callable[[torch.Tensor, Sequence[str]], dict]
EVALUATORS: Registry[Callable[..., Evaluator]] = Registry("evaluator")


@EVALUATORS.register("reward")
def _reward_evaluator(reward=None, **_) -> Evaluator:
    def evaluate(images: torch.Tensor, prompts: Sequence[str]) -> dict:
        r = reward(images, list(prompts))  # [N]
        return {"reward": float(r.mean()), "reward_std": float(r.std(unbiased=False))}

    return evaluate


@EVALUATORS.register("toy")
def _toy_evaluator(**_) -> Evaluator:
    from vipo.eval.toy import ToyEvaluator

    ev = ToyEvaluator()
    return lambda images, prompts: ev.evaluate(images, list(prompts))
