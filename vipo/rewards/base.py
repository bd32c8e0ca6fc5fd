"""The one reward signature shared by rule-based, toy and learned reward models."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch
from torch import nn


class Reward(nn.Module, ABC):
    """``reward(images, prompts) -> [B]`` float32 scores, higher is better.

    images: [B, 3, H, W] (or video [B, 3, F, H, W]) float in [0, 1]; prompts: B strings.
    """

    @abstractmethod
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.dim() not in (4, 5) or images.shape[1] != 3:
            raise ValueError(
                f"{type(self).__name__}: expected images [B, 3, H, W] or video [B, 3, F, H, W], "
                f"got shape {tuple(images.shape)}"
            )
        if len(prompts) != images.shape[0]:
            raise ValueError(f"{type(self).__name__}: {images.shape[0]} images but {len(prompts)} prompts")
        return self.score(images, prompts).float()
