"""Group-relative advantages and their redistribution over latent positions.

GRPO: ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` over the G samples of one prompt (group ``g``).
ViPO: ``A_i^p = M_i(p) A_i`` with a perceptual map ``M_i`` >= 0, so the sign of a sample's advantage
is the same at every position. The modes of the paper's ablation are registered in ``ADVANTAGE_MODES``.

The std is the *population* std (``unbiased=False``), as in flow_grpo (``np.std``) and DanceGRPO:
it matches the published numbers and is defined (0) for a group of one sample.
Statistics are always taken over the batch dimension only, separately at each grid position when
the rewards carry a grid (``[B, *grid]``, used by ``map_x_reward``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from vipo.registry import Registry

AdvantageMode = Callable[..., Tensor]
ADVANTAGE_MODES: Registry[AdvantageMode] = Registry("advantage mode")


def _check_rewards(rewards: Tensor, group_ids: Tensor) -> None:
    if rewards.ndim < 1 or rewards.shape[0] == 0:
        raise ValueError(f"rewards must be a non-empty [B] or [B, *grid] tensor, got shape {tuple(rewards.shape)}")
    if group_ids.shape != rewards.shape[:1] or group_ids.dtype.is_floating_point:
        raise ValueError(f"group_ids must be an integer tensor of shape [B={rewards.shape[0]}], got "
                         f"{group_ids.dtype} {tuple(group_ids.shape)}")
    bad = ~torch.isfinite(rewards).flatten(1).all(dim=1) if rewards.ndim > 1 else ~torch.isfinite(rewards)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()
        raise ValueError(f"{len(idx)} non-finite reward(s) (NaN/inf) at batch indices {idx}")


def _group_stats(r: Tensor, inv: Tensor, n_groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group mean, population std and 'all rewards equal' flag, each [G, *grid]."""
    grid = r.shape[1:]
    count = torch.bincount(inv, minlength=n_groups).to(r.dtype).reshape(-1, *[1] * len(grid))  # [G, 1..]
    mean = r.new_zeros(n_groups, *grid).index_add_(0, inv, r) / count  # [G, *grid]
    var = r.new_zeros(n_groups, *grid).index_add_(0, inv, (r - mean[inv]) ** 2) / count  # [G, *grid]
    idx = inv.reshape(-1, *[1] * len(grid)).expand_as(r)  # [B, *grid]
    hi = r.new_full((n_groups, *grid), -torch.inf).scatter_reduce_(0, idx, r, "amax")  # [G, *grid]
    lo = r.new_full((n_groups, *grid), torch.inf).scatter_reduce_(0, idx, r, "amin")  # [G, *grid]
    return mean, var.sqrt(), hi == lo


def group_normalize(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6,
                    std_mode: str = "local") -> Tensor:
    """(r - group mean) / (std + eps), float32, same shape as ``rewards`` ([B] or [B, *grid]).

    ``std_mode``: "local" = std within the group, "global" = std over the whole batch (the mean is
    always the group's). A group whose rewards are all equal gets exactly 0 (never NaN).
    """
    _check_rewards(rewards, group_ids)
    if std_mode not in ("local", "global"):
        raise ValueError(f"std_mode must be 'local' or 'global', got {std_mode!r}")
    r = rewards.to(torch.float64)  # [B, *grid]; float64 statistics, float32 result
    _, inv = torch.unique(group_ids, return_inverse=True)  # [B] in 0..G-1
    mean, std, flat = _group_stats(r, inv, int(inv.max()) + 1)  # each [G, *grid]
    std = r.std(dim=0, unbiased=False, keepdim=True) if std_mode == "global" else std[inv]
    adv = (r - mean[inv]) / (std + eps)  # [B, *grid]
    return torch.where(flat[inv], torch.zeros_like(adv), adv).to(torch.float32)


def zero_std_fraction(rewards: Tensor, group_ids: Tensor) -> float:
    """Fraction of groups whose rewards are all equal (they give no learning signal)."""
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [B], got shape {tuple(rewards.shape)}")
    _check_rewards(rewards, group_ids)
    _, inv = torch.unique(group_ids, return_inverse=True)  # [B]
    *_, flat = _group_stats(rewards.to(torch.float64), inv, int(inv.max()) + 1)  # [G]
    return float(flat.double().mean())


# ----------------------------------------------------------------------------------- modes
def _expand(a: Tensor, maps: Tensor) -> Tensor:
    return a.reshape(-1, *[1] * (maps.ndim - 1))  # [B] -> [B, 1, ..., 1]


@ADVANTAGE_MODES.register("scalar")
def _scalar(rewards, group_ids, maps, normalize=group_normalize, **kw) -> Tensor:
    return normalize(rewards, group_ids, **kw)  # [B]: plain GRPO, maps ignored


