"""Sampling a group of outputs with per-position log-probs, over any ``Generator``.

The rollout scores each drawn transition through the same ``sde_step(..., next_sample=...)`` path that
``step_logp`` uses in the update, with the same micro-batches, so on-policy ratios come out as 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from vipo.generators.base import Cond, Generator, index_cond, repeat_cond
from vipo.sde import StepOut, reduce_logp, sde_step


@dataclass
class Rollout:
    prompts: list[str]  # B prompts, each repeated G times consecutively
    group_ids: torch.Tensor  # [B] long: index of the prompt within this batch
    cond: Cond  # batch-first condition tensors, B rows
    sigmas: torch.Tensor  # [T+1]
    latents: torch.Tensor  # [T+1, B, C, (F), H, W] x_0 = noise ... x_T = final sample
    logp: torch.Tensor  # [T, B, *grid] (position) or [T, B] (sample)

    @property
    def batch_size(self) -> int:
        return self.latents.shape[1]


def step_logp(generator: Generator, x: torch.Tensor, x_next: torch.Tensor, sigma: float, sigma_next: float,
              cond: Cond, kind: str, noise_level: float, reduction: str) -> tuple[torch.Tensor, StepOut]:
    """Log-prob of the transition x -> x_next under the current policy, reduced as configured."""
    b = x.shape[0]
    s = torch.full((b,), float(sigma), device=x.device)  # [B]
    v = generator.velocity(x, s, cond)  # [B, C, (F), H, W]
    out = sde_step(kind, x, v, sigma, sigma_next, noise_level, next_sample=x_next)
    return reduce_logp(out.logp, reduction), out  # [B, *grid] or [B]


def initial_noise(num_prompts: int, group_size: int, shape: Sequence[int], gen: torch.Generator,
                  same_in_group: bool) -> torch.Tensor:
    """Standard normal start latents, drawn on the CPU so results do not depend on the device."""
    if same_in_group:
        x = torch.randn(num_prompts, *shape, generator=gen)  # [P, C, (F), H, W]
        return x.repeat_interleave(group_size, dim=0)  # [P*G, C, (F), H, W]
    return torch.randn(num_prompts * group_size, *shape, generator=gen)  # [P*G, C, (F), H, W]


@torch.no_grad()
def rollout(generator: Generator, prompts: Sequence[str], group_size: int, sigmas: torch.Tensor, *,
            kind: str, noise_level: float, reduction: str, micro_batch: int, gen: torch.Generator,
            same_noise_in_group: bool = False) -> Rollout:
    """Sample ``group_size`` outputs per prompt with the SDE and keep every latent and step log-prob."""
    device = next(generator.parameters()).device
    base = generator.encode_prompts(list(prompts))
    cond = repeat_cond(base, group_size)
    all_prompts = [p for p in prompts for _ in range(group_size)]
    group_ids = torch.arange(len(prompts)).repeat_interleave(group_size)  # [B]
    x0 = initial_noise(len(prompts), group_size, generator.latent_shape(), gen, same_noise_in_group)
    b, steps = x0.shape[0], len(sigmas) - 1
    latents = [x0.to(device)]
    noise = [torch.randn(x0.shape, generator=gen).to(device) for _ in range(steps)]  # T x [B, C, (F), H, W]
    logps = []
    for k in range(steps):
        s, s_next = float(sigmas[k]), float(sigmas[k + 1])
        x = latents[-1]
        nxt, lps = [], []
        for start in range(0, b, micro_batch):
            sl = slice(start, start + micro_batch)
            c = index_cond(cond, sl)
            v = generator.velocity(x[sl], torch.full((x[sl].shape[0],), s, device=device), c)
            step = sde_step(kind, x[sl], v, s, s_next, noise_level, noise=noise[k][sl])
            # score the drawn sample the way the update will (next_sample path), so on-policy ratios are 1
            again = sde_step(kind, x[sl], v, s, s_next, noise_level, next_sample=step.next)
            nxt.append(step.next)
            lps.append(reduce_logp(again.logp, reduction))  # [b, *grid] or [b]
        latents.append(torch.cat(nxt))
        logps.append(torch.cat(lps))
    return Rollout(prompts=all_prompts, group_ids=group_ids.to(device), cond=cond, sigmas=sigmas,
                   latents=torch.stack(latents), logp=torch.stack(logps))


@torch.no_grad()
def sample_ode(generator: Generator, prompts: Sequence[str], num_steps: int, gen: torch.Generator | None,
               micro_batch: int = 64, noise: torch.Tensor | None = None, cond: Cond | None = None) -> torch.Tensor:
    """Deterministic Euler sampling (noise level 0) -> final latents [N, C, (F), H, W].

    The start latents are ``noise`` [N, C, (F), H, W] when given (``gen`` is then unused), else drawn from ``gen``;
    ``cond`` is ``generator.encode_prompts(prompts)`` when given (reused across calls), else computed here.
    """
    device = next(generator.parameters()).device
    sigmas = generator.sigmas(num_steps)
    if noise is None:
        noise = torch.randn(len(prompts), *generator.latent_shape(), generator=gen)  # [N, C, (F), H, W]
    elif noise.shape != (len(prompts), *generator.latent_shape()):
        raise ValueError(f"sample_ode: noise has shape {tuple(noise.shape)}, expected "
                         f"{(len(prompts), *generator.latent_shape())}")
    x = noise.to(device)
    cond = generator.encode_prompts(list(prompts)) if cond is None else cond
    outs = []
    for start in range(0, len(prompts), micro_batch):
        sl = slice(start, start + micro_batch)
        xs, c = x[sl], index_cond(cond, sl)
        for k in range(num_steps):
            s = torch.full((xs.shape[0],), float(sigmas[k]), device=device)
            v = generator.velocity(xs, s, c)
            xs = xs + (float(sigmas[k + 1]) - float(sigmas[k])) * v.float()
        outs.append(xs)
    return torch.cat(outs)
