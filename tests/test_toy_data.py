"""Procedural toy data: labels, determinism, rendering geometry and colours, augmentation."""

import math

import pytest
import torch

from vipo.toy.augment import colour_augment
from vipo.toy.data import (
    BACKGROUNDS,
    COLOURS,
    PALETTE,
    PROMPTS,
    SHAPES,
    _shape_sdf,
    label_to_prompt,
    prompt_index,
    prompt_to_label,
    prompts_for,
    render_batch,
    sample_batch,
)


def test_prompts_fixed_order_and_labels():
    assert len(SHAPES) >= 4 and len(COLOURS) >= 4 and len(BACKGROUNDS) == 4
    assert len(PROMPTS) == len(SHAPES) * len(COLOURS) == 16
    assert PROMPTS[:5] == ["a red circle", "a red square", "a red triangle", "a red cross", "a green circle"]
    assert prompt_to_label("a red triangle") == (2, 0)
    assert prompt_to_label("a yellow cross") == (3, 3)
    assert prompt_to_label("  A Blue Square ") == (1, 2)  # case and spaces do not matter
    for i, p in enumerate(PROMPTS):
        s, c = prompt_to_label(p)
        assert label_to_prompt(s, c) == p and prompt_index(p) == i


@pytest.mark.parametrize("bad", ["a purple triangle", "red triangle", "", "a red hexagon"])
def test_unknown_prompt_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="unknown toy prompt"):
        prompt_to_label(bad)


def test_sample_batch_shapes_range_and_determinism():
    images, shape_idx, colour_idx, prompts = sample_batch(64, seed=3)
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert shape_idx.shape == colour_idx.shape == (64,) and len(prompts) == 64
    assert all(prompt_to_label(p) == (int(s), int(c)) for p, s, c in zip(prompts, shape_idx, colour_idx))
    again = sample_batch(64, seed=3)
    assert torch.equal(images, again[0]) and prompts == again[3]
    assert not torch.equal(images, sample_batch(64, seed=4)[0])
    # A torch.Generator continues its stream: two draws differ, and replaying the stream reproduces them.
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = sample_batch(8, g1)[0], sample_batch(8, g1)[0]
    assert not torch.equal(a, b) and torch.equal(a, sample_batch(8, g2)[0]) and torch.equal(b, sample_batch(8, g2)[0])


def test_every_label_and_background_occurs():
    b = render_batch(512, 0)
    assert set(b.shape_idx.tolist()) == set(range(4)) and set(b.colour_idx.tolist()) == set(range(4))
    assert set(b.background_idx.tolist()) == set(range(4))
    assert sample_batch(4, 0, resolution=16)[0].shape == (4, 3, 16, 16)


def test_sdf_hand_values():
    # Points on each outline (distance 0) and the centre (inside) in radius units.
    px = torch.tensor([[[1.0, 0.0]], [[0.85, 0.0]], [[0.0, 0.0]], [[0.95, 0.0]]])  # [4, 1, 2]
    py = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[-1.1, 0.0]], [[0.0, 0.0]]])
    d = _shape_sdf(torch.arange(4), px, py)  # [4, 1, 2]
    assert torch.allclose(d[:, 0, 0], torch.zeros(4), atol=1e-6)  # circle (1,0); square (.85,0); apex; bar end
    assert torch.allclose(d[:, 0, 1], torch.tensor([-1.0, -0.85, -0.55, -0.32]), atol=1e-6)


def test_object_geometry_and_colour():
    b = render_batch(256, 1, shape_idx=[0] * 256)  # circles only
    r_px = torch.tensor([0.14, 0.27]) * 32
    area = b.masks.flatten(1).sum(1)  # [N] pixels covered
    assert area.min() >= math.pi * r_px[0] ** 2 * 0.9 and area.max() <= math.pi * r_px[1] ** 2 * 1.1
    # Fully covered pixels carry the object colour: within jitter (0.06) and brightness (0.85-1.05) of the palette.
    inside = b.masks > 0.999  # [N, H, W]
    for i in range(0, 256, 17):
        rgb = b.images[i].permute(1, 2, 0)[inside[i]].mean(0)  # [3]
        base = PALETTE[b.colour_idx[i]]
        assert torch.all(rgb >= (base - 0.06) * 0.85 - 1e-4) and torch.all(rgb <= (base + 0.06) * 1.05 + 1e-4)
    # Uncovered pixels are grey.
    bg = b.images.permute(0, 2, 3, 1)[b.masks == 0]  # [P, 3]
    assert torch.allclose(bg[:, 0], bg[:, 1]) and torch.allclose(bg[:, 1], bg[:, 2])


def test_label_overrides_and_errors():
    b = render_batch(6, 0, shape_idx=[2] * 6, colour_idx=[0] * 6, background_idx=[1] * 6)
    assert b.prompts == ["a red triangle"] * 6 and b.background_idx.tolist() == [1] * 6
    with pytest.raises(ValueError, match="shape_idx must have 6 entries"):
        render_batch(6, 0, shape_idx=[1, 2])


def test_prompts_for_is_deterministic_and_covers_prompts():
    p = prompts_for(256, 9)
    assert p == prompts_for(256, 9) and set(p) == set(PROMPTS)


def test_colour_augment_keeps_shape_and_marks_colour_validity():
    b = render_batch(256, 2)
    g = torch.Generator().manual_seed(0)
    x, valid = colour_augment(b.images, b.masks, g, p=1.0)
    assert x.shape == b.images.shape and 0 <= x.min() and x.max() <= 1
    assert 0.2 < valid.float().mean() < 0.9  # some colour names survive, some do not
    # p=0 leaves images untouched and every colour label valid.
    x0, valid0 = colour_augment(b.images, b.masks, torch.Generator().manual_seed(0), p=0.0)
    assert torch.allclose(x0, b.images, atol=1e-6) and valid0.all()
