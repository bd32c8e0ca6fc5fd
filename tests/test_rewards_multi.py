"""The weighted multi-reward: hand-computed sums, building components by name, errors."""

import pytest
import torch

from vipo.registry import Registry
from vipo.rewards import REWARDS, Reward
from vipo.rewards.multi import MultiReward


class Brightness(Reward):
    def __init__(self, gain: float = 1.0):
        super().__init__()
        self.gain = gain

    def score(self, images, prompts):
        return self.gain * images.mean(dim=(1, 2, 3))  # [B]


class PromptLength(Reward):
    def score(self, images, prompts):
        return torch.tensor([float(len(p)) for p in prompts])  # [B]


@pytest.fixture
def registry():
    reg = Registry("reward")
    reg.register("brightness")(Brightness)
    reg.register("length")(PromptLength)
    return reg


def test_weighted_sum_by_hand(registry):
    images = torch.stack([torch.full((3, 4, 4), 0.25), torch.full((3, 4, 4), 0.5)])
    prompts = ["ab", "abcde"]
    multi = MultiReward({"brightness": {"gain": 2.0}, "length": None}, weights={"brightness": 3.0,
                                                                                 "length": -0.5},
                        registry=registry)
    # brightness: 2 * [0.25, 0.5] = [0.5, 1.0]; length: [2, 5]
    expected = torch.tensor([3.0 * 0.5 - 0.5 * 2, 3.0 * 1.0 - 0.5 * 5])
    out = multi(images, prompts)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(multi.last_components["length"], torch.tensor([2.0, 5.0]))


def test_aliases_and_default_weights(registry):
    images, prompts = torch.full((1, 3, 2, 2), 0.5), ["abc"]
    multi = MultiReward({"dim": {"name": "brightness", "gain": 1.0}, "bright": {"name": "brightness", "gain": 4.0},
                         "built": PromptLength()}, registry=registry)
    torch.testing.assert_close(multi(images, prompts), torch.tensor([0.5 + 2.0 + 3.0]))


def test_registered_as_multi_in_the_reward_registry():
    multi = REWARDS.build("multi", rewards={"a": Brightness(), "b": Brightness(gain=-1.0)}, weights={"a": 2.0})
    torch.testing.assert_close(multi(torch.full((2, 3, 2, 2), 0.3), ["x", "y"]), torch.tensor([0.3, 0.3]))


def test_errors(registry):
    with pytest.raises(ValueError):
        MultiReward({}, registry=registry)
    with pytest.raises(KeyError, match="typo"):
        MultiReward({"brightness": None}, weights={"typo": 1.0}, registry=registry)
    with pytest.raises(KeyError, match="nonexistent"):
        MultiReward({"nonexistent": None}, registry=registry)
    registry.register("not_a_reward")(lambda: object())
    with pytest.raises(TypeError):
        MultiReward({"not_a_reward": None}, registry=registry)


class Rounded(Reward):
    """Rounds to 8 bits (no input gradient) except on its differentiable path, like HPSv2.1's quantize."""

    def __init__(self):
        super().__init__()
        self.rounding = True

    def differentiable_path(self):
        from vipo.rewards.base import attribute_set

        return attribute_set(self, "rounding", False)

    def score(self, images, prompts):
        x = (images * 255).round() / 255 if self.rounding else images
        return x.mean(dim=(1, 2, 3))  # [B]


def test_differentiable_path_enters_every_component():
    multi = MultiReward({"a": Rounded(), "b": Rounded(), "c": Brightness(gain=2.0)}, weights={"b": 0.5})
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    with multi.differentiable_path():
        assert [r.rounding for r in (multi.components["a"], multi.components["b"])] == [False, False]
        multi(x, ["p", "q"]).sum().backward()
    # d/dx of mean * (1 + 0.5 + 2) over 48 values per image
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.5 / 48))
    assert multi.components["a"].rounding and multi.components["b"].rounding
