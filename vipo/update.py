"""The policy update over one rollout: trained timesteps, micro-batches, accumulation, KL, clipping.

Work units are (micro-batch of samples, timestep) pairs. They are split into ``optimizer_steps`` equal
chunks; each chunk accumulates gradients over its units (each loss divided by the chunk size) and ends in
one optimizer step, so the first chunk is exactly on-policy (ratio 1) and later chunks are not.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

from vipo import dist
from vipo.generators.base import Generator, index_cond
from vipo.loss import policy_loss
from vipo.rollout import Rollout, step_logp
from vipo.sde import kl_to_reference, sde_step


class NonFiniteError(RuntimeError):
    """A reward, loss or gradient became NaN or infinite; the run stops and keeps its last checkpoint."""


def select_timesteps(num_steps: int, fraction: float, how: str, gen: torch.Generator) -> list[int]:
    """Which SDE steps to train this iteration: ``first`` k (Flow-GRPO) or a random subset in random order."""
    k = max(1, int(math.ceil(fraction * num_steps - 1e-9)))
    if how == "first":
        return list(range(k))
    return torch.randperm(num_steps, generator=gen)[:k].tolist()


def expand_like(logp: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-sample log-probs [B] against per-position advantages [B, *grid]: repeat over positions."""
    if logp.dim() == 1 and adv.dim() > 1:
        return logp.view(-1, *([1] * (adv.dim() - 1))).expand_as(adv)  # [B, *grid]
    return logp


def update(generator: Generator, optimizer: torch.optim.Optimizer, ro: Rollout, adv: torch.Tensor,
           timesteps: Sequence[int], *, kind: str, noise_level: float, reduction: str, clip_range: float,
           micro_batch: int, optimizer_steps: int, max_grad_norm: Optional[float], kl_coef: float,
           reference_velocity: Optional[Callable] = None, after_step: Optional[Callable] = None,
           per_step: bool = False) -> dict:
    """Run the clipped-objective update; returns the mean of the per-unit stats plus grad norms.
    ``per_step``: ``adv`` is [B, T, *grid], one advantage map per rollout step (timestep t uses ``adv[:, t]``)."""
    params = generator.trainable_parameters()
    b = ro.batch_size
    units = [(t, slice(s, s + micro_batch)) for t in timesteps for s in range(0, b, micro_batch)]
    n_chunks = min(optimizer_steps, len(units))
    bounds = [round(i * len(units) / n_chunks) for i in range(n_chunks + 1)]
    totals: dict[str, float] = {}
    grad_norms = []
    generator.train()
    for c in range(n_chunks):
        chunk = units[bounds[c]:bounds[c + 1]]
        optimizer.zero_grad(set_to_none=True)
        for t, sl in chunk:
            x, x_next = ro.latents[t, sl], ro.latents[t + 1, sl]  # [b, C, (F), H, W]
            s, s_next = float(ro.sigmas[t]), float(ro.sigmas[t + 1])
            cond = index_cond(ro.cond, sl)
            ref = None
            if kl_coef > 0:  # before the policy forward: the reference may swap weights in place
                if reference_velocity is None:
                    raise ValueError("train.kl_coef > 0 needs a reference policy")
                with torch.no_grad():
                    v_ref = reference_velocity(x, torch.full((x.shape[0],), s, device=x.device), cond)
                    ref = sde_step(kind, x, v_ref, s, s_next, noise_level, next_sample=x_next)
            logp, out = step_logp(generator, x, x_next, s, s_next, cond, kind, noise_level, reduction)
            a = adv[sl, t] if per_step else adv[sl]  # [b, *grid] or [b]
            kl = kl_to_reference(out.mean, ref.mean, out.std) if ref is not None else None  # [b, C, (F), H, W]
            loss, stats = policy_loss(expand_like(logp, a), expand_like(ro.logp[t, sl], a), a, clip_range,
                                      kl=kl, kl_coef=kl_coef)
            if not torch.isfinite(loss):
                raise NonFiniteError(f"loss is {loss.item()} at timestep {t}, samples {sl.start}:{sl.stop}")
            (loss / len(chunk)).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v / len(units)
                if k in ("ratio_min",):
                    totals["_ratio_min"] = min(totals.get("_ratio_min", math.inf), v)
                if k in ("ratio_max",):
                    totals["_ratio_max"] = max(totals.get("_ratio_max", -math.inf), v)
        dist.average_gradients(params)
        norm = dist.full(torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else math.inf))
        if not torch.isfinite(norm):
            raise NonFiniteError(f"gradient norm is {norm.item()}")
        grad_norms.append(float(norm))
        optimizer.step()
        if after_step is not None:
            after_step()
    totals["ratio_min"] = totals.pop("_ratio_min")
    totals["ratio_max"] = totals.pop("_ratio_max")
    totals["grad_norm"] = sum(grad_norms) / len(grad_norms)
    totals["optimizer_steps"] = n_chunks
    return totals
