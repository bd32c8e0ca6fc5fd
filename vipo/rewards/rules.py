"""Rule-based rewards: no model, a formula over pixels (images [B, 3, H, W] or video [B, 3, F, H, W]).

``redness`` is the paper's rule-based reward. The others have spatial structure that a perceptual map
can exploit, because they care about one region of the image (built for the toy world, where the
object is saturated and the background grey, but defined for any image):

- ``object_brightness``: how bright the saturated (object) pixels are -> teaches a brighter object;
- ``uniform_background``: minus the spread of luminance over the grey (background) pixels -> teaches a
  flat background and leaves the object alone;
- ``centred``: minus the distance of the saturation centroid from the image centre -> teaches moving
  the object to the middle.

Saturation ``max(rgb) - min(rgb)`` is the soft object mask: 0 on grey, ~0.7-0.8 on the toy objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vipo.rewards.base import Reward

EPS = 1e-6


def as_frames(images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[B, 3, H, W] -> itself, 1; video [B, 3, F, H, W] -> frames [B*F, 3, H, W], F."""
    if images.dim() == 4:
        return images.float(), 1
    b, c, f, h, w = images.shape
    return images.float().permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), f


def per_sample(frame_scores: torch.Tensor, frames: int) -> torch.Tensor:
    """[B*F] frame scores -> [B] sample scores (mean over frames)."""
    return frame_scores.view(-1, frames).mean(dim=1)


def saturation(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, H, W] max(rgb) - min(rgb)."""
    return x.amax(dim=1) - x.amin(dim=1)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, H, W] Rec. 601 luma."""
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


class Redness(Reward):
    """Mean over pixels of R - (G + B) / 2, in [-1, 1] (the paper's rule-based reward)."""

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x, f = as_frames(images)
        red = x[:, 0] - 0.5 * (x[:, 1] + x[:, 2])  # [N, H, W]
        return per_sample(red.mean(dim=(1, 2)), f)  # [B]


class ObjectBrightness(Reward):
    """Saturation-weighted mean of the HSV value max(rgb): the brightness of the object, in [0, 1]."""

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x, f = as_frames(images)
        w = saturation(x)  # [N, H, W] soft object mask
        value = x.amax(dim=1)  # [N, H, W]
        return per_sample((w * value).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) + EPS), f)  # [B]


class UniformBackground(Reward):
    """Minus the standard deviation of luminance over grey pixels (weight 1 - saturation / 0.25)."""

    def __init__(self, grey_saturation: float = 0.25):  # saturation at which a pixel stops being background
        super().__init__()
        self.grey_saturation = grey_saturation

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x, f = as_frames(images)
        w = (1 - saturation(x) / self.grey_saturation).clamp(min=0)  # [N, H, W] soft background mask
        lum = luminance(x)  # [N, H, W]
        total = w.sum(dim=(1, 2)) + EPS  # [N]
        mean = (w * lum).sum(dim=(1, 2)) / total
        var = (w * (lum - mean.view(-1, 1, 1)) ** 2).sum(dim=(1, 2)) / total
        return per_sample(-(var + 1e-12).sqrt(), f)  # [B]


class Centred(Reward):
    """Minus the distance of the saturation centroid from the centre, in units of the half-diagonal."""

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        x, f = as_frames(images)
        w = saturation(x)  # [N, H, W]
        h, wd = w.shape[-2:]
        ys = torch.linspace(-1, 1, h).view(1, h, 1)  # pixel centres in [-1, 1]
        xs = torch.linspace(-1, 1, wd).view(1, 1, wd)
        total = w.sum(dim=(1, 2)) + EPS  # [N]
        cy, cx = (w * ys).sum(dim=(1, 2)) / total, (w * xs).sum(dim=(1, 2)) / total  # [N]
        return per_sample(-torch.sqrt(cx**2 + cy**2 + 1e-12) / 2**0.5, f)  # [B]
