"""Shipped toy classifiers (judge and backbone), the toy backbone's features and maps, toy metrics."""


import numpy as np
import pytest
import scipy.linalg
import torch

from vipo.backbones import BACKBONES
from vipo.backbones.toy import ToyBackbone
from vipo.eval.toy import ToyEvaluator, feature_stats, frechet_distance
from vipo.toy.data import label_to_prompt, prompt_to_label, render_batch
from vipo.toy.nets import SHIPPED, load_classifier, read_weights
from vipo.toy.train_classifier import TEST_SEED, accuracy


@pytest.fixture(scope="module")
def judge():
    return load_classifier("shipped", kind="judge")


@pytest.fixture(scope="module")
def evaluator():
    return ToyEvaluator()


# ------------------------------------------------------------------------------------ classifiers
def test_judge_and_backbone_are_different_networks():
    (_, cfg_j), (_, cfg_b) = read_weights(SHIPPED["judge"]), read_weights(SHIPPED["backbone"])
    assert cfg_j["width"] != cfg_b["width"]  # different architecture width, seed and data stream


@pytest.mark.parametrize("kind, floor", [("judge", 0.98), ("backbone", 0.97)])
def test_held_out_accuracy(kind, floor):
    net = load_classifier("shipped", kind=kind)
    acc = accuracy(net, 512, augment=False, seed=TEST_SEED + 1)
    assert acc["shape_acc"] >= floor and acc["colour_acc"] >= floor, acc


def test_judge_survives_colour_shifts(judge):
    acc = accuracy(judge, 512, augment=True, seed=TEST_SEED + 2)
    assert acc["shape_acc"] >= 0.9 and acc["colour_acc"] >= 0.9, acc


def test_judge_still_sees_a_red_tinted_triangle(judge):
    b = render_batch(128, 5, shape_idx=[2] * 128)  # triangles of every colour
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    for strength in (0.3, 0.5):
        tinted = torch.lerp(b.images, red, strength)  # [N, 3, 32, 32] everything pulled towards red
        with torch.no_grad():
            pred = judge(tinted)["shape"].argmax(1)
        assert (pred == 2).float().mean() >= 0.9, strength


# --------------------------------------------------------------------------------------- backbone
def test_backbone_features_shapes_and_errors():
    bb = BACKBONES.build("toy")
    x = render_batch(3, 0).images
    assert isinstance(bb, ToyBackbone) and bb.features(x).shape == (3, 16, 16, 64)
    assert ToyBackbone(layer="stage3").features(x).shape == (3, 8, 8, 128)
    assert bb.features(torch.nn.functional.interpolate(x, size=16)).shape == (3, 16, 16, 64)  # resized to 32
    assert not any(p.requires_grad for p in bb.parameters())
    with pytest.raises(ValueError, match="unknown layer"):
        ToyBackbone(layer="stage9")


def test_psm_maps_of_the_toy_backbone_highlight_the_object():
    from vipo.psm import PSMConfig, build_maps

    b = render_batch(64, 8)
    maps = build_maps(BACKBONES.build("toy").features(b.images), (32, 32), PSMConfig())  # [N, 32, 32]
    inside = (maps * b.masks).sum((1, 2)) / b.masks.sum((1, 2))
    outside = (maps * (1 - b.masks)).sum((1, 2)) / (1 - b.masks).sum((1, 2))
    assert (inside > outside).float().mean() >= 0.9
    assert (inside - outside).mean() > 0.2


# ---------------------------------------------------------------------------------------- metrics
def test_frechet_distance_hand_values_and_scipy_reference():
    one = lambda v: torch.tensor([[v]], dtype=torch.float64)
    # 1-D: (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    assert frechet_distance(torch.zeros(1, dtype=torch.float64), one(1.0), torch.ones(1, dtype=torch.float64), one(4.0)) == pytest.approx(2.0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 6, generator=g), torch.randn(200, 6, generator=g) * 1.5 + 0.3
    (m1, c1), (m2, c2) = feature_stats(a), feature_stats(b)
    covmean = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    ref = float(((m1 - m2) ** 2).sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * covmean)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-8)


def test_evaluator_on_real_images(evaluator):
    b = render_batch(256, 31)
    real = evaluator.evaluate(b.images, b.prompts)
    assert real["shape_acc"] >= 0.97 and real["colour_acc"] >= 0.97
    assert {"reward_redness", "reward_object_brightness", "reward_uniform_background", "reward_centred"} <= set(real)
    shuffled = [label_to_prompt((s + 1) % 4, c) for s, c in map(prompt_to_label, b.prompts)]  # next shape, same colour
    wrong = evaluator.evaluate(b.images, shuffled)
    assert wrong["shape_acc"] < 0.1 and wrong["colour_acc"] >= 0.95
    # FD: real images sit near the small-sample floor; a red wash or noise is far from it.
    floor = evaluator.fd_floor(256)
    assert real["fd"] < 2 * floor + 1.0
    washed = evaluator.evaluate(torch.lerp(b.images, torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1), 0.5), b.prompts)
    noise = evaluator.evaluate(torch.rand(256, 3, 32, 32), b.prompts)
    assert washed["fd"] > 3 * real["fd"] and noise["fd"] > washed["fd"]
    assert washed["reward_redness"] > real["reward_redness"] + 0.2
