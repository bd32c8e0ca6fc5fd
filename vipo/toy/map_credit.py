"""Where a map source puts its credit in the toy world, measured against the renderer's true object masks.

Per image: the mean map value inside and outside the object's mask, the share of the map's total credit that lies
on the object (a flat map's share is the object's area fraction), and the IoU of ``map > 0.5`` with the mask; mean
over held-out procedural images. It places ViPO's PCA map between the flat map and the oracle mask:

    python -m vipo.toy.map_credit [--n 512] [--seed 777101] [overrides of experiment=toy_study ...]
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import torch

from vipo.toy.segment import iou

SOURCES = ["backbone", "oracle", "oracle_inverse", "random", "ones"]


def credit_on_object(maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """``maps`` [B, H, W] >= 0 and ``masks`` [B, H, W] in {0, 1} (each image with object and background pixels)
    -> mean over images of: inside, outside (mean map value), share (credit on the object / all credit), iou."""
    m, k = maps.flatten(1).float(), masks.flatten(1).float()  # [B, H*W]
    inside = (m * k).sum(1) / k.sum(1)  # [B]
    outside = (m * (1 - k)).sum(1) / (1 - k).sum(1)  # [B]
    share = (m * k).sum(1) / m.sum(1).clamp_min(1e-12)  # [B]
    return {"inside": float(inside.mean()), "outside": float(outside.mean()), "share": float(share.mean()),
            "iou": float(iou(maps, masks).mean()), "area": float(k.mean(1).mean())}


def credit_table(n: int = 512, seed: int = 777_101, overrides: Sequence[str] = ()) -> dict[str, dict[str, float]]:
    """``credit_on_object`` of every source in ``SOURCES`` on ``n`` held-out 16x16 procedural images, each source
    with the PSM settings of ``experiment=toy_study`` (plus ``overrides``)."""
    from vipo.backbones import BACKBONES
    from vipo.components import build_on
    from vipo.config import load
    from vipo.maps import make_maps
    from vipo.toy.data import render_batch

    cfg, _ = load(["experiment=toy_study", *overrides])
    backbone = build_on(BACKBONES, cfg.backbone, torch.device("cpu"))
    batch = render_batch(n, seed, resolution=int(cfg.generator.kwargs.get("resolution", 16)))
    grid = tuple(batch.masks.shape[-2:])
    out = {}
    for source in SOURCES:
        maps = make_maps(source, batch.images, grid, cfg.psm, backbone=backbone,
                         gen=torch.Generator().manual_seed(seed))  # [n, H, W]
        out[source] = credit_on_object(maps, batch.masks)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vipo.toy.map_credit", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=512, help="held-out procedural images")
    ap.add_argument("--seed", type=int, default=777_101, help="render seed (no training stream uses it)")
    ap.add_argument("overrides", nargs="*", help="config overrides on top of experiment=toy_study")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    from vipo.config import ConfigError

    try:
        table = credit_table(args.n, args.seed, args.overrides)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"object area fraction: {next(iter(table.values()))['area']:.3f} (mean over {args.n} images)\n")
    print("| map source | mean inside the object | mean outside | share of credit on the object | IoU (map > 0.5) |")
    print("|---|---:|---:|---:|---:|")
    for source, r in table.items():
        print(f"| {source} | {r['inside']:.3f} | {r['outside']:.3f} | {r['share']:.3f} | {r['iou']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
