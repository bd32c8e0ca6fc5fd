"""The toy world's object segmenter: the mask behind the oracle map sources (``psm.source=oracle``).

The procedural renderer knows every object's mask, so a small fully convolutional network learns it from
unlimited data. Training sees the colour augmentations of ``vipo.toy.augment`` (tints, background tints,
reddening, channel swaps, grey-scale, noise, blur), because the images a redness-trained generator makes drift
red; it alternates 16x16 and 32x32 batches (the two shipped generators' sizes). The held-out IoU (clean and
augmented, at both sizes) is saved beside the weights as ``<name>.metrics.json``.

    python -m vipo.toy.segment                # width 16, seed 3, 1200 steps (~2 min on 1 core)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vipo.toy.augment import colour_augment
from vipo.toy.data import as_generator, render_batch
from vipo.toy.nets import WEIGHTS_DIR, read_weights, save_weights

SHIPPED_SEGMENTER = WEIGHTS_DIR / "toy_segmenter.safetensors"
TEST_SEED = 555_000_111  # held-out images: no training stream starts here
THRESHOLD = 0.5  # mask probability above which a pixel counts as object (IoU)


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.GroupNorm(4, cout),
                         nn.SiLU())


class ToySegmenter(nn.Module):
    """Five 3x3 conv blocks (dilations 1, 1, 2, 4, 1: a 19-pixel receptive field) and a 1x1 head.

    ``forward(images [B, 3, H, W] in [0, 1])`` -> object logits [B, H, W] (any H, W)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.config = {"width": width}
        w = width
        self.body = nn.Sequential(_block(3, w), _block(w, w), _block(w, w, 2), _block(w, w, 4), _block(w, w))
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - 0.5) / 0.25  # [B, 3, H, W]
        return self.head(self.body(x))[:, 0]  # [B, H, W]


@functools.lru_cache(maxsize=2)
def load_segmenter(path: str | Path = SHIPPED_SEGMENTER) -> ToySegmenter:
    """The frozen eval-mode segmenter (cached per path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"toy segmenter weights not found at {path}; train them with "
                                f"`python -m vipo.toy.segment`")
    state, config = read_weights(path)
    net = ToySegmenter(**config)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


@torch.no_grad()
def object_probability(images: torch.Tensor, net: ToySegmenter | None = None) -> torch.Tensor:
    """images [B, 3, H, W] in [0, 1] -> per-pixel object probability [B, H, W]."""
    net = net or load_segmenter()
    return torch.sigmoid(net(images.float().cpu())).to(images.device)  # [B, H, W]


def iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = THRESHOLD) -> torch.Tensor:
    """Per-image intersection over union of ``pred > threshold`` and ``target > 0.5`` ([B, H, W] -> [B])."""
    p, t = pred > threshold, target > 0.5
    inter, union = (p & t).flatten(1).sum(1).float(), (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def held_out_iou(net: ToySegmenter, n: int = 1024, resolution: int = 16, augment: bool = False,
                 seed: int = TEST_SEED, chunk: int = 256) -> dict:
    """Mean and 5th percentile of the per-image IoU on ``n`` held-out procedural images."""
    g = as_generator(seed + resolution + (1 if augment else 0))
    scores = []
    for start in range(0, n, chunk):
        b = render_batch(min(chunk, n - start), g, resolution=resolution)
        images = colour_augment(b.images, b.masks, g, p=1.0)[0] if augment else b.images
        scores.append(iou(object_probability(images, net), b.masks))
    s = torch.cat(scores)
    return {"mean_iou": round(float(s.mean()), 4), "p05_iou": round(float(s.quantile(0.05)), 4), "n": n}


def train(width: int = 16, seed: int = 3, steps: int = 1200, batch: int = 64, lr: float = 3e-3,
          p_augment: float = 0.7, out: Path = SHIPPED_SEGMENTER, test_size: int = 1024) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    net = ToySegmenter(width)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    g = as_generator(20_000 + seed)
    warmup, t0 = max(1, steps // 20), time.time()
    for step in range(steps):
        frac = max(0.0, (step - warmup) / max(1, steps - warmup))
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        b = render_batch(batch, g, resolution=16 if step % 2 == 0 else 32)
        images = colour_augment(b.images, b.masks, g, p=p_augment)[0]  # [B, 3, H, W]
        loss = F.binary_cross_entropy_with_logits(net(images), b.masks)  # soft targets at the anti-aliased edge
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 200 == 0 or step + 1 == steps:
            print(f"step {step + 1:5d}  bce {loss.item():.4f}  {time.time() - t0:.0f} s", flush=True)
    net.eval()
    metrics = {f"{kind}_{res}": held_out_iou(net, test_size, res, kind == "augmented")
               for res in (16, 32) for kind in ("clean", "augmented")}
    metrics.update(steps=steps, seed=seed, width=width, threshold=THRESHOLD,
                   parameters=sum(p.numel() for p in net.parameters()),
                   train_minutes=round((time.time() - t0) / 60, 2))
    save_weights(net, out, net.config, role="segmenter", steps=steps, seed=seed)
    out.with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1), flush=True)
    print(f"saved {out} ({out.stat().st_size / 1e3:.0f} kB)", flush=True)
    return out, metrics


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(SHIPPED_SEGMENTER))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    train(a.width, a.seed, a.steps, a.batch, a.lr, out=Path(a.out))


if __name__ == "__main__":
    main()


# -------------------------------------------------------------------------------------- map sources
def _object_maps(images: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    if images.dim() != 4:
        raise ValueError(f"psm.source=oracle works on toy images [B, 3, H, W], got shape {tuple(images.shape)}")
    p = object_probability(images)  # [B, H, W]
    if tuple(p.shape[-2:]) != tuple(grid[-2:]):
        p = F.interpolate(p[:, None], size=tuple(grid[-2:]), mode="area")[:, 0]  # [B, H', W']
    return p


def oracle_maps(images: torch.Tensor, grid: tuple[int, ...], cfg, **_) -> torch.Tensor:
    """Credit on the object's own pixels: the segmenter's object probability [B, H', W'], then ``psm.normalize``."""
    from vipo.psm import finish

    return finish(_object_maps(images, grid), cfg.normalize)  # [B, H', W']


def oracle_inverse_maps(images: torch.Tensor, grid: tuple[int, ...], cfg, **_) -> torch.Tensor:
    """The control: credit on the background only (1 - object probability), then ``psm.normalize``."""
    from vipo.psm import finish

    return finish(1 - _object_maps(images, grid), cfg.normalize)  # [B, H', W']


def check_config(cfg) -> None:
    """Config-time check for ``psm.source=oracle`` / ``oracle_inverse``: only the toy world has the segmenter."""
    if cfg.generator.name != "toy":
        raise ValueError(f"psm.source={cfg.psm.source} needs generator=toy (the toy world's segmenter), "
                         f"got generator={cfg.generator.name}")
