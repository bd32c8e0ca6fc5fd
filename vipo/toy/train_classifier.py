"""Train a toy shape/colour classifier (the shipped PSM backbone and the shipped judge come from here).

    python -m vipo.toy.train_classifier --role backbone   # width 32, seed 0  (~2-4 min on 1-2 cores)
    python -m vipo.toy.train_classifier --role judge      # width 48, seed 1

Two instances on purpose (docs/DESIGN.md §6): the network that builds the perceptual maps must not be the
one that judges the result, or the evaluation would be circular. They differ in width, initialisation
and data stream (seeded by ``--seed``); both see the colour augmentations of ``vipo.toy.augment`` so
that a reddened or tinted image of a triangle is still a triangle. The held-out test set is rendered
from a seed no training stream uses; accuracy on it, clean and augmented, is printed and saved beside
the weights as ``<name>.metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vipo.toy.augment import colour_augment
from vipo.toy.data import as_generator, render_batch
from vipo.toy.nets import SHIPPED, ToyClassifier, save_weights

ROLES = {"backbone": {"width": 32, "seed": 0}, "judge": {"width": 48, "seed": 1}}
TEST_SEED = 987_654_321  # held-out images: no training stream starts here


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=sorted(ROLES), default="judge", help="which shipped instance to train")
    p.add_argument("--width", type=int, default=None, help="channels of stage 1 (default from --role)")
    p.add_argument("--seed", type=int, default=None, help="seed of init and data (default from --role)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps")
    p.add_argument("--batch", type=int, default=128, help="images per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate")
    p.add_argument("--p-augment", type=float, default=0.7, help="probability that a sample is augmented")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--test-size", type=int, default=2048, help="held-out images for the final accuracy")
    p.add_argument("--out", default=None, help="weights path (default: the shipped file of --role)")
    return p.parse_args(argv)


@torch.no_grad()
def accuracy(net: ToyClassifier, n: int, augment: bool, seed: int = TEST_SEED, chunk: int = 512) -> dict:
    """Shape / colour accuracy on ``n`` held-out images (colour only where the label survives)."""
    g = as_generator(seed)
    hits = {"shape": 0.0, "colour": 0.0, "colour_n": 0.0}
    for start in range(0, n, chunk):
        b = render_batch(min(chunk, n - start), g)
        images, valid = colour_augment(b.images, b.masks, g, p=1.0) if augment else (b.images, None)
        out = net(images)
        colour_ok = out["colour"].argmax(1) == b.colour_idx  # [n]
        valid = torch.ones_like(colour_ok) if valid is None else valid
        hits["shape"] += (out["shape"].argmax(1) == b.shape_idx).sum().item()
        hits["colour"] += (colour_ok & valid).sum().item()
        hits["colour_n"] += valid.sum().item()
    return {"shape_acc": hits["shape"] / n, "colour_acc": hits["colour"] / max(1.0, hits["colour_n"])}


def train(args) -> tuple[Path, dict]:
    role = ROLES[args.role]
    width = args.width or role["width"]
    seed = role["seed"] if args.seed is None else args.seed
    torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    net = ToyClassifier(width=width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05)
    g = as_generator(10_000 + seed)
    warmup = max(1, args.steps // 20)
    t0 = time.time()
    for step in range(args.steps):
        frac = max(0.0, (step - warmup) / max(1, args.steps - warmup))
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        b = render_batch(args.batch, g)
        images, valid = colour_augment(b.images, b.masks, g, p=args.p_augment)  # [B, 3, H, W], [B]
        out = net(images)
        shape_loss = F.cross_entropy(out["shape"], b.shape_idx)
        colour_loss = (F.cross_entropy(out["colour"], b.colour_idx, reduction="none") * valid).sum() / valid.sum().clamp(min=1)
        loss = shape_loss + colour_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0 or step + 1 == args.steps:
            print(f"step {step + 1:4d}  shape {shape_loss.item():.3f}  colour {colour_loss.item():.3f}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    net.eval()
    minutes = (time.time() - t0) / 60
    metrics = {"clean": accuracy(net, args.test_size, augment=False),
               "augmented": accuracy(net, args.test_size, augment=True),
               "steps": args.steps, "seed": seed, "width": width, "train_minutes": round(minutes, 2)}
    out = Path(args.out) if args.out else SHIPPED[args.role]
    save_weights(net, out, net.config, role=args.role, steps=args.steps, seed=seed)
    out.with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1), flush=True)
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)
    return out, metrics


def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
