"""The Backbone interface: frozen vision features on a patch grid for the PSM."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Backbone(nn.Module, ABC):
    """Frozen feature extractor. Does its own resizing and normalisation."""

    @abstractmethod
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1] -> patch features [B, h, w, C] (no CLS token), float32."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)
