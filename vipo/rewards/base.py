"""The one reward signature shared by rule-based, toy and learned reward models."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from typing import ContextManager, Iterator, Sequence

import torch
from torch import nn


class Reward(nn.Module, ABC):
    """``reward(images, prompts) -> [B]`` float32 scores, higher is better.

    images: [B, 3, H, W] (or video [B, 3, F, H, W]) float in [0, 1]; prompts: B strings.
    """

    @abstractmethod
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...

    def differentiable_path(self) -> ContextManager[None]:
        """Inside this context the scores have a usable input gradient (``psm.source=saliency`` takes its gradient
        there); outside it the reward scores as configured (the reference path of a learned scorer, which rounds to
        8 bits or goes through PIL). The default: the reward as it is (rule rewards are differentiable already)."""
        return contextlib.nullcontext()

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.dim() not in (4, 5) or images.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__}: expected images [B, 3, H, W] or video [B, 3, F, H, W], "
                f"got shape {tuple(images.shape)}"
            )
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{type(self).__name__}: {images.shape[0]} images but {len(prompts)} prompts")
        return self.score(images, prompts).float()


@contextlib.contextmanager
def attribute_set(obj: object, name: str, value: object) -> Iterator[None]:
    """``obj.name = value`` for the duration of the context, then the value it had (also on an exception)."""
    before = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, before)
