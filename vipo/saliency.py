"""Reward-saliency maps (``psm.source=saliency``): where the reward's own input gradient is large.

Per sample: ``g = d r / d image`` on the decoded image (the generator is not involved: the images are
leaves), optionally SmoothGrad (the mean gradient over ``smooth_n`` copies with Gaussian pixel noise of
std ``smooth_std``) -> reduced over channels (``abs``: mean |g|; ``grad_x_input``: |sum_c g x|) ->
Gaussian blur at image resolution (``blur_sigma`` latent cells) -> bilinear antialiased resize to the
latent grid -> per-sample min-max (``psm.finish``: a map with no contrast becomes all ones). Video: the
same per frame, frames resampled to the latent frames and blurred in time as the PSM does.

A reward that is linear in the pixels with one weight per channel, like ``redness``
(``mean(R - (G + B) / 2)``), has the same gradient at every pixel, so its ``abs`` map is all ones by
construction; its ``grad_x_input`` map is the per-pixel redness ``|R - (G + B) / 2|``.

The gradient is taken on the reward's differentiable path (``Reward.differentiable_path``: HPSv2.1 without its
8-bit rounding, PickScore and ImageReward with float preprocessing instead of PIL), while the rewards that score
the samples, for the advantages and for evaluation, stay on the configured (reference) path: every cell of an
ablation optimises and is judged on the same scorer, and only the map comes from the approximation. Which rewards
have a usable input gradient is recorded in ``DIFFERENTIABLE_REWARDS`` (reward name -> check of its config
kwargs); any other reward is refused at config time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from vipo.psm import PSMConfig, finish, gaussian_blur1d, unit_peak
from vipo.registry import Registry

REDUCTIONS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("saliency reduction")
# reward name -> check(kwargs) returning None when its input gradient is usable, else the reason it is not
DIFFERENTIABLE_REWARDS: Registry[Callable[[Mapping[str, Any]], Optional[str]]] = Registry("differentiable reward")


@dataclass
class SaliencyConfig:
    reduce: str = "abs"  # channels -> one value: abs (mean |grad|) | grad_x_input (|sum_c grad * pixel|)
    smooth_n: int = 0  # SmoothGrad: noisy copies averaged; 0 = the plain gradient
    smooth_std: float = 0.1  # SmoothGrad pixel-noise std (images in [0, 1])
    blur_sigma: float = 1.0  # Gaussian blur std in latent-grid cells, applied at image resolution; 0 = off
    micro_batch: int = 8  # images per reward forward/backward

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"saliency.reduce={self.reduce!r}; known: {REDUCTIONS.names()}")
        if self.smooth_n < 0 or self.micro_batch < 1:
            raise ValueError(f"saliency.smooth_n must be >= 0 and saliency.micro_batch >= 1, got "
                             f"{self.smooth_n}, {self.micro_batch}")
        if not (self.smooth_std >= 0 and self.blur_sigma >= 0):
            raise ValueError(f"saliency.smooth_std and saliency.blur_sigma must be >= 0, got "
                             f"{self.smooth_std}, {self.blur_sigma}")


@REDUCTIONS.register("abs")
def _abs(grad: Tensor, x: Tensor) -> Tensor:
    return grad.abs().mean(1)  # [N, H, W]


@REDUCTIONS.register("grad_x_input")
def _grad_x_input(grad: Tensor, x: Tensor) -> Tensor:
    return (grad * x).sum(1).abs()  # [N, H, W]


# ----------------------------------------------------------------------------------- which rewards
def _always(kwargs: Mapping[str, Any]) -> Optional[str]:
    return None


# the rule rewards and the toy classifier as they are; the learned scorers through their differentiable path
# (whatever reward.quantize / reward.preprocess say: those choose the path that scores)
for _name in ("redness", "object_brightness", "uniform_background", "centred", "toy_match", "hps", "pickscore",
              "imagereward"):
    DIFFERENTIABLE_REWARDS.register(_name)(_always)


@DIFFERENTIABLE_REWARDS.register("multi")
def _multi(kwargs: Mapping[str, Any]) -> Optional[str]:
    """The weighted sum is differentiable when every component is."""
    for key, spec in (kwargs.get("rewards") or {}).items():
        spec = dict(spec or {}) if isinstance(spec, Mapping) else {}
        name = spec.pop("name", key)
        why = why_not_differentiable(name, spec)
        if why:
            return f"component {key!r}: {why}"
    return None


def why_not_differentiable(name: str, kwargs: Mapping[str, Any]) -> Optional[str]:
    """None when reward ``name`` built with ``kwargs`` has a usable input gradient, else the reason."""
    if name not in DIFFERENTIABLE_REWARDS:
        return (f"reward {name!r} has no usable input gradient (differentiable rewards: "
                f"{', '.join(DIFFERENTIABLE_REWARDS.names())})")
    why = DIFFERENTIABLE_REWARDS.get(name)(kwargs)
    return f"reward {name!r}: {why}" if why else None


def check_config(cfg) -> None:
    """Config-time check for ``psm.source=saliency`` (``vipo.config`` calls it): the reward must be differentiable."""
    why = why_not_differentiable(cfg.reward.name, cfg.reward.kwargs)
    if why:
        raise ValueError(f"psm.source=saliency needs a differentiable reward; {why}")


# ----------------------------------------------------------------------------------- maps
def input_gradient(reward, images: Tensor, prompts, cfg: SaliencyConfig,
                   gen: Optional[torch.Generator] = None) -> Tensor:
    """d reward / d images, same shape as ``images`` (SmoothGrad mean when ``cfg.smooth_n > 0``).

    Samples are scored independently, so the gradient of the summed rewards is each sample's own.
    Reward parameters get no ``.grad`` (``torch.autograd.grad`` on the images only).
    """
    copies = max(cfg.smooth_n, 1)
    grads = torch.zeros_like(images, dtype=torch.float32)  # [B, 3, (F), H, W]
    kept = getattr(reward, "last_components", None)  # a multi reward's logged parts: not ours to overwrite
    path = getattr(reward, "differentiable_path", contextlib.nullcontext)  # the scores outside stay on the reference path
    with path(), torch.enable_grad():
        for start in range(0, images.shape[0], cfg.micro_batch):
            sl = slice(start, start + cfg.micro_batch)
            for _ in range(copies):
                x = images[sl].detach().float()  # [b, 3, (F), H, W]
                if cfg.smooth_n > 0:
                    noise = torch.randn(x.shape, generator=gen).to(x.device)
                    x = x + cfg.smooth_std * noise
                x.requires_grad_(True)
                r = reward(x, list(prompts[sl]))  # [b]
                if not r.requires_grad:
                    raise ValueError(f"psm.source=saliency: reward {type(reward).__name__} returned scores "
                                     "without a gradient (does it detach, round or leave torch?)")
                (g,) = torch.autograd.grad(r.sum(), x)
                grads[sl] += g / copies
    if kept is not None:
        reward.last_components = kept
    return grads


def saliency_maps(images: Tensor, grid: tuple[int, ...], cfg: PSMConfig, *, reward=None, prompts=None,
                  gen: Optional[torch.Generator] = None, **_) -> Tensor:
    """Decoded images [B, 3, H, W] (video [B, 3, F, H, W]) -> maps [B, *grid] in [0, 1]."""
    if reward is None or prompts is None:
        raise ValueError("psm.source=saliency needs the reward and the prompts")
    sc = getattr(cfg, "saliency", None) or SaliencyConfig()
    grad = input_gradient(reward, images, prompts, sc, gen)  # [B, 3, (F), H, W]
    video = images.dim() == 5
    x = images.float()
    if video:  # frames as a batch of images
        b, _, f = images.shape[:3]
        grad, x = (t.permute(0, 2, 1, 3, 4).flatten(0, 1) for t in (grad, x))  # [B*F, 3, H, W]
    s = REDUCTIONS.get(sc.reduce)(grad, x)  # [N, H, W]
    H, W = grid[-2:]
    px = sc.blur_sigma * s.shape[-1] / W  # latent cells -> image pixels
    s = gaussian_blur1d(gaussian_blur1d(s, px, -2), px, -1)
    m = F.interpolate(s[:, None], size=(H, W), mode="bilinear", align_corners=False, antialias=True)[:, 0]  # [N, H', W']
    if not video:
        return finish(unit_peak(m), cfg.normalize)  # [B, H', W']
    m = m.reshape(b, f, H, W)  # [B, F, H', W']
    f_lat = grid[0]
    if f != f_lat:  # as the PSM: linear in time, end frames aligned
        m = F.interpolate(m[:, None], size=(f_lat, H, W), mode="trilinear", align_corners=True)[:, 0]
    if f_lat > 1:
        m = gaussian_blur1d(m, cfg.temporal_sigma, 1)  # [B, F_lat, H', W']
    return finish(unit_peak(m), cfg.normalize)
