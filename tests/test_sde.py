"""vipo.sde: schedules, the three SDE forms, per-element log-probs and their reductions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vipo.sde import (SDE_STEPS, flux_mu, flux_sigma_schedule, kl_to_reference, reduce_logp, sde_step,
                      shift_sigmas, sigma_schedule)

KINDS = ["flow_grpo", "dance_grpo", "cps"]
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def one(value: float) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), value)


# ----------------------------------------------------------------------------- hand-computed steps
# x = 0.5, v = -1, sigma 0.6 -> 0.4 (dt = -0.2) unless stated; numbers worked out by hand from the
# formulas in docs/DESIGN.md §1 and written out here.
def test_flow_grpo_hand_step():
    # std_k = 0.5 sqrt(0.6 / 0.4) -> std_k^2 = 0.375; mean = 0.5 (1 - 0.0625) + (-1)(1 + 0.125)(-0.2)
    out = sde_step("flow_grpo", one(0.5), one(-1.0), 0.6, 0.4, 0.5, noise=one(1.0))
    assert out.mean.item() == pytest.approx(0.69375, abs=1e-6)
    assert out.std.item() == pytest.approx(math.sqrt(0.375 * 0.2), abs=1e-7)  # 0.27386128
    assert out.next.item() == pytest.approx(0.967611278752583, abs=1e-6)
    # z = 1: -1/2 - log(0.27386128) - log sqrt(2 pi)
    assert out.logp.item() == pytest.approx(-0.12380495048175932, abs=1e-5)


def test_flow_grpo_first_step_uses_sigma_next_in_the_denominator():
    # s = 1, s' = 0.8, a = 0.7: std_k = 0.7 sqrt(1 / (1 - 0.8)), std_k^2 = 2.45, noise std sqrt(2.45 * 0.2) = 0.7
    out = sde_step("flow_grpo", one(0.5), one(-1.0), 1.0, 0.8, 0.7, noise=one(-0.5))
    assert out.mean.item() == pytest.approx(0.5775, abs=1e-6)  # 0.5 (1 - 0.245) + 0.2
    assert out.std.item() == pytest.approx(0.7, abs=1e-6)
    assert out.logp.item() == pytest.approx(-0.68726358926594, abs=1e-5)  # z = -0.5
    assert torch.isfinite(out.logp).all()


def test_dance_grpo_hand_step():
    # x0 = 1.1, score = -(0.5 - 0.4 * 1.1) / 0.36 = -1/6, mean = 0.5 + 0.2 - 0.5 * 0.09 * (-1/6) * (-0.2)
    out = sde_step("dance_grpo", one(0.5), one(-1.0), 0.6, 0.4, 0.3, noise=one(-2.0))
    assert out.mean.item() == pytest.approx(0.6985, abs=1e-6)
    assert out.std.item() == pytest.approx(0.3 * math.sqrt(0.2), abs=1e-7)  # 0.13416408
    assert out.logp.item() == pytest.approx(-0.9102467726616865, abs=1e-5)  # z = -2


def test_cps_hand_step():
    # std = 0.4 sin(pi / 4); x0 = 1.1, x1 = 0.1, mean = 1.1 * 0.6 + 0.1 * sqrt(0.16 - 0.08)
    out = sde_step("cps", one(0.5), one(-1.0), 0.6, 0.4, 0.5, noise=one(0.5))
    assert out.mean.item() == pytest.approx(0.6882842712474619, abs=1e-6)
    assert out.std.item() == pytest.approx(0.282842712474619, abs=1e-7)
    assert out.logp.item() == pytest.approx(0.21892578894945514, abs=1e-5)  # z = 0.5, proper density


# ----------------------------------------------------------------------------- references
@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), s=st.floats(0.05, 1.0), frac=st.one_of(st.just(0.0), st.floats(1e-3, 0.95)),
       level=st.floats(0.05, 1.0), video=st.booleans(), seed=st.integers(0, 2**16))
def test_logp_matches_torch_normal(kind, s, frac, level, video, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 2, 4, 4) if video else (2, 3, 4, 4)
    x, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    s_next = s * frac
    out = sde_step(kind, x, v, torch.tensor([s, s]), s_next, level, generator=g)
    assert out.logp.shape == shape and out.logp.dtype == torch.float32
    live = (out.std > 0).expand(shape)
    ref = torch.distributions.Normal(out.mean, out.std.expand(shape).clamp_min(1e-30)).log_prob(out.next)
    torch.testing.assert_close(out.logp[live], ref[live], rtol=1e-5, atol=1e-4)
    assert (out.logp[~live] == 0).all()  # CPS on its last step (s' = 0) is deterministic


@pytest.mark.parametrize("kind", KINDS)
def test_noise_zero_is_the_euler_step(kind):
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    s, s_next = torch.tensor([1.0, 0.7, 0.3]), torch.tensor([0.9, 0.5, 0.0])
    out = sde_step(kind, x, v, s, s_next, 0.0, generator=g)
    euler = x + v * (s_next - s).reshape(-1, 1, 1, 1)
    assert torch.equal(out.mean, euler) and torch.equal(out.next, euler)
    assert torch.equal(out.std, torch.zeros(3, 1, 1, 1))
    assert torch.equal(out.logp, torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
def test_half_precision_inputs_compute_in_float32(kind, dtype):
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 4, 3, 3, generator=g).to(dtype), torch.randn(2, 4, 3, 3, generator=g).to(dtype)
    noise = torch.randn(2, 4, 3, 3, generator=g)
    low = sde_step(kind, x, v, 0.8, 0.6, 0.7, noise=noise)
    ref = sde_step(kind, x.float(), v.float(), 0.8, 0.6, 0.7, noise=noise)
    for a, b in [(low.next, ref.next), (low.mean, ref.mean), (low.std, ref.std), (low.logp, ref.logp)]:
        assert a.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_recomputation_with_next_sample_equals_rollout(kind):
    g = torch.Generator().manual_seed(2)
    x, v = torch.randn(2, 4, 2, 3, 3, generator=g), torch.randn(2, 4, 2, 3, 3, generator=g)
    roll = sde_step(kind, x, v, torch.tensor([0.9, 0.5]), torch.tensor([0.8, 0.3]), 0.6, generator=g)
    v_train = v.clone().requires_grad_(True)
    again = sde_step(kind, x, v_train, torch.tensor([0.9, 0.5]), torch.tensor([0.8, 0.3]), 0.6,
                     next_sample=roll.next)
    torch.testing.assert_close(again.logp, roll.logp, rtol=0, atol=1e-6)
    assert torch.equal(again.next, roll.next)
    (grad,) = torch.autograd.grad(again.logp.sum(), v_train)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()


def test_logp_gradient_wrt_v_matches_the_analytic_derivative():
    # flow_grpo, values of test_flow_grpo_hand_step: d logp / d v = (x' - mean) / var * dmean/dv
    # = z / std * (1 + std_k^2 (1 - s) / (2 s)) dt = (1 / 0.27386128) * 1.125 * (-0.2)
    v = one(-1.0).requires_grad_(True)
    roll = sde_step("flow_grpo", one(0.5), one(-1.0), 0.6, 0.4, 0.5, noise=one(1.0))
    out = sde_step("flow_grpo", one(0.5), v, 0.6, 0.4, 0.5, next_sample=roll.next)
    (grad,) = torch.autograd.grad(out.logp.sum(), v)
    assert grad.item() == pytest.approx(-0.8215838362577492, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_empirical_mean_and_std(kind):
    g = torch.Generator().manual_seed(3)
    x, v = torch.full((1, 1, 200, 200), 0.3), torch.full((1, 1, 200, 200), -0.8)
    out = sde_step(kind, x, v, 0.7, 0.5, 0.8, generator=g)  # 40000 independent draws
    mean, std = out.mean[0, 0, 0, 0].item(), out.std.item()
    assert out.next.mean().item() == pytest.approx(mean, abs=5 * std / 200)
    assert out.next.std().item() == pytest.approx(std, rel=0.02)


def test_step_validation():
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(KeyError, match="flow_grpo"):
        sde_step("euler_maruyama", x, x, 0.5, 0.4, 0.7)
    with pytest.raises(ValueError, match="sigma_next"):
        sde_step("flow_grpo", x, x, 0.4, 0.5, 0.7)
    with pytest.raises(ValueError, match="shape"):
        sde_step("flow_grpo", x, x[:, :, :1], 0.5, 0.4, 0.7)
    with pytest.raises(ValueError, match=r"\[B=2\]"):
        sde_step("flow_grpo", x, x, torch.ones(3) * 0.5, 0.4, 0.7)
    with pytest.raises(ValueError, match="cps noise_level"):
        sde_step("cps", x, x, 0.5, 0.4, 1.5)
    with pytest.raises(ValueError, match="not both"):
        sde_step("cps", x, x, 0.5, 0.4, 0.5, noise=x, next_sample=x)
    assert set(KINDS) <= set(SDE_STEPS.names())


# ----------------------------------------------------------------------------- reductions, KL
def test_reduce_logp_image_by_hand():
    logp = torch.arange(24.0).reshape(2, 3, 2, 2)  # sample 0 holds 0..11, sample 1 holds 12..23
    expected = torch.tensor([[[12.0, 15.0], [18.0, 21.0]], [[48.0, 51.0], [54.0, 57.0]]])  # 0+4+8, ...
    assert torch.equal(reduce_logp(logp, "position"), expected)
    assert torch.equal(reduce_logp(logp, "sample"), torch.tensor([5.5, 17.5]))  # mean(0..11), mean(12..23)


def test_reduce_logp_video_by_hand():
    logp = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0]).reshape(1, 2, 2, 1, 2)  # [B,C,F,H,W]
    assert torch.equal(reduce_logp(logp, "position"), torch.tensor([[[[11.0, 22.0]], [[33.0, 44.0]]]]))
    assert torch.equal(reduce_logp(logp, "sample"), torch.tensor([13.75]))
    with pytest.raises(KeyError, match="position"):
        reduce_logp(logp, "pixel")


def test_kl_to_reference_by_hand():
    std = torch.tensor([[0.5], [0.0]])
    kl = kl_to_reference(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]]), std)
    assert torch.equal(kl, torch.tensor([[2.0], [0.0]]))  # 1 / (2 * 0.25); deterministic -> 0


# ----------------------------------------------------------------------------- schedules
def test_sigma_schedule_endpoints_and_values():
    torch.testing.assert_close(sigma_schedule(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    assert shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2
    for shift in (0.3, 1.0, 3.0, 7.1):
        s = sigma_schedule(10, shift)
        assert s.dtype == torch.float32 and s.shape == (11,)
        assert s[0].item() == 1.0 and s[-1].item() == 0.0
        assert (s[1:] < s[:-1]).all()
    with pytest.raises(ValueError):
        sigma_schedule(0)


def test_flux_mu_by_hand():
    assert flux_mu(256) == pytest.approx(0.5)
    assert flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(1024) == pytest.approx(0.5 + 0.65 * 768 / 3840)  # 0.63


@pytest.mark.parametrize("num_steps, seq_len", [(4, 1024), (28, 4096), (16, 256), (10, 64)])
def test_flux_schedule_matches_diffusers(num_steps, seq_len):
    import numpy as np
    from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                            max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    # what FluxPipeline.__call__ does: sigmas = linspace(1, 1/T, T), mu = calculate_shift(seq_len)
    sched.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=flux_mu(seq_len))
    ours = flux_sigma_schedule(num_steps, seq_len)
    torch.testing.assert_close(ours, sched.sigmas.float(), rtol=0, atol=1e-6)
    assert ours[0].item() == 1.0 and ours[-1].item() == 0.0
