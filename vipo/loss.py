"""The clipped GRPO / ViPO objective over any matching shape of log-probs and advantages.

``rho = exp(logp - logp_old)`` and ``J = mean(min(rho A, clip(rho, 1 - e, 1 + e) A))`` over every
element: samples ``[B]`` (scalar GRPO, per-sample log-probs), positions ``[B, (F), H, W]`` (ViPO) or
anything else, as long as the three shapes are identical (no silent broadcasting). The trainer averages
over trained timesteps by calling this per step (or on stacked steps) and averaging.
"""

from __future__ import annotations

import torch
from torch import Tensor


def policy_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, clip_range: float, *,
                kl: Tensor | None = None, kl_coef: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Returns ``(loss, stats)`` with ``loss = -J (+ kl_coef * kl.mean())``; stats are python floats.

    ``logp_old`` and ``adv`` are treated as constants (detached). ``kl`` is any per-element KL to a
    reference policy (e.g. ``sde.kl_to_reference``); it is averaged over all its elements.
    """
    if not (logp.shape == logp_old.shape == adv.shape):
        raise ValueError(f"logp, logp_old and adv must have the same shape, got {tuple(logp.shape)}, "
                         f"{tuple(logp_old.shape)} and {tuple(adv.shape)}")
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    logp_old, adv = logp_old.detach(), adv.detach()
    log_ratio = logp - logp_old  # [*S]
    ratio = log_ratio.exp()  # [*S]
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range)  # [*S]
    objective = torch.minimum(ratio * adv, clipped * adv).mean()  # J, scalar
    policy = -objective
    kl_mean = kl.mean() if kl is not None else torch.zeros((), device=logp.device)
    loss = policy + kl_coef * kl_mean if kl is not None else policy

    with torch.no_grad():
        r = ratio.detach().float()
        stats = {
            "loss": float(loss.detach()),
            "policy_loss": float(policy.detach()),
            "kl": float(kl_mean.detach()),
            "clipfrac": float(((r - 1).abs() > clip_range).float().mean()),
            "clipfrac_high": float((r > 1 + clip_range).float().mean()),
            "clipfrac_low": float((r < 1 - clip_range).float().mean()),
            "approx_kl": float(0.5 * (log_ratio.detach().float() ** 2).mean()),
            "ratio_mean": float(r.mean()),
            "ratio_min": float(r.min()),
            "ratio_max": float(r.max()),
            "adv_mean": float(adv.float().mean()),
            "adv_std": float(adv.float().std(unbiased=False)),  # population std over all elements
        }
    return loss, stats
