"""Small image helpers: tile a batch into a grid, colour a map, save a PNG (PIL only, no torchvision)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2, scale: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """images [N, 3, H, W] in [0, 1] -> one image [3, rows*(H+pad)+pad, nrow*(W+pad)+pad]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"make_grid expects [N, 3, H, W], got {tuple(images.shape)}")
    if scale != 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")  # [N, 3, sH, sW]
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    grid = torch.full((3, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i].clamp(0, 1)
    return grid


def colourise(maps: torch.Tensor) -> torch.Tensor:
    """Maps [N, H, W] in [0, 1] -> RGB [N, 3, H, W] with a dark-blue -> yellow ramp (viridis-like)."""
    stops = torch.tensor(
        [[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]]
    )  # [5, 3]
    x = maps.clamp(0, 1) * (len(stops) - 1)  # [N, H, W]
    lo = x.floor().long().clamp(max=len(stops) - 2)
    frac = (x - lo).unsqueeze(-1)  # [N, H, W, 1]
    rgb = stops[lo] * (1 - frac) + stops[lo + 1] * frac  # [N, H, W, 3]
    return rgb.permute(0, 3, 1, 2)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """image [3, H, W] in [0, 1] -> PNG file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr).save(path)
    return path
