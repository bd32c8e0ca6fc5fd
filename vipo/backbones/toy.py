"""The toy PSM backbone: an intermediate feature map of the shipped toy classifier (backbone instance).

This is a different network from the judge used by ``vipo.eval.toy`` (other seed, width and data
stream), so maps and evaluation do not share a model. ``layer`` picks the stage: ``stage2`` gives a
16x16 grid of 64 channels for 32x32 images (the default), ``stage3`` 8x8 of 128, ``stage1`` 32x32 of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vipo.backbones.base import Backbone
from vipo.toy.nets import ToyClassifier, load_classifier


class ToyBackbone(Backbone):
    def __init__(
        self,
        weights: str | None = "shipped",  # "shipped" | None (random init, for tests) | path to safetensors
        layer: str = "stage2",  # stage1 (H x W) | stage2 (H/2) | stage3 (H/4)
        resolution: int = 32,  # images are resized to this side first (the classifier's training size)
    ):
        super().__init__()
        if layer not in ToyClassifier.STAGES:
            raise ValueError(f"ToyBackbone: unknown layer {layer!r}; choose one of {ToyClassifier.STAGES}")
        net = ToyClassifier() if weights is None else load_classifier(weights, kind="backbone")
        self.net = net.eval().requires_grad_(False)
        self.layer = layer
        self.resolution = resolution

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ToyBackbone expects images [B, 3, H, W], got {tuple(images.shape)}")
        x = images.float()
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
        fmap = self.net.feature_maps(x, upto=self.layer)[self.layer]  # [B, C, h, w]
        return fmap.permute(0, 2, 3, 1).contiguous()  # [B, h, w, C]
