"""The oracle map sources of the toy world: the segmenter's maps equal the renderer's masks (IoU), the inverse is
the background, and only the toy world accepts them."""

import json

import pytest
import torch

from vipo.config import ConfigError, load
from vipo.maps import make_maps
from vipo.psm import PSMConfig
from vipo.toy.augment import colour_augment
from vipo.toy.data import as_generator, render_batch
from vipo.toy.segment import SHIPPED_SEGMENTER, ToySegmenter, iou, object_probability

MIN_IOU_CLEAN = 0.90  # mean IoU of the oracle map (> 0.5) against the true mask, held-out 16x16 images
MIN_IOU_AUGMENTED = 0.80  # the same with the training augmentations (tints, reddening, channel swaps, ...)


def test_oracle_maps_on_procedural_images_equal_their_masks():
    b = render_batch(256, 777_001, resolution=16)  # a seed no training stream or metrics file uses
    maps = make_maps("oracle", b.images, (16, 16), PSMConfig())  # [B, 16, 16] in [0, 1]
    assert maps.shape == (256, 16, 16) and maps.min() >= 0 and maps.max() <= 1
    scores = iou(maps, b.masks)
    assert scores.mean() >= MIN_IOU_CLEAN, f"mean IoU {scores.mean():.3f}"
    assert (scores >= 0.5).float().mean() >= 0.97  # the object is found in (almost) every image
    # the map puts its credit on the object: mean map value inside vs outside the true mask
    inside = (maps * b.masks).sum() / b.masks.sum()
    outside = (maps * (1 - b.masks)).sum() / (1 - b.masks).sum()
    assert inside > 0.8 and outside < 0.1
    g = as_generator(777_002)
    aug = render_batch(256, g, resolution=16)
    images = colour_augment(aug.images, aug.masks, g, p=1.0)[0]
    assert iou(object_probability(images), aug.masks).mean() >= MIN_IOU_AUGMENTED


def test_oracle_inverse_is_the_background_and_maps_resize_to_the_grid():
    b = render_batch(32, 777_003, resolution=16)
    m = make_maps("oracle", b.images, (16, 16), PSMConfig(normalize="minmax"))
    inv = make_maps("oracle_inverse", b.images, (16, 16), PSMConfig(normalize="minmax"))
    assert torch.allclose(inv, 1 - m, atol=1e-5)  # min-max of 1 - p is 1 - min-max of p
    small = make_maps("oracle", b.images, (8, 8), PSMConfig())  # a coarser map grid: area-averaged
    assert small.shape == (32, 8, 8)
    p = object_probability(b.images)
    ref = torch.nn.functional.avg_pool2d(p[:, None], 2)[:, 0]
    ref = (ref - ref.amin((1, 2), keepdim=True)) / (ref.amax((1, 2), keepdim=True) - ref.amin((1, 2), keepdim=True))
    assert torch.allclose(small, ref, atol=1e-5)
    mean_one = make_maps("oracle", b.images, (16, 16), PSMConfig(normalize="mean_one"))
    assert torch.allclose(mean_one.flatten(1).mean(1), torch.ones(32), atol=1e-5)


def test_oracle_sources_need_the_toy_world():
    cfg, _ = load(["experiment=toy_study", "psm.source=oracle_inverse"])
    assert cfg.psm.source == "oracle_inverse"
    with pytest.raises(ConfigError, match="psm.source=oracle needs generator=toy"):
        load(["experiment=flux_hps", "psm.source=oracle"])


def test_shipped_segmenter_is_tiny_and_its_metrics_are_recorded():
    assert SHIPPED_SEGMENTER.stat().st_size < 100_000  # bytes
    metrics = json.loads(SHIPPED_SEGMENTER.with_suffix(".metrics.json").read_text())
    assert metrics["clean_16"]["mean_iou"] >= MIN_IOU_CLEAN and metrics["parameters"] < 20_000
    net = ToySegmenter(**{"width": metrics["width"]})
    assert sum(p.numel() for p in net.parameters()) == metrics["parameters"]
