"""Toy-world networks: a small shape/colour classifier and the rectified-flow UNet, plus weight I/O.

Weights are safetensors files whose metadata carries the constructor config (``"config"``: JSON) so a
file is self-describing: ``load_classifier(path)`` / ``load_unet(path)`` rebuild the network from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vipo.toy.data import COLOURS, PROMPTS, SHAPES

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {
    "generator": WEIGHTS_DIR / "toy_generator.safetensors",  # 32x32
    "generator_16": WEIGHTS_DIR / "toy_generator_16.safetensors",  # 16x16 (faster experiments)
    "backbone": WEIGHTS_DIR / "toy_classifier_backbone.safetensors",
    "judge": WEIGHTS_DIR / "toy_classifier_judge.safetensors",
}
NULL_CLASS = len(PROMPTS)  # class label of the empty prompt (classifier-free guidance)


def resolve_weights(weights: str | Path, kind: str) -> Path:
    """``"shipped"`` -> the packaged file for ``kind`` (a key of ``SHIPPED``); else a path."""
    path = SHIPPED[kind] if str(weights) == "shipped" else Path(weights)
    if not path.is_file():
        hint = f"`python -m {'vipo.toy.pretrain' if kind.startswith('generator') else 'vipo.toy.train_classifier'}`"
        raise FileNotFoundError(f"toy {kind} weights not found at {path}; train them with {hint}")
    return path


# ------------------------------------------------------------------------------------------ classifier
def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class ToyClassifier(nn.Module):
    """Three conv stages (32 -> 16 -> 8 px) and two linear heads on the pooled features.

    ``forward(images [B, 3, H, W] in [0, 1])`` -> dict with ``shape`` [B, len(SHAPES)] and ``colour``
    [B, len(COLOURS)] logits, the pooled ``features`` [B, 4*width] the heads read, and ``pooled_all``
    [B, 7*width], every stage's spatial mean (the Fréchet-distance features). ``feature_maps`` gives each
    stage's map: ``stage1`` [B, w, H, W], ``stage2`` [B, 2w, H/2, W/2], ``stage3`` [B, 4w, H/4, W/4].
    """

    STAGES = ("stage1", "stage2", "stage3")

    def __init__(self, width: int = 32):
        super().__init__()
        self.config = {"width": width}
        w = width
        self.stage1 = nn.Sequential(_conv(3, w), _conv(w, w))
        self.stage2 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        self.stage3 = nn.Sequential(_conv(2 * w, 4 * w, 2), _conv(4 * w, 4 * w))
        self.shape_head = nn.Linear(4 * w, len(SHAPES))
        self.colour_head = nn.Linear(4 * w, len(COLOURS))

    def feature_maps(self, images: torch.Tensor, upto: str = "stage3") -> dict[str, torch.Tensor]:
        x = (images - 0.5) / 0.25  # [B, 3, H, W], roughly zero-mean unit-scale
        out: dict[str, torch.Tensor] = {}
        for name in self.STAGES:
            x = getattr(self, name)(x)
            out[name] = x
            if name == upto:
                break
        return out

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        maps = self.feature_maps(images)
        feats = maps["stage3"].mean(dim=(2, 3))  # [B, 4w]
        pooled_all = torch.cat([maps[name].mean(dim=(2, 3)) for name in self.STAGES], dim=1)  # [B, 7w]
        return {"shape": self.shape_head(feats), "colour": self.colour_head(feats), "features": feats,
                "pooled_all": pooled_all}


# ------------------------------------------------------------------------------------------- generator
def build_unet(resolution: int = 32, num_class_embeds: int = NULL_CLASS + 1, channels=(32, 64, 64)):
    """The 1.1M-parameter class-conditional UNet of docs/DESIGN.md §6 (diffusers ``UNet2DModel``)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(channels),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
        norm_num_groups=8,
        attention_head_dim=32,
    )


# ------------------------------------------------------------------------------------------ weight I/O
def save_weights(module: nn.Module, path: str | Path, config: dict[str, Any], dtype=torch.float32, **meta) -> Path:
    """Save a state dict with ``config`` (and any extra string metadata) in the safetensors header."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"config": json.dumps(config), **{k: str(v) for k, v in meta.items()}})
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (fp32 state dict, config dict) of a file written by ``save_weights``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' entry in the safetensors metadata (not a vipo toy file?)")
    return state, json.loads(meta["config"])


def load_classifier(weights: str | Path = "shipped", kind: str = "judge") -> ToyClassifier:
    """A frozen, eval-mode classifier from ``weights`` (``"shipped"`` picks the ``kind`` file)."""
    state, config = read_weights(resolve_weights(weights, kind))
    net = ToyClassifier(**config)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def load_unet(weights: str | Path = "shipped", resolution: int = 32):
    """The UNet from ``weights``; "shipped" picks the packaged file trained at ``resolution`` (32 or 16)."""
    kind = "generator" if resolution == 32 else f"generator_{resolution}"
    if str(weights) == "shipped" and kind not in SHIPPED:
        raise ValueError(f"no shipped toy generator for resolution {resolution}; shipped: 32, 16 "
                         f"(train one with `python -m vipo.toy.pretrain --resolution {resolution} --out PATH`)")
    path = resolve_weights(weights, kind)
    state, config = read_weights(path)
    if config.get("resolution", resolution) != resolution:
        raise ValueError(f"{path} was trained at {config['resolution']}x{config['resolution']} pixels, "
                         f"not {resolution}; pass resolution={config['resolution']} or other weights")
    unet = build_unet(resolution=resolution, **{k: v for k, v in config.items() if k != "resolution"})
    unet.load_state_dict(state)
    return unet
