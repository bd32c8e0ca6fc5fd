"""Sigma schedules and SDE sampling steps with per-element Gaussian log-probabilities.

Flow matching convention: ``x_s = (1 - s) x0 + s eps``, velocity ``v = eps - x0``, sampling runs from
``s = 1`` (noise) down to ``s = 0`` (data), so ``dt = sigma_next - sigma < 0``. One stochastic step draws
``x' ~ N(mean(x, v), std^2)`` independently per element; every form below is registered in ``SDE_STEPS``
and only supplies ``(mean, std)``. ``sde_step`` does the rest (fp32 casting, noise, log-density).

Conventions shared by all forms:
- ``std`` is the standard deviation of ``x'`` given ``x`` (the noise scale actually applied).
- Where ``std == 0`` (noise level 0, or CPS on its last step) the step is deterministic and the
  per-element log-density is *defined* as 0: those elements carry no policy-gradient signal.
- Noise level 0 is the plain Euler ODE step ``x + v dt`` for every form, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from vipo.registry import Registry

Sigma = float | Tensor  # python float, 0-d tensor, or [B] tensor
StepForm = Callable[[Tensor, Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]

SDE_STEPS: Registry[StepForm] = Registry("sde step")
LOGP_REDUCERS: Registry[Callable[[Tensor], Tensor]] = Registry("log-prob reduction")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# ----------------------------------------------------------------------------------- schedules
def shift_sigmas(t: Tensor, shift: float) -> Tensor:
    """SD3-style time shift ``a t / (1 + (a - 1) t)``; ``shift > 1`` spends more steps at high noise."""
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def _check_steps(num_steps: int) -> None:
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")


def sigma_schedule(num_steps: int, shift: float = 1.0) -> Tensor:
    """[T+1] float32 sigmas: linspace(1, 0) then shifted; endpoints are exactly 1.0 and 0.0."""
    _check_steps(num_steps)
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)  # [T+1]
    s = shift_sigmas(t, shift)
    s[0], s[-1] = 1.0, 0.0  # (1 + (a-1)) may differ from a by one ulp
    return s.float()


def flux_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
            base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """FLUX's resolution-dependent shift: linear in the packed token count (diffusers calculate_shift)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return float(base_shift + slope * (image_seq_len - base_seq_len))


def flux_sigma_schedule(num_steps: int, image_seq_len: int) -> Tensor:
    """[T+1] float32 FLUX sigmas: exp(mu) / (exp(mu) + 1/t - 1) on linspace(1, 0), last one exactly 0."""
    _check_steps(num_steps)
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1]  # [T], t > 0
    e = math.exp(flux_mu(image_seq_len))
    s = e / (e + (1.0 / t - 1.0))  # [T]
    return torch.cat([s, s.new_zeros(1)]).float()