@ADVANTAGE_MODES.register("map_x_advantage")
def _map_x_advantage(rewards, group_ids, maps, normalize=group_normalize, **kw) -> Tensor:
    adv = normalize(rewards, group_ids, **kw)  # [B]
    return maps * _expand(adv, maps)  # [B, *grid]: ViPO, A_i^p = M_i(p) A_i


@ADVANTAGE_MODES.register("map_x_reward")
def _map_x_reward(rewards, group_ids, maps, normalize=group_normalize, **kw) -> Tensor:
    if normalize is not group_normalize:
        raise ValueError("advantage mode 'map_x_reward' normalises per position and cannot combine "
                         "per-component advantages; use advantage.combine=rewards")
    r_p = maps * _expand(rewards.to(maps.dtype), maps)  # [B, *grid]: r_i^p = M_i(p) r_i
    return group_normalize(r_p, group_ids, **kw)  # normalised per position


@ADVANTAGE_MODES.register("ones")
def _ones(rewards, group_ids, maps, normalize=group_normalize, **kw) -> Tensor:
    adv = normalize(rewards, group_ids, **kw)  # [B]
    return _expand(adv, maps).expand(maps.shape).clone()  # [B, *grid]: M = 1, per-position ratios


_NEEDS_MAPS = {"map_x_advantage", "map_x_reward", "ones"}


def redistribute(mode: str, rewards: Tensor | dict[str, Tensor], group_ids: Tensor, maps: Tensor | None, *,
                 clamp: float | None = 5.0, eps: float = 1e-6, std_mode: str = "local",
                 weights: dict[str, float] | None = None) -> Tensor:
    """Advantages for ``mode`` in ``ADVANTAGE_MODES``: "scalar" -> [B]; the others -> [B, *grid].

    ``rewards`` [B] (finite), or a dict of reward components name -> [B] that are group-normalised one by
    one and summed with ``weights`` (``combine_advantages``); ``group_ids`` [B]; ``maps`` [B, *grid] (finite;
    only its shape is used by "ones"). The result is float32, clamped to [-clamp, clamp] unless ``clamp`` is None.
    """
    fn = ADVANTAGE_MODES.get(mode)
    normalize = group_normalize
    if isinstance(rewards, dict):
        components = rewards
        for name, r in components.items():
            _check_rewards(r, group_ids)

        def normalize(_r, gids, **kw):  # noqa: F811
            return combine_advantages(components, weights, gids, **kw)

        rewards = sum(components.values())  # [B]: only for the shape checks below
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [B], got shape {tuple(rewards.shape)}")
    _check_rewards(rewards, group_ids)
    if mode in _NEEDS_MAPS:
        if maps is None:
            raise ValueError(f"advantage mode {mode!r} needs maps [B, *grid], got None")
        if maps.ndim < 2 or maps.shape[0] != rewards.shape[0]:
            raise ValueError(f"maps must be [B={rewards.shape[0]}, *grid], got shape {tuple(maps.shape)}")
        if not bool(torch.isfinite(maps).all()):
            raise ValueError(f"maps contain {int((~torch.isfinite(maps)).sum())} non-finite value(s)")
        maps = maps.to(torch.float32)
    adv = fn(rewards, group_ids, maps, normalize=normalize, eps=eps, std_mode=std_mode)
    if clamp is not None:
        if not clamp > 0:
            raise ValueError(f"clamp must be > 0 or None, got {clamp}")
        adv = adv.clamp(-clamp, clamp)
    return adv


# ------------------------------------------------------------------------- multi-reward, advantage level
def combine_advantages(rewards: dict[str, Tensor], weights: dict[str, float] | None, group_ids: Tensor, *,
                       eps: float = 1e-6, std_mode: str = "local") -> Tensor:
    """``A_i = sum_k w_k (r_k,i - mean_g(r_k)) / (std_g(r_k) + eps)``: each reward group-normalised on its own.

    The advantage-level alternative to ``MultiReward`` (which sums raw rewards, so the reward with the
    largest spread dominates): components on different scales count by their weights only.
    ``rewards``: component name -> [B]; ``weights``: name -> weight (missing names weigh 1). Returns [B] float32.
    """
    if not rewards:
        raise ValueError("combine_advantages needs at least one reward component")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(rewards))
    if unknown:
        raise KeyError(f"combine_advantages: weights for unknown components {unknown}; components: {sorted(rewards)}")
    total = None
    for name, r in rewards.items():
        if r.ndim != 1:
            raise ValueError(f"reward component {name!r} must be [B], got shape {tuple(r.shape)}")
        adv = float(weights.get(name, 1.0)) * group_normalize(r, group_ids, eps=eps, std_mode=std_mode)  # [B]
        if total is not None and adv.shape != total.shape:
            raise ValueError(f"reward component {name!r} has {adv.shape[0]} samples, expected {total.shape[0]}")
        total = adv if total is None else total + adv.to(total.device)  # [B]
    return total
