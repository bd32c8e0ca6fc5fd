"""Where advantage maps come from (``psm.source``): the PSM over a backbone, all ones, random, the reward's
input gradient (``saliency``, vipo/saliency.py), the toy world's object mask (``oracle``, background only:
``oracle_inverse``; vipo/toy/segment.py) or the generator's own prompt attention (``attention``,
vipo/attention.py, captured during the rollout: ``map_capture``).

Every source takes decoded images (``[B, 3, H, W]``, or video ``[B, 3, F, H, W]``) and returns maps on the
generator's map grid: ``[B, H', W']`` or ``[B, F', H', W']`` with values in ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

from vipo.psm import PSMConfig, build_maps, build_video_maps
from vipo.registry import Registry

MapFn = Callable[..., torch.Tensor]
MAP_SOURCES: Registry[MapFn] = Registry("map source")
MAP_SOURCES.register_lazy("saliency", "vipo.saliency:saliency_maps")
MAP_SOURCES.register_lazy("attention", "vipo.attention:attention_maps")
MAP_SOURCES.register_lazy("oracle", "vipo.toy.segment:oracle_maps")  # toy world: the object's own pixels
MAP_SOURCES.register_lazy("oracle_inverse", "vipo.toy.segment:oracle_inverse_maps")  # toy world: background only
# source -> check(cfg) raising ValueError when the rest of the config cannot serve it (config time)
MAP_CHECKS: Registry[Callable] = Registry("map source check")
MAP_CHECKS.register_lazy("saliency", "vipo.saliency:check_config")
MAP_CHECKS.register_lazy("attention", "vipo.attention:check_config")
MAP_CHECKS.register_lazy("oracle", "vipo.toy.segment:check_config")
MAP_CHECKS.register_lazy("oracle_inverse", "vipo.toy.segment:check_config")
# source -> capture(generator, cfg, prompts, num_steps, generator_name): a context manager around the rollout
MAP_CAPTURES: Registry[Callable] = Registry("map capture")
MAP_CAPTURES.register_lazy("attention", "vipo.attention:attention_capture")


@MAP_SOURCES.register("backbone")
@torch.no_grad()
def backbone_maps(images: torch.Tensor, grid: tuple[int, ...], cfg: PSMConfig, *, backbone=None,
                  gen: Optional[torch.Generator] = None, **_) -> torch.Tensor:
    if backbone is None:
        raise ValueError("psm.source=backbone needs a backbone")
    if images.dim() == 4:
        feats = backbone.features(images)  # [B, h, w, C]
        return build_maps(feats, tuple(grid[-2:]), cfg)  # [B, H', W']
    b, _, f = images.shape[:3]
    frames = images.permute(0, 2, 1, 3, 4).reshape(b * f, *images.shape[1:2], *images.shape[3:])  # [B*F, 3, H, W]
    feats = backbone.features(frames)  # [B*F, h, w, C]
    feats = feats.reshape(b, f, *feats.shape[1:])  # [B, F, h, w, C]
    return build_video_maps(feats, tuple(grid), cfg)  # [B, F', H', W']


@MAP_SOURCES.register("ones")
def ones_maps(images: torch.Tensor, grid: tuple[int, ...], cfg: PSMConfig, **_) -> torch.Tensor:
    return torch.ones(images.shape[0], *grid, device=images.device)  # [B, *grid]


@MAP_SOURCES.register("random")
def random_maps(images: torch.Tensor, grid: tuple[int, ...], cfg: PSMConfig, *,
                gen: Optional[torch.Generator] = None, **_) -> torch.Tensor:
    """Uniform noise, a control with the same range as PSM maps but no relation to the image."""
    return torch.rand(images.shape[0], *grid, generator=gen).to(images.device)  # [B, *grid]


def make_maps(source: str, images: torch.Tensor, grid: tuple[int, ...], cfg: PSMConfig, **kw) -> torch.Tensor:
    """Maps [B, *grid], or [B, T, *grid] (one per rollout step) from a per-step source."""
    maps = MAP_SOURCES.get(source)(images, grid, cfg, **kw)
    b, n = images.shape[0], len(grid)
    if maps.shape[0] != b or tuple(maps.shape[-n:]) != tuple(grid) or maps.ndim not in (n + 1, n + 2):
        raise ValueError(f"map source {source!r} returned {tuple(maps.shape)}, expected {(b, *grid)} "
                         f"or {(b, 'T', *grid)}")
    return maps


def map_capture(source: str, generator, cfg: PSMConfig, prompts, num_steps: int, generator_name: str):
    """What ``source`` records during the rollout (a context manager; ``nullcontext`` when nothing)."""
    if source not in MAP_CAPTURES:
        return contextlib.nullcontext()
    return MAP_CAPTURES.get(source)(generator, cfg, prompts, num_steps, generator_name)