# ----------------------------------------------------------------------------------- step forms
@SDE_STEPS.register("ode")
def _ode(x: Tensor, v: Tensor, s: Tensor, s_next: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Plain Euler step (deterministic); also what every form does at noise level 0."""
    return x + v * (s_next - s), torch.zeros_like(s)


@SDE_STEPS.register("flow_grpo")
def _flow_grpo(x: Tensor, v: Tensor, s: Tensor, s_next: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Flow-GRPO: std_k = a sqrt(s / (1 - s)). At s == 1 the denominator uses sigma_next instead,
    which on the first step of a schedule is exactly flow_grpo's ``sigma_max = sigmas[1]``."""
    dt = s_next - s  # [B, 1, ...] < 0
    std_k = level * torch.sqrt(s / (1 - torch.where(s == 1, s_next, s)))
    mean = x * (1 + std_k**2 / (2 * s) * dt) + v * (1 + std_k**2 * (1 - s) / (2 * s)) * dt
    return mean, std_k * torch.sqrt(-dt)


@SDE_STEPS.register("dance_grpo")
def _dance_grpo(x: Tensor, v: Tensor, s: Tensor, s_next: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """DanceGRPO: Euler step plus a score correction, std = eta sqrt(s - s')."""
    dt = s_next - s
    x0 = x - s * v  # predicted data
    score = -(x - (1 - s) * x0) / s**2
    mean = x + v * dt - 0.5 * level**2 * score * dt
    return mean, level * torch.sqrt(-dt)


@SDE_STEPS.register("cps")
def _cps(x: Tensor, v: Tensor, s: Tensor, s_next: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Coefficients-preserving sampling (Flow-CPS): re-noise the predicted x0 so that the signal and
    total-noise coefficients of x' stay (1 - s', s'); std = s' sin(a pi / 2), a in [0, 1]."""
    if level > 1:
        raise ValueError(f"cps noise_level must be in [0, 1], got {level}")
    std = s_next * math.sin(level * math.pi / 2)  # [B|1, 1, ...]
    x0 = x - s * v  # predicted data
    x1 = x + (1 - s) * v  # predicted noise
    mean = x0 * (1 - s_next) + x1 * torch.sqrt((s_next**2 - std**2).clamp_min(0))
    return mean, std


# ----------------------------------------------------------------------------------- the step
@dataclass
class StepOut:
    next: Tensor  # x' [B, C, (F), H, W] float32 (the given next_sample when recomputing)
    mean: Tensor  # E[x' | x] [B, C, (F), H, W] float32
    std: Tensor  # std of x' | x, broadcastable to x: [B or 1, 1, ..., 1] float32
    logp: Tensor  # per-element log N(x'; mean, std^2) [B, C, (F), H, W]; 0 where std == 0


def _per_sample(sigma: Sigma, x: Tensor, name: str) -> Tensor:
    """float / 0-d / [B] sigma -> float32 tensor shaped [B or 1, 1, ..., 1] to broadcast against x."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    if s.ndim == 0 or (s.ndim == 1 and s.shape[0] in (1, x.shape[0])):
        return s.reshape(-1, *([1] * (x.ndim - 1)))
    raise ValueError(f"{name} must be a float, a 0-d tensor or a [B={x.shape[0]}] tensor, got shape "
                     f"{tuple(s.shape)}")


def gaussian_logp(sample: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Per-element log N(sample; mean, std^2) with all constants; 0 where std == 0."""
    live = std > 0
    safe = torch.where(live, std, torch.ones_like(std))
    logp = -((sample - mean) ** 2) / (2 * safe**2) - torch.log(safe) - _HALF_LOG_2PI
    return torch.where(live, logp, torch.zeros_like(logp))


def sde_step(kind: str, x: Tensor, v: Tensor, sigma: Sigma, sigma_next: Sigma, noise_level: float, *,
             noise: Tensor | None = None, generator: torch.Generator | None = None,
             next_sample: Tensor | None = None) -> StepOut:
    """One sampling step from ``sigma`` to ``sigma_next`` (< sigma) with a per-element log-density.

    ``x, v``: [B, C, H, W] or [B, C, F, H, W], any float dtype (computed in float32). Rollout: draws
    ``x' = mean + std * noise`` (``noise`` given, else ``torch.randn`` with ``generator``). Training:
    pass ``next_sample`` (the stored x'); nothing is drawn and ``logp`` is differentiable w.r.t. ``v``.
    """
    form = SDE_STEPS.get(kind)  # unknown kind -> KeyError listing the known ones
    if x.shape != v.shape or x.ndim not in (4, 5):
        raise ValueError(f"x and v must share a [B, C, H, W] or [B, C, F, H, W] shape, got "
                         f"{tuple(x.shape)} and {tuple(v.shape)}")
    if not noise_level >= 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    if noise is not None and next_sample is not None:
        raise ValueError("pass either noise (rollout) or next_sample (recomputation), not both")
    x, v = x.float(), v.float()
    s = _per_sample(sigma, x, "sigma")  # [B|1, 1, ..., 1]
    s, s_next = torch.broadcast_tensors(s, _per_sample(sigma_next, x, "sigma_next"))
    if bool((s_next >= s).any()) or bool((s > 1).any()) or bool((s_next < 0).any()):
        raise ValueError(f"need 1 >= sigma > sigma_next >= 0, got sigma={s.flatten().tolist()} "
                         f"sigma_next={s_next.flatten().tolist()}")
    if noise_level == 0:
        form = SDE_STEPS.get("ode")
    mean, std = form(x, v, s, s_next, noise_level)  # [B, C, (F), H, W], [B|1, 1, ..., 1]
    if next_sample is None:
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        elif noise.shape != x.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x shape {tuple(x.shape)}")
        next_sample = mean + std * noise.float()  # [B, C, (F), H, W]
    elif next_sample.shape != x.shape:
        raise ValueError(f"next_sample shape {tuple(next_sample.shape)} != x shape {tuple(x.shape)}")
    next_sample = next_sample.detach().float()
    return StepOut(next=next_sample, mean=mean, std=std, logp=gaussian_logp(next_sample, mean, std))


# ----------------------------------------------------------------------------------- reductions
@LOGP_REDUCERS.register("position")
def _reduce_position(logp: Tensor) -> Tensor:
    return logp.sum(dim=1)  # [B, C, (F), H, W] -> [B, (F), H, W]: joint density of each position


@LOGP_REDUCERS.register("sample")
def _reduce_sample(logp: Tensor) -> Tensor:
    return logp.flatten(1).mean(dim=1)  # [B, ...] -> [B]: DanceGRPO / official ViPO FLUX script


def reduce_logp(logp: Tensor, mode: str) -> Tensor:
    """Reduce per-element log-probs: ``position`` sums channels, ``sample`` means all non-batch dims."""
    if logp.ndim < 2:
        raise ValueError(f"logp must be [B, C, ...], got shape {tuple(logp.shape)}")
    return LOGP_REDUCERS.get(mode)(logp)


def kl_to_reference(mean: Tensor, mean_ref: Tensor, std: Tensor) -> Tensor:
    """Per-element KL(N(mean, std^2) || N(mean_ref, std^2)) = (mean - mean_ref)^2 / (2 std^2).
    0 where std == 0 (deterministic step). Note flow_grpo divides by std_k^2 without the |dt| factor;
    pass ``StepOut.std`` here for the true KL between the two step distributions."""
    live = std > 0
    safe = torch.where(live, std, torch.ones_like(std))
    kl = (mean - mean_ref) ** 2 / (2 * safe**2)
    return torch.where(live, kl, torch.zeros_like(kl))
