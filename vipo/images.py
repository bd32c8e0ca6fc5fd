"""Image grids for run records (PNG, via Pillow)."""

from __future__ import annotations

from pathlib import Path

import torch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # [N, 3, H, W]


def heat(maps: torch.Tensor) -> torch.Tensor:
    """Maps [N, H, W] in [0, 1] -> RGB [N, 3, H, W] (black -> red -> yellow -> white)."""
    m = maps.detach().float().clamp(0, 1).cpu()  # [N, H, W]
    r = (3 * m).clamp(0, 1)
    g = (3 * m - 1).clamp(0, 1)
    b = (3 * m - 2).clamp(0, 1)
    return torch.stack([r, g, b], dim=1)  # [N, 3, H, W]


def make_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> torch.Tensor:
    """[N, 3, H, W] -> [3, rows*(H+pad)+pad, nrow*(W+pad)+pad] on a white canvas."""
    n, c, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    canvas = torch.ones(c, rows * (h + pad) + pad, min(n, nrow) * (w + pad) + pad, dtype=images.dtype)
    if images.dtype == torch.uint8:
        canvas *= 255
    for i in range(n):
        y, x = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        canvas[:, y:y + h, x:x + w] = images[i]
    return canvas


def save_png(grid: torch.Tensor, path: str | Path, scale: int = 1) -> None:
    from PIL import Image

    from vipo.records import atomic_write_bytes

    arr = to_uint8(grid.float() / 255 if grid.dtype == torch.uint8 else grid)  # [3, H, W]
    img = Image.fromarray(arr.permute(1, 2, 0).numpy())
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> None:
    if images.dim() == 5:  # video [N, 3, F, H, W]: first frame of each
        images = images[:, :, 0]
    save_png(make_grid(to_uint8(images), nrow=nrow), path, scale)


def save_map_grid(images: torch.Tensor, maps: torch.Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> None:
    """Rows of (image, map) pairs; maps are resized to the image size (nearest)."""
    if images.dim() == 5:
        images, maps = images[:, :, 0], maps[:, 0]
    h, w = images.shape[-2:]
    m = torch.nn.functional.interpolate(maps[:, None].float().cpu(), size=(h, w), mode="nearest")[:, 0]  # [N, H, W]
    pairs = torch.stack([to_uint8(images), to_uint8(heat(m))], dim=1).flatten(0, 1)  # [2N, 3, H, W]
    save_png(make_grid(pairs, nrow=2 * (nrow // 2 or 1)), path, scale)
