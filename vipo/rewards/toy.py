"""Classifier-based toy reward: does the image show the prompted object? (a learned in-domain reward)

Uses the *backbone* classifier instance by default, never the judge of ``vipo.eval.toy``, so a run that
optimises this reward is still evaluated by a network it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vipo.rewards.base import Reward
from vipo.rewards.rules import as_frames, per_sample
from vipo.toy.data import prompt_to_label
from vipo.toy.nets import load_classifier


class ToyPromptMatch(Reward):
    """Mean of p(prompted shape) and p(prompted colour) under a toy classifier, in [0, 1]."""

    def __init__(
        self,
        weights: str = "shipped",  # "shipped" (the backbone instance) or a path to classifier weights
        kind: str = "backbone",  # which shipped classifier "shipped" means: backbone | judge
        resolution: int = 32,  # images are resized to the classifier's training size
    ):
        super().__init__()
        self.net = load_classifier(weights, kind=kind)
        self.resolution = resolution

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x, f = as_frames(images)  # [N, 3, H, W]
        if x.shape[-2:] != (self.resolution,) * 2:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
        labels = torch.tensor([prompt_to_label(p) for p in prompts]).repeat_interleave(f, dim=0)  # [N, 2]
        out = self.net(x)
        p_shape = out["shape"].softmax(-1).gather(1, labels[:, :1]).squeeze(1)  # [N]
        p_colour = out["colour"].softmax(-1).gather(1, labels[:, 1:]).squeeze(1)
        return per_sample(0.5 * (p_shape + p_colour), f)  # [B]
