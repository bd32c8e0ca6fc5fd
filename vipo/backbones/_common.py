"""What the frozen backbones share: input checks, resizing, normalisation, loading, freezing."""

from __future__ import annotations

import os
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"backbone input must be images [B, 3, H, W] in [0, 1], got {list(images.shape)}")


def check_pretrained(path_or_id: str) -> str:
    """A hub id ("org/name") passes through; a local-looking path must exist (FileNotFoundError naming it)."""
    if os.path.exists(path_or_id):
        return path_or_id
    if path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") > 1 or "\\" in path_or_id:
        raise FileNotFoundError(f"backbone checkpoint path does not exist: {path_or_id!r}")
    return path_or_id


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def short_side_size(h: int, w: int, short: int, multiple: int) -> Tuple[int, int]:
    """Scale (h, w) so the short side is ``short``, keep the aspect ratio, round each side to a
    multiple of ``multiple`` (at least one multiple)."""
    scale = short / min(h, w)
    return tuple(max(multiple, int(round(n * scale / multiple)) * multiple) for n in (h, w))  # type: ignore


def prepare(images: torch.Tensor, size: Tuple[int, int], mean: Sequence[float], std: Sequence[float],
            dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> resized (bilinear, antialiased) and normalised [B, 3, h, w]."""
    x = images.to(device=device, dtype=torch.float32)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)  # [B, 3, h, w]
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)  # [B, 3, h, w]


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


class FrozenBackbone:
    """Mixin: keeps the wrapped network in eval mode whatever ``train()`` is called with."""

    net: nn.Module

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        self.net.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device
