"""Procedural toy data: one coloured shape on a textured grey background.

Every image holds exactly one object (a shape from ``SHAPES`` in a colour from ``COLOURS``) at a random
position and size, on a grey background of one of four kinds (``BACKGROUNDS``). Rendering is vectorised
signed-distance rasterisation with a one-pixel anti-aliased edge, so a batch of thousands of images takes
a fraction of a second, and the same seed always gives the same batch.

Prompts are ``"a <colour> <shape>"``; ``PROMPTS`` lists all of them in a fixed order (colour-major), and
the toy generator's class index of a prompt is its position in that list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SHAPES: list[str] = ["circle", "square", "triangle", "cross"]
COLOURS: list[str] = ["red", "green", "blue", "yellow"]
BACKGROUNDS: list[str] = ["plain", "gradient", "stripes", "noise"]
PROMPTS: list[str] = [f"a {c} {s}" for c in COLOURS for s in SHAPES]

# Base RGB of each colour (jittered per image by +-COLOUR_JITTER and scaled by a brightness factor).
PALETTE = torch.tensor(
    [
        [0.88, 0.12, 0.12],  # red
        [0.15, 0.72, 0.20],  # green
        [0.15, 0.25, 0.90],  # blue
        [0.92, 0.84, 0.12],  # yellow
    ]
)
COLOUR_JITTER = 0.06
RADIUS_RANGE = (0.14, 0.27)  # object half-size as a fraction of the image side (9-17 px at 32x32)

_PROMPT_INDEX = {p: i for i, p in enumerate(PROMPTS)}


def prompt_to_label(prompt: str) -> tuple[int, int]:
    """``"a red triangle"`` -> (shape index, colour index); a ValueError for anything else."""
    idx = _PROMPT_INDEX.get(prompt.strip().lower())
    if idx is None:
        raise ValueError(
            f"unknown toy prompt {prompt!r}: expected 'a <colour> <shape>' with colour in {COLOURS} "
            f"and shape in {SHAPES}"
        )
    return idx % len(SHAPES), idx // len(SHAPES)


def label_to_prompt(shape_idx: int, colour_idx: int) -> str:
    return PROMPTS[colour_idx * len(SHAPES) + shape_idx]


def prompt_index(prompt: str) -> int:
    """Position of ``prompt`` in ``PROMPTS`` (the generator's class label)."""
    shape, colour = prompt_to_label(prompt)
    return colour * len(SHAPES) + shape


def as_generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


# ----------------------------------------------------------------------------------------------- shapes
def _shape_sdf(shape: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Signed distance (in units of the object radius, < 0 inside) for each sample's shape.

    shape [n]; px, py [n, H, W] coordinates relative to the object centre divided by its radius.
    """
    ax, ay = px.abs(), py.abs()
    circle = torch.sqrt(px**2 + py**2) - 1.0  # [n, H, W]
    square = torch.maximum(ax, ay) - 0.85
    # Equilateral triangle, apex up (image y grows downwards), centroid at the origin.
    r3 = math.sqrt(3.0) / 2.0
    tri = torch.maximum(torch.maximum(py, r3 * px - 0.5 * py), -r3 * px - 0.5 * py) - 0.55
    bar_h = torch.maximum(ax - 0.95, ay - 0.32)
    bar_v = torch.maximum(ax - 0.32, ay - 0.95)
    cross = torch.minimum(bar_h, bar_v)
    table = torch.stack([circle, square, tri, cross], dim=1)  # [n, 4, H, W]
    return table.gather(1, shape.view(-1, 1, 1, 1).expand(-1, 1, *px.shape[1:])).squeeze(1)


# ------------------------------------------------------------------------------------------ backgrounds
def _backgrounds(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Grey backgrounds [n, H, W] in [0, 1]; kind [n] indexes ``BACKGROUNDS``; u, v [H, W] in (0, 1)."""
    n, (H, W) = kind.shape[0], u.shape
    rand = lambda *s: torch.rand(*s, generator=g)
    level = 0.3 + 0.4 * rand(n, 1, 1)  # [n, 1, 1] mean grey
    angle = 2 * math.pi * rand(n, 1, 1)
    along = torch.cos(angle) * (u - 0.5) + torch.sin(angle) * (v - 0.5)  # [n, H, W] in about [-0.7, 0.7]
    gradient = level + (0.2 + 0.25 * rand(n, 1, 1)) * along
    freq = 3.0 + 3.0 * rand(n, 1, 1)  # cycles per image
    stripes = level + (0.05 + 0.08 * rand(n, 1, 1)) * torch.sin(2 * math.pi * (freq * along + rand(n, 1, 1)))
    coarse = torch.randn(n, 1, 8, 8, generator=g)
    coarse = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    noise = level + 0.07 * coarse[:, 0] + 0.02 * torch.randn(n, H, W, generator=g)
    plain = level.expand(n, H, W)
    table = torch.stack([plain, gradient, stripes, noise], dim=1)  # [n, 4, H, W]
    return table.gather(1, kind.view(-1, 1, 1, 1).expand(-1, 1, H, W)).squeeze(1).clamp(0, 1)


# --------------------------------------------------------------------------------------------- batches
@dataclass
class ToyBatch:
    images: torch.Tensor  # [n, 3, H, W] in [0, 1]
    shape_idx: torch.Tensor  # [n] long
    colour_idx: torch.Tensor  # [n] long
    background_idx: torch.Tensor  # [n] long
    masks: torch.Tensor  # [n, H, W] object coverage in [0, 1]
    prompts: list[str]


def render_batch(
    n: int,
    seed: int | torch.Generator = 0,
    *,
    resolution: int = 32,
    shape_idx: torch.Tensor | Sequence[int] | None = None,
    colour_idx: torch.Tensor | Sequence[int] | None = None,
    background_idx: torch.Tensor | Sequence[int] | None = None,
) -> ToyBatch:
    """Render ``n`` images; labels not given are drawn uniformly. Returns images, labels and masks."""
    g = as_generator(seed)
    pick = lambda given, k: (
        torch.randint(k, (n,), generator=g) if given is None else torch.as_tensor(given, dtype=torch.long)
    )
    shape, colour, kind = pick(shape_idx, len(SHAPES)), pick(colour_idx, len(COLOURS)), pick(background_idx, 4)
    for name, t in (("shape_idx", shape), ("colour_idx", colour), ("background_idx", kind)):
        if t.shape != (n,):
            raise ValueError(f"{name} must have {n} entries, got shape {tuple(t.shape)}")

    res = resolution
    coords = (torch.arange(res, dtype=torch.float32) + 0.5) / res  # pixel centres in (0, 1)
    v, u = torch.meshgrid(coords, coords, indexing="ij")  # [H, W] rows (y) and columns (x)
    radius = RADIUS_RANGE[0] + (RADIUS_RANGE[1] - RADIUS_RANGE[0]) * torch.rand(n, generator=g)  # [n]
    margin = radius + 0.03
    cx = margin + (1 - 2 * margin) * torch.rand(n, generator=g)  # [n]
    cy = margin + (1 - 2 * margin) * torch.rand(n, generator=g)
    r = radius.view(n, 1, 1)
    px, py = (u - cx.view(n, 1, 1)) / r, (v - cy.view(n, 1, 1)) / r  # [n, H, W]
    dist_px = _shape_sdf(shape, px, py) * r * res  # [n, H, W] signed distance in pixels
    mask = (0.5 - dist_px).clamp(0, 1)  # one-pixel anti-aliased edge

    base = PALETTE[colour]  # [n, 3]
    rgb = base + COLOUR_JITTER * (2 * torch.rand(n, 3, generator=g) - 1)
    rgb = (rgb * (0.85 + 0.2 * torch.rand(n, 1, generator=g))).clamp(0, 1)  # [n, 3]
    bg = _backgrounds(kind, u, v, g)  # [n, H, W]
    m = mask.unsqueeze(1)  # [n, 1, H, W]
    images = m * rgb.view(n, 3, 1, 1) + (1 - m) * bg.unsqueeze(1)  # [n, 3, H, W]
    prompts = [label_to_prompt(int(s), int(c)) for s, c in zip(shape, colour)]
    return ToyBatch(images.clamp(0, 1), shape, colour, kind, mask, prompts)


def sample_batch(
    n: int, seed: int | torch.Generator = 0, *, resolution: int = 32, **labels
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """``n`` images [n, 3, R, R] in [0, 1], shape_idx [n], colour_idx [n] and their prompts.

    Deterministic for an integer seed; pass a ``torch.Generator`` to continue a stream. Keyword
    ``shape_idx`` / ``colour_idx`` / ``background_idx`` fix the labels instead of drawing them.
    """
    b = render_batch(n, seed, resolution=resolution, **labels)
    return b.images, b.shape_idx, b.colour_idx, b.prompts


def prompts_for(n: int, seed: int | torch.Generator = 0) -> list[str]:
    """``n`` prompts drawn uniformly from ``PROMPTS`` (for evaluation sets)."""
    idx = torch.randint(len(PROMPTS), (n,), generator=as_generator(seed))
    return [PROMPTS[i] for i in idx.tolist()]
