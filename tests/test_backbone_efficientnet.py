"""EfficientNet-Lite0 with its shipped ImageNet weights: shapes, frozen, and maps that find objects."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vipo.backbones import BACKBONES


@pytest.fixture(scope="module")
def bb():
    return BACKBONES.build("efficientnet")


def toy_images(n: int, res: int = 64, seed: int = 0):
    """A saturated circle / square / triangle on a grey, softly textured background, and its mask."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    imgs, masks = [], []
    for i in range(n):
        tex = F.interpolate(torch.rand(1, 1, res // 4, res // 4, generator=g), size=(res, res), mode="bilinear",
                            align_corners=False)[0, 0]
        bg = 0.45 + 0.15 * tex + 0.05 * torch.rand(res, res, generator=g)  # [res, res]
        r = res * (0.12 + 0.1 * torch.rand(1, generator=g).item())
        cx, cy = (r + (res - 2 * r) * torch.rand(1, generator=g).item() for _ in range(2))
        if i % 3 == 0:
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
        elif i % 3 == 1:
            m = ((xx - cx).abs() <= 0.85 * r) & ((yy - cy).abs() <= 0.85 * r)
        else:
            m = (yy - cy <= 0.8 * r) & (yy - cy >= -r) & ((xx - cx).abs() <= 0.6 * (yy - cy + r))
        colour = torch.rand(3, generator=g)
        img = bg.expand(3, res, res).clone()
        img[:, m] = (colour / colour.max())[:, None]
        imgs.append(img)
        masks.append(m.float())
    return torch.stack(imgs).clamp(0, 1), torch.stack(masks)


def _reference_maps(feats: torch.Tensor, grid) -> torch.Tensor:
    """Minimal PSM (used only while vipo.psm is missing): PCA top-3, border-low orientation,
    variance-weighted sum, bilinear resize, min-max."""
    b, h, w, c = feats.shape
    out = []
    for f in feats.reshape(b, h * w, c):
        f = f - f.mean(0)
        _, s, v = torch.linalg.svd(f, full_matrices=False)
        z = f @ v[:3].T  # [hw, 3]
        z = (z - z.min(0).values) / (z.max(0).values - z.min(0).values + 1e-8)
        zz = z.reshape(h, w, 3)
        border = torch.cat([zz[0], zz[-1], zz[:, 0], zz[:, -1]]).mean(0)
        z = torch.where(border > z.mean(0), 1 - z, z)
        m = (z * (s[:3] ** 2 / (s ** 2).sum())).sum(-1).reshape(1, 1, h, w)
        m = F.interpolate(m, size=grid, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        out.append((m - m.min()) / (m.max() - m.min() + 1e-8))
    return torch.stack(out)


def _maps(feats: torch.Tensor, grid) -> torch.Tensor:
    try:
        from vipo.psm import PSMConfig, build_maps
    except ImportError:
        return _reference_maps(feats, grid)
    cfg = PSMConfig()
    if dataclasses.is_dataclass(cfg) and "orientation" in {f.name for f in dataclasses.fields(cfg)}:
        cfg = dataclasses.replace(cfg, orientation="border")
    return build_maps(feats, tuple(grid), cfg)


def test_shapes_and_frozen(bb):
    f = bb.features(torch.rand(2, 3, 64, 96))
    assert f.shape == (2, 14, 14, 112) and f.dtype == torch.float32  # stage 4: stride 16 at 224
    assert bb.grid(64, 96) == (14, 14)
    bb.train()
    assert not bb.net.training and not any(p.requires_grad for p in bb.parameters())
    small = BACKBONES.get("efficientnet").from_config(resolution=128, stage=2)  # random weights
    assert small.features(torch.rand(1, 3, 32, 32)).shape == (1, 16, 16, 40)
    with pytest.raises(ValueError, match="multiple of 32"):
        BACKBONES.build("efficientnet", resolution=100)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        BACKBONES.build("efficientnet", "/tmp/missing.pth")


def test_shipped_weights_are_imagenet_trained(bb):
    """The first BatchNorm's running statistics are not the init values (0 / 1): real weights."""
    bn = bb.net._bn0
    assert bn.running_mean.abs().max() > 0.1 and (bn.running_var - 1).abs().max() > 0.1


def test_maps_highlight_the_object_on_toy_images(bb):
    imgs, masks = toy_images(30)
    maps = _maps(bb.features(imgs), (16, 16))  # [30, 16, 16] on a 16 x 16 latent-like grid
    assert maps.shape == (30, 16, 16)
    cover = F.interpolate(masks[:, None], size=(16, 16), mode="area")[:, 0]  # [30, 16, 16]
    obj, bg = cover > 0.5, cover < 0.05
    obj_mean = (maps * obj).sum((1, 2)) / obj.sum((1, 2)).clamp(min=1)
    bg_mean = (maps * bg).sum((1, 2)) / bg.sum((1, 2))
    assert (obj_mean > bg_mean).float().mean() >= 0.9
