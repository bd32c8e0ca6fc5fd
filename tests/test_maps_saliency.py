"""psm.source=saliency: maps from the reward's input gradient, checked on rewards whose gradient is known."""

import pytest
import torch

from vipo.config import ConfigError, MapConfig, load
from vipo.maps import make_maps
from vipo.rewards.base import Reward
from vipo.rewards.multi import MultiReward
from vipo.rewards.rules import Redness
from vipo.saliency import SaliencyConfig, input_gradient


class Linear(Reward):
    """r = sum(w * x) over the pixels: d r / d x = w exactly."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w  # [3, H, W] (or [3, F, H, W])

    def score(self, images, prompts):
        return (images * self.w).flatten(1).sum(1)  # [B]


def quadrant(size: int, which: str = "tl", frames: int = 0) -> torch.Tensor:
    w = torch.zeros(3, *([frames] if frames else []), size, size)
    h = size // 2
    rows, cols = (slice(0, h), slice(0, h)) if which == "tl" else (slice(h, size), slice(h, size))
    w[..., rows, cols] = 1.0
    return w


def cfg_with(**kw) -> MapConfig:
    return MapConfig(saliency=SaliencyConfig(**kw))


def images(b=2, size=16, frames=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, *([frames] if frames else []), size, size, generator=g)


def saliency(x, grid, cfg, reward, **kw):
    return make_maps("saliency", x, grid, cfg, reward=reward, prompts=["p"] * x.shape[0], **kw)


def test_top_left_reward_gives_a_top_left_map():
    m = saliency(images(size=16), (8, 8), cfg_with(blur_sigma=0.0), Linear(quadrant(16)))  # [2, 8, 8]
    # |grad| is 1 on the top-left 8 x 8 pixels, 0 elsewhere; the 2x antialiased resize mixes one cell at the edge
    assert torch.equal(m[:, :3, :3], torch.ones(2, 3, 3))
    assert torch.equal(m[:, 5:], torch.zeros(2, 3, 8)) and torch.equal(m[:, :, 5:], torch.zeros(2, 8, 3))
    blurred = saliency(images(size=16), (8, 8), cfg_with(blur_sigma=1.0), Linear(quadrant(16)))
    assert blurred[:, :4, :4].mean() > 0.6 and blurred[:, 4:, 4:].mean() < 0.05
    assert blurred.amin() == 0 and blurred.amax() == 1


def test_grad_x_input_of_a_linear_reward_is_weight_times_pixel():
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    x = images(size=8)
    m = saliency(x, (8, 8), cfg_with(reduce="grad_x_input", blur_sigma=0.0), Linear(w))
    want = (w * x).sum(1).abs()  # [2, 8, 8]
    lo, hi = want.amin((1, 2), keepdim=True), want.amax((1, 2), keepdim=True)
    torch.testing.assert_close(m, (want - lo) / (hi - lo), atol=1e-6, rtol=0)
    abs_map = saliency(x, (8, 8), cfg_with(blur_sigma=0.0), Linear(w))  # mean_c |w|, the same for both images
    want = w.abs().mean(0)
    torch.testing.assert_close(abs_map, ((want - want.min()) / (want.max() - want.min())).expand(2, 8, 8),
                               atol=1e-6, rtol=0)


def test_redness_has_a_constant_gradient_so_its_map_is_all_ones():
    x = images(b=3, size=32)
    g = input_gradient(Redness(), x, ["p"] * 3, SaliencyConfig())
    torch.testing.assert_close(g[:, 0], torch.full((3, 32, 32), 1 / 32**2))  # d mean(R - (G+B)/2) / dR
    torch.testing.assert_close(g[:, 1:], torch.full((3, 2, 32, 32), -0.5 / 32**2))
    for grid in [(32, 32), (8, 8)]:
        for kw in [{}, {"blur_sigma": 0.0}, {"smooth_n": 3}]:
            m = saliency(x, grid, cfg_with(**kw), Redness(), gen=torch.Generator().manual_seed(0))
            assert torch.equal(m, torch.ones(3, *grid)), kw
    # gradient x input is the per-pixel redness |R - (G + B) / 2| (up to the 1 / HW factor)
    m = saliency(x, (32, 32), cfg_with(reduce="grad_x_input", blur_sigma=0.0), Redness())
    red = (x[:, 0] - 0.5 * (x[:, 1] + x[:, 2])).abs()  # [3, 32, 32]
    lo, hi = red.amin((1, 2), keepdim=True), red.amax((1, 2), keepdim=True)
    torch.testing.assert_close(m, (red - lo) / (hi - lo), atol=1e-5, rtol=0)


def test_smoothgrad_of_a_linear_reward_is_the_plain_gradient_and_noise_matters_otherwise():
    x = images(size=8)
    w = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(2))
    plain = input_gradient(Linear(w), x, ["p"] * 2, SaliencyConfig())
    smooth = input_gradient(Linear(w), x, ["p"] * 2, SaliencyConfig(smooth_n=4), gen=torch.Generator().manual_seed(0))
    torch.testing.assert_close(smooth, plain)

    class Square(Reward):  # d r / d x = 2 x: SmoothGrad averages 2 (x + noise)
        def score(self, images, prompts):
            return images.square().flatten(1).sum(1)

    g1 = input_gradient(Square(), x, ["p"] * 2, SaliencyConfig(smooth_n=2, smooth_std=0.5),
                        gen=torch.Generator().manual_seed(0))
    n = torch.Generator().manual_seed(0)
    noise = [torch.randn(x.shape, generator=n) for _ in range(2)]  # one micro-batch: both copies, in order
    torch.testing.assert_close(g1, 2 * x + 0.5 * (noise[0] + noise[1]))


def test_multi_reward_uses_the_weighted_sum_and_keeps_its_logged_components():
    multi = MultiReward({"tl": Linear(quadrant(8, "tl")), "br": Linear(quadrant(8, "br"))}, {"tl": 1.0, "br": 2.0})
    x = images(size=8)
    multi(x, ["p"] * 2)
    before = {k: v.clone() for k, v in multi.last_components.items()}
    m = saliency(x, (8, 8), cfg_with(blur_sigma=0.0, smooth_n=2), multi, gen=torch.Generator().manual_seed(0))
    assert torch.equal(m[:, :4, :4], torch.full((2, 4, 4), 0.5)) and torch.equal(m[:, 4:, 4:], torch.ones(2, 4, 4))
    assert torch.equal(m[:, :4, 4:], torch.zeros(2, 4, 4))
    assert all(torch.equal(before[k], multi.last_components[k]) for k in before)


def test_video_maps_per_latent_frame():
    x = images(b=2, size=8, frames=5)
    w = quadrant(8, frames=5)
    w[:, 1:] *= 0.5  # frames after the first count half: latent frame 0 is video frame 0
    m = saliency(x, (3, 8, 8), cfg_with(blur_sigma=0.0), Linear(w))  # [2, 3, 8, 8]
    assert m.shape == (2, 3, 8, 8)
    assert torch.equal(m[:, :, 4:], torch.zeros(2, 3, 4, 8)) and torch.equal(m[:, :, :, 4:], torch.zeros(2, 3, 8, 4))
    # in time: linear resampling (end frames aligned) then the PSM's temporal blur (sigma 0.5 latent frames)
    tl = m[:, :, :4, :4]  # [2, 3, 4, 4], constant within each latent frame
    assert torch.equal(tl, tl[:, :, :1, :1].expand_as(tl)) and tl[0, 0, 0, 0] == 1
    assert 0.5 < tl[0, 1, 0, 0] < 1 and tl[0, 2, 0, 0] < tl[0, 1, 0, 0]


def test_micro_batches_do_not_change_the_gradient():
    x = images(b=5, size=8)
    w = torch.randn(3, 8, 8)

    class Quad(Reward):
        def score(self, images, prompts):
            return (w * images).square().flatten(1).sum(1)

    a = input_gradient(Quad(), x, ["p"] * 5, SaliencyConfig(micro_batch=2))
    b = input_gradient(Quad(), x, ["p"] * 5, SaliencyConfig(micro_batch=8))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, 2 * w.square() * x)


def test_a_reward_without_gradient_is_named_at_run_time():
    class Detached(Reward):
        def score(self, images, prompts):
            return images.detach().mean((1, 2, 3))

    with pytest.raises(ValueError, match="reward Detached returned scores without a gradient"):
        saliency(images(size=8), (8, 8), cfg_with(), Detached())


class RoundedLinear(Linear):
    """Linear, but rounded to 8 bits (zero input gradient) outside its differentiable path, as HPSv2.1's quantize."""

    def __init__(self, w: torch.Tensor):
        super().__init__(w)
        self.rounding = True

    def differentiable_path(self):
        from vipo.rewards.base import attribute_set

        return attribute_set(self, "rounding", False)

    def score(self, images, prompts):
        return super().score((images * 255).round() / 255 if self.rounding else images, prompts)


