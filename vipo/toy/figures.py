"""The README's toy-world figures, from the shipped weights.

    python -m vipo.toy.figures            # writes docs/images/toy_samples.png and toy_psm_maps.png

- ``toy_samples.png``: 20-step ODE samples of the shipped generator, one column per prompt in
  ``PROMPTS`` order (red, green, blue, yellow x circle, square, triangle, cross), four seeds per column.
- ``toy_psm_maps.png``: generated images beside their PSM maps (``backbone=toy``, default ``PSMConfig``:
  K=3, variance weighting, border orientation, blur 1), on the 32x32 latent grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vipo.images import save_image_grid, save_map_grid
from vipo.toy.data import PROMPTS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"


def sample_grid(gen, rows: int = 4, seed: int = 0) -> torch.Tensor:
    """[rows * len(PROMPTS), 3, 32, 32], row-major with one column per prompt."""
    from vipo.generators.toy import sample_ode

    prompts = PROMPTS * rows
    return sample_ode(gen, prompts, num_steps=20, seed=seed)


def psm_maps(images: torch.Tensor, layer: str = "stage2") -> torch.Tensor:
    """Images [N, 3, 32, 32] -> PSM maps [N, 32, 32] from the shipped toy backbone."""
    from vipo.backbones.toy import ToyBackbone
    from vipo.psm import PSMConfig, build_maps

    feats = ToyBackbone(layer=layer).features(images)  # [N, h, w, C]
    return build_maps(feats, (32, 32), PSMConfig())  # [N, 32, 32]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DOCS), help="folder of the PNG files")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--scale", type=int, default=3, help="nearest-neighbour upscaling of the PNGs")
    args = p.parse_args(argv)

    from vipo.generators.toy import ToyGenerator

    gen = ToyGenerator().eval()
    images = sample_grid(gen, seed=args.seed)  # [64, 3, 32, 32]
    out = Path(args.out)
    save_image_grid(images, out / "toy_samples.png", nrow=len(PROMPTS), scale=args.scale)
    picks = torch.cat([images[: len(PROMPTS)][::2], images[len(PROMPTS) : 2 * len(PROMPTS)][1::2]])  # [16, 3, 32, 32] every shape and colour
    save_map_grid(picks, psm_maps(picks), out / "toy_psm_maps.png", nrow=8, scale=args.scale + 1)
    print(f"wrote {out / 'toy_samples.png'} and {out / 'toy_psm_maps.png'}")


if __name__ == "__main__":
    main()
