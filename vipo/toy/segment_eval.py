"""How well the toy segmenter (the oracle map's mask) finds the object, on procedural and on generated images.

- Held-out procedural images (16x16 and 32x32, clean and with the training augmentations): the renderer's masks
  are the truth.
- Samples of the shipped 16x16 generator (before any GRPO training): no mask exists, so the reference is a
  saturation mask, ``max(rgb) - min(rgb) > SATURATION``: the backgrounds are grey and every object colour is
  saturated. Its own IoU against the true masks on procedural images is reported beside it, as the measure of how
  far that reference can be trusted.
- Reddened samples of trained runs (the images the sample grids of a study show): the background is no longer
  grey, so no reference mask is available; ``--grid`` writes image / mask pairs for inspection by eye.

    python -m vipo.toy.segment_eval [--n 1024] [--grid results/toy_study/redness/main.grpo-s0/images/*.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vipo.toy.data import PROMPTS, render_batch
from vipo.toy.segment import iou, load_segmenter, object_probability

SATURATION = 0.3  # a pixel is "object" in the reference mask when max(rgb) - min(rgb) exceeds this


def saturation_mask(images: torch.Tensor, threshold: float = SATURATION) -> torch.Tensor:
    """[B, 3, H, W] -> [B, H, W] in {0, 1}."""
    return ((images.amax(1) - images.amin(1)) > threshold).float()


def _stats(s: torch.Tensor) -> dict:
    return {"mean_iou": round(float(s.mean()), 4), "p05_iou": round(float(s.quantile(0.05)), 4), "n": len(s)}


@torch.no_grad()
def evaluate(n: int = 1024, seed: int = 4242, num_steps: int = 10) -> dict:
    from vipo.generators.toy import ToyGenerator, sample_ode

    net = load_segmenter()
    b = render_batch(n, seed + 1, resolution=16)
    proxy_on_procedural = iou(saturation_mask(b.images), b.masks)
    gen = ToyGenerator(resolution=16).eval()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    images = torch.cat([sample_ode(gen, prompts[i:i + 256], num_steps, seed + i) for i in range(0, n, 256)])
    seg = object_probability(images, net)  # [n, 16, 16]
    return {"saturation_reference_vs_true_masks_procedural_16": _stats(proxy_on_procedural),
            "segmenter_vs_saturation_reference_procedural_16": _stats(iou(object_probability(b.images, net),
                                                                          saturation_mask(b.images))),
            "segmenter_vs_true_masks_procedural_16": _stats(iou(object_probability(b.images, net), b.masks)),
            "segmenter_vs_saturation_reference_generated_16": _stats(iou(seg, saturation_mask(images))),
            "generated": {"generator": "shipped 16x16", "ode_steps": num_steps, "prompts": "all 16, cycled"}}


def grid_tiles(path: Path, size: int = 16, scale: int = 2, pad: int = 1) -> torch.Tensor:
    """The images of a sample grid PNG written by ``vipo.images.save_image_grid`` -> [N, 3, size, size]."""
    import numpy as np
    from PIL import Image

    a = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    a = a[:, ::scale, ::scale]  # undo the nearest upscaling
    rows, cols = (a.shape[1] - pad) // (size + pad), (a.shape[2] - pad) // (size + pad)
    tiles = [a[:, pad + r * (size + pad):pad + r * (size + pad) + size, pad + c * (size + pad):pad + c * (size + pad) + size]
             for r in range(rows) for c in range(cols)]
    return torch.stack([t for t in tiles if t.shape[1:] == (size, size) and not bool((t == 1).all())])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--grid", nargs="*", default=[], help="sample grid PNGs of trained runs: write mask pairs")
    p.add_argument("--out", default="segment_check.png", help="image / mask pairs of --grid")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(json.dumps(evaluate(a.n), indent=1), flush=True)
    if a.grid:
        from vipo.images import save_map_grid

        images = torch.cat([grid_tiles(Path(g)) for g in a.grid])  # [N, 3, 16, 16]
        save_map_grid(images, object_probability(images), a.out, nrow=16, scale=4)
        print(f"wrote {a.out}: {len(images)} image / object-probability pairs", flush=True)


if __name__ == "__main__":
    main()