def test_the_gradient_is_taken_on_the_differentiable_path_and_the_scores_stay_on_the_reference():
    x, w = images(size=8), quadrant(8)
    rounded, exact = RoundedLinear(w), Linear(w)
    torch.testing.assert_close(input_gradient(rounded, x, ["p"] * 2, SaliencyConfig()),
                               input_gradient(exact, x, ["p"] * 2, SaliencyConfig()), atol=0, rtol=0)
    m = saliency(x, (8, 8), cfg_with(blur_sigma=0), rounded)
    assert m.std() > 0.1 and rounded.rounding  # a real map; the reward scores on its reference path again
    torch.testing.assert_close(rounded(x, ["p"] * 2), exact((x * 255).round() / 255, ["p"] * 2))


def test_toy_match_classifier_gives_a_structured_map():
    from vipo.rewards.toy import ToyPromptMatch

    x = images(b=2, size=32)
    m = make_maps("saliency", x, (32, 32), cfg_with(), reward=ToyPromptMatch(), prompts=["a red circle"] * 2)
    assert m.shape == (2, 32, 32) and m.amin() == 0 and m.amax() == 1 and m.std() > 0.05


@pytest.mark.parametrize("overrides,needle", [
    (["reward=videoalign"], "reward 'videoalign' has no usable input gradient"),
    (["reward=toy_multi", "+reward.rewards.va={name: videoalign}"], "component 'va': reward 'videoalign'"),
])
def test_a_non_differentiable_reward_is_refused_at_config_time(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load(["psm.source=saliency", *overrides])
    assert "psm.source=saliency needs a differentiable reward" in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("overrides", [[], ["reward=toy_match"], ["reward=toy_multi"], ["reward=hps"],
                                       ["reward=hps", "+reward.quantize=false"], ["reward=pickscore"],
                                       ["reward=imagereward", "+reward.preprocess=torch"],
                                       ["reward=toy_multi", "+reward.rewards.pick={name: pickscore}"],
                                       ["advantage=grpo", "reward=videoalign"]])  # scalar GRPO builds no map
def test_differentiable_rewards_pass(overrides):
    cfg, _ = load(["psm.source=saliency", "psm.saliency.smooth_n=2", *overrides])
    assert cfg.psm.source == "saliency" and cfg.psm.saliency.smooth_n == 2


def test_the_psm_map_saliency_cell_trains_and_differs_from_ones(tmp_path):
    """The toy ablation cell (redness, gradient x input): a real map, unlike redness's all-ones |gradient|."""
    import json

    from test_train import tiny_cfg
    from vipo.train import run

    rows = {}
    for label, extra in [("gxi", ["psm.saliency.reduce=grad_x_input"]), ("abs", [])]:
        (tmp_path / label).mkdir()
        cfg, raw = tiny_cfg(tmp_path / label, "psm.source=saliency", "train.iterations=1", "eval.every=0", *extra)
        run(cfg, raw)
        rows[label] = json.loads((tmp_path / label / "r/metrics.jsonl").read_text().splitlines()[-1])
    assert rows["gxi"]["map_std"] > 0.05 and rows["gxi"]["map_mean"] < 1
    assert rows["abs"]["map_mean"] == 1.0 and rows["abs"]["map_std"] == 0.0  # redness: all ones by construction
    assert (tmp_path / "gxi/r/images/maps_it00000.png").exists()
