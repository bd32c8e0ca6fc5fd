"""Rule-based rewards (hand-computed values, properties) and the classifier-based toy reward."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vipo.rewards import REWARDS
from vipo.rewards.rules import Centred, ObjectBrightness, Redness, UniformBackground
from vipo.toy.data import PROMPTS, render_batch

GREY = torch.tensor([0.5, 0.5, 0.5])


def fill(rgb, h=4, w=4):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, h, w).clone()


def test_registered_by_name():
    for name, cls in [("redness", Redness), ("object_brightness", ObjectBrightness),
                      ("uniform_background", UniformBackground), ("centred", Centred)]:
        assert isinstance(REWARDS.build(name), cls)


def test_redness_hand_values():
    r = Redness()
    assert r(fill([1.0, 0.0, 0.0]), ["x"]).item() == pytest.approx(1.0)
    assert r(fill([0.5, 0.5, 0.5]), ["x"]).item() == pytest.approx(0.0)
    assert r(fill([0.2, 0.6, 1.0]), ["x"]).item() == pytest.approx(0.2 - 0.8)
    half = fill([0.5, 0.5, 0.5])
    half[:, :, :2] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)  # top half pure red
    assert r(half, ["x"]).item() == pytest.approx(0.5)  # half the pixels score 1, half 0
    video = torch.stack([fill([1.0, 0.0, 0.0])[0], fill([0.5, 0.5, 0.5])[0]], dim=1)[None]  # [1, 3, 2, 4, 4]
    assert r(video, ["x"]).item() == pytest.approx(0.5)  # mean over frames of 1 and 0


def test_object_brightness_hand_values():
    img = fill([0.5, 0.5, 0.5])
    img[0, :, 0, 0] = torch.tensor([0.8, 0.2, 0.2])  # saturation 0.6, value 0.8
    assert ObjectBrightness()(img, ["x"]).item() == pytest.approx(0.8, abs=1e-5)  # grey pixels weigh 0
    img[0, :, 1, 1] = torch.tensor([0.5, 0.2, 0.2])  # saturation 0.3, value 0.5
    assert ObjectBrightness()(img, ["x"]).item() == pytest.approx((0.6 * 0.8 + 0.3 * 0.5) / 0.9, abs=1e-5)


def test_uniform_background_hand_values():
    u = UniformBackground()
    assert u(fill([0.5, 0.5, 0.5]), ["x"]).item() == pytest.approx(0.0, abs=1e-5)
    img = fill([0.4, 0.4, 0.4])
    img[:, :, 2:] = 0.6  # two grey levels, equal areas: std 0.1
    assert u(img, ["x"]).item() == pytest.approx(-0.1, abs=1e-5)
    obj = fill([0.5, 0.5, 0.5])
    obj[0, :, 0, 0] = torch.tensor([0.9, 0.1, 0.1])  # a saturated object pixel is not background
    assert u(obj, ["x"]).item() == pytest.approx(0.0, abs=1e-5)


def test_centred_hand_values():
    c = Centred()
    img = fill([0.5, 0.5, 0.5], 5, 5)
    img[0, :, 2, 2] = torch.tensor([1.0, 0.0, 0.0])  # the centre pixel
    assert c(img, ["x"]).item() == pytest.approx(0.0, abs=1e-5)
    img = fill([0.5, 0.5, 0.5], 5, 5)
    img[0, :, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # a corner: (-1, -1) -> distance sqrt(2) -> -1
    assert c(img, ["x"]).item() == pytest.approx(-1.0, abs=1e-5)
    img[0, :, 0, 4] = torch.tensor([1.0, 0.0, 0.0])  # two top corners: centroid (0, -1) -> -1/sqrt(2)
    assert c(img, ["x"]).item() == pytest.approx(-(2**-0.5), abs=1e-5)


def test_reward_shape_validation():
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        Redness()(torch.rand(2, 3, 4, 4), ["x"])
    with pytest.raises(ValueError, match="expected images"):
        Redness()(torch.rand(2, 4, 4), ["x", "y"])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_rule_rewards_ranges_and_pixel_permutation(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 3, 8, 8, generator=g)
    perm = torch.randperm(64, generator=g)
    shuffled = x.flatten(2)[:, :, perm].view_as(x)
    for reward in (Redness(), ObjectBrightness(), UniformBackground()):  # these ignore pixel positions
        assert torch.allclose(reward(x, ["p"] * 3), reward(shuffled, ["p"] * 3), atol=1e-5)
    assert ((-1 <= Redness()(x, ["p"] * 3)) & (Redness()(x, ["p"] * 3) <= 1)).all()
    b = ObjectBrightness()(x, ["p"] * 3)
    assert ((0 <= b) & (b <= 1)).all()
    c = Centred()(x, ["p"] * 3)
    assert ((-1 <= c) & (c <= 0)).all()


def test_rewards_see_the_toy_structure():
    """On real toy images each spatial reward ranks the intended property the right way."""
    plain = render_batch(64, 0, background_idx=[0] * 64).images
    noisy = render_batch(64, 0, background_idx=[3] * 64).images
    ub = UniformBackground()
    assert ub(plain, ["p"] * 64).mean() > ub(noisy, ["p"] * 64).mean() + 0.03
    b = render_batch(64, 1)
    brighter = b.images * (1 - b.masks[:, None]) + (b.images * 1.2).clamp(0, 1) * b.masks[:, None]
    ob = ObjectBrightness()
    assert (ob(brighter, b.prompts) >= ob(b.images, b.prompts) - 1e-4).all()
    assert ob(brighter, b.prompts).mean() > ob(b.images, b.prompts).mean() + 0.02
    centred = Centred()(b.images, b.prompts)
    dist = ((b.masks * torch.linspace(-1, 1, 32).view(1, 1, 32)).sum((1, 2)) / b.masks.sum((1, 2))).abs()
    assert torch.corrcoef(torch.stack([centred, -dist]))[0, 1] > 0.7  # x-offset of the object drives it


def test_toy_match_prefers_the_prompted_object():
    reward = REWARDS.build("toy_match")
    b = render_batch(64, 11)
    wrong = [PROMPTS[(PROMPTS.index(p) + 5) % len(PROMPTS)] for p in b.prompts]  # other shape and colour
    right_scores, wrong_scores = reward(b.images, b.prompts), reward(b.images, wrong)
    assert right_scores.mean() > 0.9 and wrong_scores.mean() < 0.1
    assert ((0 <= right_scores) & (right_scores <= 1)).all()
    with pytest.raises(ValueError, match="unknown toy prompt"):
        reward(b.images[:1], ["a purple blob"])
