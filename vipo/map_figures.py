"""Map sources side by side: image | backbone PCA map | reward saliency map | generator attention map.

    python -m vipo.map_figures                                   # toy world: shipped generator, toy_match saliency
    python -m vipo.map_figures --tiny-flux --out docs/images/tiny_flux_map_sources.png
    python -m vipo.map_figures generator=flux generator.path_or_id=... reward=hps +reward.quantize=false ...

Config overrides work as for ``train.py`` (generator, reward, backbone, psm.*). Samples are ODE samples
(``eval.num_steps`` steps); the attention map is captured while they are drawn. A tile is grey where a source
does not apply (attention on the toy generator, saliency of a non-differentiable reward). ``--tiny-flux``
uses the randomly initialised FLUX test model of ``tests/tiny_models.py`` (a repository checkout is needed):
its maps show the pipeline, not a trained model's attention.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "images"
TOY_DEFAULTS = ["reward=toy_match", "backbone=toy"]
TINY_FLUX_DEFAULTS = ["generator.name=tiny_flux", "~generator.weights", "reward=object_brightness",
                      "backbone=efficientnet", "eval.num_steps=4"]


def register_tiny_flux() -> None:
    """The random FLUX test model as generator ``tiny_flux`` (its attention read like FLUX's)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny_models

    from vipo.attention import ATTENTION_MODELS
    from vipo.generators import GENERATORS

    if "tiny_flux" not in GENERATORS:
        GENERATORS.register("tiny_flux")(lambda **kw: tiny_models.tiny_flux(**kw))
    if "tiny_flux" not in ATTENTION_MODELS:
        ATTENTION_MODELS.register("tiny_flux")(ATTENTION_MODELS.get("flux"))


def source_maps(cfg, prompts: list[str], seed: int = 0) -> tuple[torch.Tensor, dict]:
    """ODE samples of ``cfg``'s generator and {source: maps [N, *grid] or None (does not apply)}."""
    from vipo.backbones import BACKBONES
    from vipo.generators import GENERATORS
    from vipo.maps import MAP_CHECKS, make_maps, map_capture
    from vipo.rewards import REWARDS
    from vipo.rollout import sample_ode
    from vipo.components import build_on, decode

    dev = torch.device("cpu")
    gen = build_on(GENERATORS, cfg.generator, dev).eval()
    reward = build_on(REWARDS, cfg.reward, dev)
    backbone = build_on(BACKBONES, cfg.backbone, dev)

    def applies(source: str) -> bool:
        try:
            MAP_CHECKS.get(source)(cfg)
            return True
        except ValueError as e:
            print(f"[map_figures] {source}: {e}")
            return False

    capture = map_capture("attention" if applies("attention") else None, gen, cfg.psm, prompts,
                          cfg.eval.num_steps, cfg.generator.name)
    with capture as captured:
        latents = sample_ode(gen, prompts, cfg.eval.num_steps, torch.Generator().manual_seed(seed))
    images = decode(gen, latents, 8)  # [N, 3, (F), H, W]
    grid = gen.map_grid()
    kw = dict(backbone=backbone, reward=reward, prompts=prompts, captured=captured,
              gen=torch.Generator().manual_seed(seed))
    maps = {"backbone": make_maps("backbone", images, grid, cfg.psm, **kw),
            "saliency": make_maps("saliency", images, grid, cfg.psm, **kw) if applies("saliency") else None,
            "attention": make_maps("attention", images, grid, cfg.psm, **kw) if captured is not None else None}
    return images, maps


def figure(images: torch.Tensor, maps: dict, size: int) -> torch.Tensor:
    """Rows of [image, map per source] tiles at ``size`` pixels -> uint8 grid [3, H', W']."""
    from vipo.images import heat, make_grid, to_uint8

    if images.dim() == 5:  # video: first frame
        images, maps = images[:, :, 0], {k: None if m is None else m[:, 0] for k, m in maps.items()}
    n = images.shape[0]
    tiles = [F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)]
    for m in maps.values():
        if m is None:
            tiles.append(torch.full((n, 3, size, size), 0.5))  # grey: the source does not apply
        else:
            tiles.append(heat(F.interpolate(m[:, None].float(), size=(size, size), mode="nearest")[:, 0]))
    rows = torch.stack(tiles, 1).flatten(0, 1)  # [N * 4, 3, size, size]
    return make_grid(to_uint8(rows), nrow=len(tiles))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    p.add_argument("--tiny-flux", action="store_true", help="the random FLUX test model (tests/tiny_models.py)")
    p.add_argument("--prompts", nargs="+", default=None, help="one sample per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="tile size in pixels")
    p.add_argument("--out", default=None, help="PNG path (default docs/images/<toy|tiny_flux>_map_sources.png)")
    args = p.parse_args(argv)

    from vipo.config import load
    from vipo.images import save_png

    if args.tiny_flux:
        register_tiny_flux()
    defaults = TINY_FLUX_DEFAULTS if args.tiny_flux else TOY_DEFAULTS
    cfg, _ = load([*defaults, "logger=none", *args.overrides])
    prompts = args.prompts or (["a red cat", "a blue ball", "a green tree"] if args.tiny_flux else
                               ["a red circle", "a green square", "a blue triangle", "a yellow cross"])
    torch.manual_seed(args.seed)
    images, maps = source_maps(cfg, prompts, args.seed)
    out = Path(args.out or DOCS / f"{'tiny_flux' if args.tiny_flux else 'toy'}_map_sources.png")
    save_png(figure(images, maps, args.size), out)
    print(f"wrote {out}: image | {' | '.join(maps)} for {len(prompts)} samples")


if __name__ == "__main__":
    main()
