"""vipo.loss: the clipped objective, its statistics, and its gradient against plain GRPO."""

import math

import pytest
import torch

from vipo.advantage import redistribute
from vipo.loss import policy_loss
from vipo.sde import reduce_logp, sde_step


def test_on_policy_ratio_is_exactly_one():
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 8, 8, generator=g) * 30
    adv = torch.randn(4, 8, 8, generator=g)
    loss, stats = policy_loss(logp, logp.clone(), adv, 0.2)
    assert stats["ratio_min"] == stats["ratio_max"] == stats["ratio_mean"] == 1.0
    assert stats["clipfrac"] == stats["clipfrac_high"] == stats["clipfrac_low"] == 0.0
    assert stats["approx_kl"] == 0.0 and stats["kl"] == 0.0
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-7)


def test_clipped_values_and_gradients_by_hand():
    # e = 0.2; (rho, A): (1.5, +1) -> clipped 1.2 | (1.5, -1) -> -1.5 | (0.5, +1) -> 0.5 |
    #                    (0.5, -1) -> clipped -0.8 | (1.1, +2) -> 2.2 (inside the clip range)
    rho = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    logp_old = torch.tensor([-3.0, 0.5, 2.0, -1.0, 0.0])
    logp = (logp_old + rho.log()).requires_grad_(True)
    loss, stats = policy_loss(logp, logp_old, adv, 0.2)
    assert loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8 + 2.2) / 5, abs=1e-6)  # -0.32
    assert stats["policy_loss"] == pytest.approx(-0.32, abs=1e-6)
    assert stats["clipfrac"] == pytest.approx(0.8) and stats["clipfrac_high"] == pytest.approx(0.4)
    assert stats["clipfrac_low"] == pytest.approx(0.4)
    expected_kl = 0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2 + math.log(1.1) ** 2) / 5
    assert stats["approx_kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert stats["ratio_max"] == pytest.approx(1.5) and stats["ratio_min"] == pytest.approx(0.5)
    # adv_std: population std of [1, -1, 1, -1, 2] = sqrt((0.36 + 1.96 + 0.36 + 1.96 + 2.56) / 5) = 1.2
    assert stats["adv_mean"] == pytest.approx(0.4) and stats["adv_std"] == pytest.approx(1.2)
    (grad,) = torch.autograd.grad(loss, logp)
    # d(-J)/d logp = -rho A / 5 where the unclipped branch is the min, 0 where the clipped one is
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.3, -0.1, 0.0, -0.44]), rtol=0, atol=1e-6)


def test_kl_term():
    logp = torch.zeros(2, 3)
    kl = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    adv = torch.ones(2, 3)
    loss, stats = policy_loss(logp, logp, adv, 0.1, kl=kl, kl_coef=0.5)
    assert loss.item() == pytest.approx(-1.0 + 0.5 * 2.5)
    assert stats["kl"] == pytest.approx(2.5) and stats["policy_loss"] == pytest.approx(-1.0)


def test_shape_mismatch_names_the_three_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4, 4\), \(2, 4, 4\) and \(2,\)"):
        policy_loss(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4), torch.zeros(2), 0.2)
    with pytest.raises(ValueError, match="same shape"):
        policy_loss(torch.zeros(2), torch.zeros(2, 1), torch.zeros(2), 0.2)


def _rollout(seed: int = 0):
    """A tiny flow_grpo step: logp per element [B=4, C=3, 4, 4], rewards for 2 groups of 2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, 4, 4, generator=g)
    v = torch.randn(4, 3, 4, 4, generator=g)
    roll = sde_step("flow_grpo", x, v, 0.8, 0.6, 0.7, generator=g)
    rewards, ids = torch.tensor([0.1, 0.9, 0.4, 0.3]), torch.tensor([0, 0, 1, 1])
    return x, v, roll, rewards, ids


def _grad(x, v, roll, reduce, adv):
    v = v.clone().requires_grad_(True)
    logp = sde_step("flow_grpo", x, v, 0.8, 0.6, 0.7, next_sample=roll.next).logp  # [B, C, H, W]
    logp = reduce(logp)
    loss, _ = policy_loss(logp, logp.detach(), adv, 0.2)  # on-policy: rho == 1
    return torch.autograd.grad(loss, v)[0]


def test_map_of_ones_reproduces_the_scalar_grpo_gradient():
    x, v, roll, rewards, ids = _rollout()
    scalar_adv = redistribute("scalar", rewards, ids, None)  # [B]
    scalar = _grad(x, v, roll, lambda lp: reduce_logp(lp, "sample"), scalar_adv)
    assert scalar.abs().sum() > 0
    # per element, with M = 1 broadcast over channels too: exactly the per-sample mean objective
    per_element = _grad(x, v, roll, lambda lp: lp, scalar_adv[:, None, None, None].expand(4, 3, 4, 4))
    torch.testing.assert_close(per_element, scalar, rtol=1e-5, atol=1e-7)
    # per position (channels summed), advantage "ones": C = 3 times the per-sample-mean gradient
    ones_adv = redistribute("ones", rewards, ids, torch.rand(4, 4, 4))  # [B, H, W]
    per_position = _grad(x, v, roll, lambda lp: reduce_logp(lp, "position"), ones_adv)
    torch.testing.assert_close(per_position, 3 * scalar, rtol=1e-5, atol=1e-7)
