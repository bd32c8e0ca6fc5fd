"""vipo.advantage: group normalisation and the redistribution modes of the paper's ablation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vipo.advantage import ADVANTAGE_MODES, group_normalize, redistribute, zero_std_fraction

EPS = 1e-6


def test_group_normalize_by_hand():
    # groups {1, 2} and {3, 4}: means 1.5 and 3.5, population std 0.5
    adv = group_normalize(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 1, 1]))
    a = 0.5 / (0.5 + EPS)
    torch.testing.assert_close(adv, torch.tensor([-a, a, -a, a]), rtol=0, atol=1e-7)
    assert adv.dtype == torch.float32


def test_group_normalize_uneven_groups_and_arbitrary_ids():
    # group 7 = {1, 2, 4}: mean 7/3, population std sqrt(42/27); group 3 = {10, 10, 10}: all equal -> 0
    rewards = torch.tensor([1.0, 10.0, 2.0, 10.0, 4.0, 10.0])
    ids = torch.tensor([7, 3, 7, 3, 7, 3])
    adv = group_normalize(rewards, ids)
    std = math.sqrt(42 / 27)
    expected = [(1 - 7 / 3) / (std + EPS), 0.0, (2 - 7 / 3) / (std + EPS), 0.0, (4 - 7 / 3) / (std + EPS), 0.0]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=0, atol=1e-6)


def test_zero_std_group_is_exactly_zero():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.3, 0.9])  # 0.1 * 3 / 3 != 0.1 in floats
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    for mode in ("local", "global"):
        adv = group_normalize(rewards, ids, std_mode=mode)
        assert torch.equal(adv[:6], torch.zeros(6)) and torch.isfinite(adv).all()
    assert torch.equal(group_normalize(torch.full((4,), 2.5), torch.zeros(4, dtype=torch.long)), torch.zeros(4))


def test_global_std_uses_the_batch_std():
    # group means 1.5 / 3.5 as above, but the std is that of [1, 2, 3, 4]: sqrt(1.25)
    adv = group_normalize(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 1, 1]), std_mode="global")
    a = 0.5 / (math.sqrt(1.25) + EPS)
    torch.testing.assert_close(adv, torch.tensor([-a, a, -a, a]), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="std_mode"):
        group_normalize(torch.tensor([1.0, 2.0]), torch.tensor([0, 0]), std_mode="batch")


def test_group_normalize_per_position():
    # [B=4, 2]: position 0 holds [1, 3 | 5, 5], position 1 holds [0, 4 | 1, 2]
    r = torch.tensor([[1.0, 0.0], [3.0, 4.0], [5.0, 1.0], [5.0, 2.0]])
    adv = group_normalize(r, torch.tensor([0, 0, 1, 1]))
    e1, e2, e3 = 1 / (1 + EPS), 2 / (2 + EPS), 0.5 / (0.5 + EPS)
    torch.testing.assert_close(adv, torch.tensor([[-e1, -e2], [e1, e2], [0.0, -e3], [0.0, e3]]), rtol=0, atol=1e-7)


def test_zero_std_fraction():
    rewards = torch.tensor([1.0, 1.0, 2.0, 3.0, 5.0, 5.0])
    assert zero_std_fraction(rewards, torch.tensor([0, 0, 1, 1, 2, 2])) == pytest.approx(2 / 3)
    assert zero_std_fraction(rewards, torch.tensor([0, 1, 2, 3, 4, 5])) == 1.0  # groups of one
    assert zero_std_fraction(torch.tensor([1.0, 2.0]), torch.tensor([0, 0])) == 0.0


def test_non_finite_rewards_are_rejected_with_their_indices():
    with pytest.raises(ValueError, match=r"2 non-finite .* \[1, 3\]"):
        group_normalize(torch.tensor([0.0, float("nan"), 1.0, float("inf")]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match=r"1 non-finite .* \[0\]"):
        redistribute("scalar", torch.tensor([float("nan"), 1.0]), torch.tensor([0, 0]), None)
    with pytest.raises(ValueError, match="group_ids"):
        group_normalize(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0]))


def test_scalar_mode_is_plain_grpo_and_ignores_maps():
    r, ids = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 1, 1])
    adv = redistribute("scalar", r, ids, None)
    assert torch.equal(adv, group_normalize(r, ids))
    assert torch.equal(redistribute("scalar", r, ids, torch.rand(4, 3, 3)), adv)


def test_map_x_advantage_and_ones_by_hand():
    r, ids = torch.tensor([1.0, 2.0]), torch.tensor([0, 0])  # A = [-a, a]
    a = 0.5 / (0.5 + EPS)
    maps = torch.tensor([[[1.0, 0.5], [0.0, 0.25]], [[0.2, 1.0], [0.4, 0.0]]])  # [2, 2, 2]
    expected = torch.stack([-a * maps[0], a * maps[1]])  # A_i^p = M_i(p) A_i
    torch.testing.assert_close(redistribute("map_x_advantage", r, ids, maps), expected, rtol=0, atol=1e-7)
    ones = redistribute("ones", r, ids, maps)
    assert ones.shape == (2, 2, 2)
    torch.testing.assert_close(ones, torch.tensor([-a, a])[:, None, None].expand(2, 2, 2))


def test_map_x_reward_by_hand():
    # r^p: sample 0 = 1 * [1, 0.5] = [1, 0.5]; sample 1 = 3 * [1, 1] = [3, 3]
    # position 0: [1, 3] -> mean 2, std 1; position 1: [0.5, 3] -> mean 1.75, std 1.25
    adv = redistribute("map_x_reward", torch.tensor([1.0, 3.0]), torch.tensor([0, 0]),
                       torch.tensor([[1.0, 0.5], [1.0, 1.0]]))
    e1, e2 = 1 / (1 + EPS), 1.25 / (1.25 + EPS)
    torch.testing.assert_close(adv, torch.tensor([[-e1, -e2], [e1, e2]]), rtol=0, atol=1e-7)


def test_clamp():
    r, ids = torch.tensor([0.0, 1.0]), torch.tensor([0, 0])  # A = [-1, 1] (up to eps)
    maps = torch.full((2, 1, 3), 10.0)  # a mean-one map can exceed 1
    assert redistribute("map_x_advantage", r, ids, maps).abs().max() == 5.0
    assert redistribute("map_x_advantage", r, ids, maps, clamp=2.0).abs().max() == 2.0
    assert redistribute("map_x_advantage", r, ids, maps, clamp=None).abs().max() > 9.99


def test_redistribute_validation():
    r, ids = torch.tensor([0.0, 1.0]), torch.tensor([0, 0])
    with pytest.raises(ValueError, match="needs maps"):
        redistribute("map_x_advantage", r, ids, None)
    with pytest.raises(ValueError, match=r"maps must be \[B=2"):
        redistribute("ones", r, ids, torch.ones(3, 4, 4))
    with pytest.raises(ValueError, match="non-finite"):
        redistribute("map_x_advantage", r, ids, torch.tensor([[1.0, float("nan")], [1.0, 1.0]]))
    with pytest.raises(KeyError, match="map_x_advantage"):
        redistribute("map_x_noise", r, ids, torch.ones(2, 2))
    assert {"scalar", "map_x_advantage", "map_x_reward", "ones"} <= set(ADVANTAGE_MODES.names())


rewards_st = st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=2, max_size=12)


@settings(max_examples=25, deadline=None)
@given(rewards=rewards_st, n_groups=st.integers(1, 4), seed=st.integers(0, 2**16),
       std_mode=st.sampled_from(["local", "global"]))
def test_map_x_advantage_keeps_the_sign_of_the_sample(rewards, n_groups, seed, std_mode):
    g = torch.Generator().manual_seed(seed)
    r = torch.tensor(rewards)
    ids = torch.arange(len(rewards)) % n_groups
    maps = torch.rand(len(rewards), 4, 5, generator=g) * 3
    maps[maps < 0.5] = 0.0  # some positions with M = 0
    adv = redistribute("map_x_advantage", r, ids, maps, std_mode=std_mode)
    a = redistribute("scalar", r, ids, None, std_mode=std_mode)
    live = maps > 0
    assert torch.equal(torch.sign(adv)[live], torch.sign(a)[:, None, None].expand_as(adv)[live])
    assert (adv[~live] == 0).all()


@settings(max_examples=25, deadline=None)
@given(rewards=rewards_st, mode=st.sampled_from(["scalar", "map_x_advantage", "map_x_reward", "ones"]),
       clamp=st.sampled_from([0.5, 1.0, 5.0]), seed=st.integers(0, 2**16))
def test_advantages_are_finite_and_within_the_clamp(rewards, mode, clamp, seed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(len(rewards), 3, 3, generator=g) * 4
    adv = redistribute(mode, torch.tensor(rewards), torch.arange(len(rewards)) // 2, maps, clamp=clamp)
    assert torch.isfinite(adv).all() and adv.abs().max() <= clamp
    assert adv.shape == ((len(rewards),) if mode == "scalar" else maps.shape)


def test_combine_advantages_normalises_each_reward_separately():
    from vipo.advantage import combine_advantages

    groups = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([1.0, 3.0, 2.0, 2.0])  # group 0: mean 2, std 1 -> (-1, 1); group 1: all equal -> (0, 0)
    b = torch.tensor([10.0, 30.0, 0.0, 40.0])  # group 0: mean 20, std 10 -> (-1, 1); group 1: mean 20, std 20
    out = combine_advantages({"a": a, "b": b}, {"a": 2.0, "b": 0.5}, groups, eps=0.0)
    torch.testing.assert_close(out, torch.tensor([-2.5, 2.5, -0.5, 0.5]))
    # the reward-level sum 2a + 0.5b = [7, 21, 4, 24] normalises to [-1, 1, -1, 1]: a different signal
    raw = group_normalize(2.0 * a + 0.5 * b, groups, eps=0.0)
    torch.testing.assert_close(raw, torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    torch.testing.assert_close(combine_advantages({"a": a}, None, groups, eps=0.0), torch.tensor([-1.0, 1, 0, 0]))
    with pytest.raises(KeyError, match="unknown components \\['c'\\]"):
        combine_advantages({"a": a}, {"c": 1.0}, groups)
    with pytest.raises(ValueError, match="at least one"):
        combine_advantages({}, None, groups)
    with pytest.raises(ValueError, match="'b' must be \\[B\\]"):
        combine_advantages({"a": a, "b": b[None]}, None, groups)
