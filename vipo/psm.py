"""Perceptual Structuring Module: frozen-backbone features -> perceptual maps M in [0, 1].

Per image: patch features [h*w, C] -> centre -> PCA (top k) -> each component min-max to [0, 1]
-> orientation (a component's sign is arbitrary) -> aggregation (EVR-weighted sum by default)
-> optional Gaussian blur on the feature grid -> bilinear antialiased resize to the latent grid
-> final normalisation. Video: per-frame maps, linear resampling in time, temporal blur, renormalised.
A map with no contrast (range < 1e-6, e.g. constant features) becomes all ones (plain GRPO).

PCA signs follow scikit-learn (``svd_flip(u_based_decision=False)``): in each component the loading
with the largest magnitude is positive, so ``orientation="reverse"`` reproduces the official code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vipo.registry import Registry

PCA_SOLVERS: Registry[Callable[[Tensor, int], tuple[Tensor, Tensor]]] = Registry("pca solver")
ORIENTATIONS: Registry[Callable[[Tensor], Tensor]] = Registry("psm orientation")
AGGREGATIONS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("psm aggregation")
NORMALIZERS: Registry[Callable[[Tensor], Tensor]] = Registry("psm normalisation")
FLAT = 1e-6  # a map whose range is below this has no contrast -> all ones


@dataclass
class PSMConfig:
    k: int = 3  # principal components kept (paper: K = 3)
    orientation: str = "border"  # component polarity: "border" (border low) | "reverse" (official) | "none"
    aggregation: str = "variance"  # "variance" (EVR-weighted sum) | "mean" | "first" (component 1 only)
    blur_sigma: float = 1.0  # Gaussian blur std on the feature grid, in patches; 0 = off
    normalize: str = "minmax"  # "minmax": [0, 1] | "mean_one": min-max, then scaled to mean 1
    temporal_sigma: float = 0.5  # video only: Gaussian blur std across latent frames; 0 = off
    pca_solver: str = "auto"  # "exact" (SVD) | "randomized" (block Krylov) | "auto" (by input size)

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"PSMConfig.k must be an integer >= 1, got {self.k!r}")
        for field, registry in [("orientation", ORIENTATIONS), ("aggregation", AGGREGATIONS),
                                ("normalize", NORMALIZERS)]:
            if getattr(self, field) not in registry:
                raise ValueError(f"PSMConfig.{field}={getattr(self, field)!r}; known: {registry.names()}")
        if self.pca_solver not in PCA_SOLVERS and self.pca_solver != "auto":
            raise ValueError(f"PSMConfig.pca_solver={self.pca_solver!r}; known: auto, {PCA_SOLVERS.names()}")
        for field in ("blur_sigma", "temporal_sigma"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"PSMConfig.{field} must be >= 0, got {getattr(self, field)!r}")


# ----------------------------------------------------------------------------------- PCA
# A solver maps features x [B, N, C] and k to (scores [B, N, k], loadings [B, C, k]) of x centred
# per image, components sorted by decreasing variance, with arbitrary signs.
@PCA_SOLVERS.register("exact")
def _pca_exact(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Thin SVD of the centred features in float64."""
    xc = (x - x.mean(1, keepdim=True)).double()  # [B, N, C]
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)  # [B, N, r], [B, r], [B, r, C]
    return (u[..., :k] * s[:, None, :k]).float(), vh[:, :k].mT.float()


@PCA_SOLVERS.register("randomized")
def _pca_randomized(x: Tensor, k: int, oversample: int = 13, blocks: int = 3) -> tuple[Tensor, Tensor]:
    """Randomized block Krylov PCA (Musco & Musco 2015) with a fixed seed: Rayleigh-Ritz on
    span[O, S O, S^2 O] for the centred scatter S = (x - mu)^T (x - mu) and a random O [C, k + oversample].
    x (float32) is read 2 * blocks - 1 times, the mean riding on the first pass, and x - mu is never
    formed; the small [C, b] blocks are orthonormalised in float64, which keeps the basis orthonormal."""
    B, N, C = x.shape
    b = k + oversample
    if blocks * b >= min(N, C):  # small input: one block spanning everything, Rayleigh-Ritz is exact
        b, blocks = min(N, C), 1
    g = torch.Generator(device=x.device).manual_seed(0)
    q = torch.linalg.qr(torch.randn(B, C, b, generator=g, device=x.device).double()).Q  # [B, C, b]
    y = x @ q.float()  # [B, N, b]
    w = (torch.cat([y, x.new_ones(B, N, 1)], -1).mT @ x).mT.double()  # [B, C, b + 1] = x^T [y, 1]
    mu = w[..., -1:].mT / N  # [B, 1, C]
    qs, ys = [q], [y - (mu @ q).float()]  # ys[i] = (x - mu) qs[i]  [B, N, b]
    w = w[..., :-1] - N * mu.mT @ (mu @ q)  # [B, C, b] = S q
    for i in range(1, blocks):
        basis = torch.cat(qs, -1)  # [B, C, i * b]
        for _ in range(2):  # orthogonalise against the space so far; twice is enough
            w = w - basis @ (basis.mT @ w)
        qs.append(torch.linalg.qr(w).Q)  # [B, C, b]
        ys.append(x @ qs[-1].float() - (mu @ qs[-1]).float())  # [B, N, b]
        if i < blocks - 1:
            w = (ys[-1].mT @ x).mT.double() - mu.mT @ ys[-1].sum(1, keepdim=True).double()  # S qs[-1]
    basis, y = torch.cat(qs, -1), torch.cat(ys, -1)  # [B, C, m] float64, [B, N, m] = (x - mu) basis
    _, rot = torch.linalg.eigh((y.mT @ y).double())  # Rayleigh-Ritz on the [B, m, m] Gram, ascending
    rot = rot[..., -k:].flip(-1)  # [B, m, k] top-k, descending
    return y @ rot.float(), (basis @ rot).float()  # [B, N, k], [B, C, k]


def _scores(feats: Tensor, k: int, solver: str) -> tuple[Tensor, Tensor]:
    """Signed, sorted PCA scores [B, N, k] and their sums of squares [B, k] (0 for constant images)."""
    if feats.ndim != 3:
        raise ValueError(f"feats must be [B, N, C], got shape {tuple(feats.shape)}")
    B, N, C = feats.shape
    if not 1 <= k <= min(N, C):
        raise ValueError(f"k={k} must be in [1, min(N={N}, C={C})]")
    x = feats.float()
    name = ("exact" if max(N, C) <= 500 else "randomized") if solver == "auto" else solver
    scores, loadings = PCA_SOLVERS.get(name)(x, k)  # [B, N, k], [B, C, k]
    top = loadings.abs().argmax(1, keepdim=True)  # [B, 1, k]
    scores = scores * torch.where(loadings.gather(1, top) < 0, -1.0, 1.0)  # sklearn's svd_flip signs
    power = scores.square().sum(1)  # [B, k] = N * variance along each component
    # constant image: its leading spread is below 1e-5 of the features' magnitude (fp32 round-off)
    scale = N * x[:, :1].square().sum((1, 2)) + power[:, 0]  # [B] ~ |x|^2, from one token
    flat = power[:, 0] <= 1e-10 * scale  # [B]
    return torch.where(flat[:, None, None], 0.0, scores), torch.where(flat[:, None], 0.0, power)


def pca(feats: Tensor, k: int, *, solver: str = "auto") -> tuple[Tensor, Tensor]:
    """Batched PCA. feats [B, N, C] -> (scores [B, N, k], explained variance ratio [B, k]), float32.

    Each image is centred on its own mean; the ratio is relative to the image's total variance.
    ``solver``: "exact" (thin SVD), "randomized" (block Krylov, for large inputs) or "auto":
    exact when max(N, C) <= 500, as in scikit-learn. Constant images give scores 0 and ratio 0.
    """
    scores, power = _scores(feats, k, solver)  # [B, N, k], [B, k]
    x = feats.float()
    total = (x - x.mean(1, keepdim=True)).square().sum((1, 2))  # [B]
    return scores, power / total.clamp_min(1e-30)[:, None]


# ----------------------------------------------------------------------------------- map stages
def minmax(z: Tensor, dims: tuple[int, ...], *, flat_value: float = 0.5) -> Tensor:
    """(z - min) / (max - min) over ``dims``; slices with zero range get ``flat_value``."""
    lo, hi = z.amin(dims, keepdim=True), z.amax(dims, keepdim=True)
    return torch.where(hi > lo, (z - lo) / (hi - lo).clamp_min(1e-30), flat_value)


@ORIENTATIONS.register("reverse")
def _reverse(z: Tensor) -> Tensor:
    return 1 - z  # official code: (max - z) / (max - min)


@ORIENTATIONS.register("border")
def _border(z: Tensor) -> Tensor:
    """Flip each component whose 1-patch outer ring is brighter on average than the interior."""
    h, w = z.shape[-2:]
    if h < 3 or w < 3:
        return z  # no interior: leave as is
    ring = torch.ones(h, w, dtype=torch.bool, device=z.device)
    ring[1:-1, 1:-1] = False
    flip = z[..., ring].mean(-1) > z[..., ~ring].mean(-1)  # [B, k]
    return torch.where(flip[..., None, None], 1 - z, z)


@ORIENTATIONS.register("none")
def _none(z: Tensor) -> Tensor:
    return z


# An aggregation maps oriented components z [B, k, h, w] in [0, 1] and per-component variances
# [B, k] (EVR or anything proportional to it) to one map [B, h, w].
@AGGREGATIONS.register("variance")
def _variance(z: Tensor, var: Tensor) -> Tensor:
    """sum_j lambda_j z_j, lambda = EVR renormalised to sum 1 (uniform if all 0): stays in [0, 1]."""
    lam = torch.where(var.sum(-1, keepdim=True) > 0, var, 1.0)  # [B, k]
    return (z * (lam / lam.sum(-1, keepdim=True))[..., None, None]).sum(1)  # [B, h, w]


@AGGREGATIONS.register("mean")
def _mean(z: Tensor, var: Tensor) -> Tensor:
    return z.mean(1)  # [B, h, w]


@AGGREGATIONS.register("first")
def _first(z: Tensor, var: Tensor) -> Tensor:
    return z[:, 0]  # [B, h, w]


@NORMALIZERS.register("minmax")
def _to_unit(m: Tensor) -> Tensor:
    return m  # already min-max normalised by finish()


@NORMALIZERS.register("mean_one")
def _to_mean_one(m: Tensor) -> Tensor:
    return m / m.flatten(1).mean(1).reshape(-1, *[1] * (m.ndim - 1))  # mean > 0 since max == 1


def finish(m: Tensor, mode: str) -> Tensor:
    """Per-sample min-max then ``NORMALIZERS[mode]``; a map with range < FLAT becomes ones."""
    dims = tuple(range(1, m.ndim))
    flat = (m.amax(dims, keepdim=True) - m.amin(dims, keepdim=True)) < FLAT  # [B, 1, ...]
    out = NORMALIZERS.get(mode)(minmax(m, dims))
    return torch.where(flat, 1.0, out)


def unit_peak(m: Tensor) -> Tensor:
    """Each sample [B, ...] divided by its largest value (maps >= 0), so that ``finish``'s flatness test
    is relative to the map's own scale (input gradients and attention weights can be tiny)."""
    return m / m.flatten(1).amax(1).clamp_min(1e-30).reshape(-1, *[1] * (m.ndim - 1))


def gaussian_blur1d(x: Tensor, sigma: float, dim: int) -> Tensor:
    """Gaussian filter along ``dim`` like scipy.ndimage.gaussian_filter1d (mode 'reflect' =
    half-sample symmetric, truncate 4); sigma 0 is the identity."""
    if sigma == 0:
        return x
    r = int(4.0 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)  # [2r+1]
    n = x.shape[dim]
    idx = torch.arange(-r, n + r, device=x.device) % (2 * n)  # symmetric padding, any r
    idx = torch.where(idx < n, idx, 2 * n - 1 - idx)  # [n + 2r]
    windows = x.movedim(dim, -1).index_select(-1, idx).unfold(-1, 2 * r + 1, 1)  # [..., n, 2r+1]
    return (windows @ kernel).movedim(-1, dim)


# ----------------------------------------------------------------------------------- maps
def build_maps(feats: Tensor, grid: tuple[int, int], cfg: PSMConfig | None = None) -> Tensor:
    """Patch features [B, h, w, C] -> maps [B, H, W] on the latent ``grid`` = (H, W)."""
    cfg = cfg or PSMConfig()
    if feats.ndim != 4:
        raise ValueError(f"feats must be [B, h, w, C], got shape {tuple(feats.shape)}")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (H, W) with positive sizes, got {grid!r}")
    B, h, w, C = feats.shape
    scores, power = _scores(feats.reshape(B, h * w, C), cfg.k, cfg.pca_solver)  # [B, N, k], [B, k]
    bad = ~torch.isfinite(power).all(-1)  # [B]
    if bool(bad.any()):
        raise ValueError(f"non-finite features (NaN/inf) in images {bad.nonzero().flatten().tolist()}")
    z = minmax(scores.mT.reshape(B, cfg.k, h, w), (-2, -1))  # [B, k, h, w] in [0, 1]
    dead = power <= 1e-10 * power[:, :1]  # [B, k] components that are round-off only (rank < k)
    z = torch.where(dead[..., None, None], 0.5, z)
    z = ORIENTATIONS.get(cfg.orientation)(z)
    s = AGGREGATIONS.get(cfg.aggregation)(z, power)  # [B, h, w]; power is proportional to the EVR
    s = gaussian_blur1d(gaussian_blur1d(s, cfg.blur_sigma, -2), cfg.blur_sigma, -1)
    m = F.interpolate(s[:, None], size=tuple(grid), mode="bilinear", align_corners=False, antialias=True)
    return finish(m[:, 0], cfg.normalize)  # [B, H, W]


def build_video_maps(feats: Tensor, grid: tuple[int, int, int], cfg: PSMConfig | None = None) -> Tensor:
    """Per-frame features [B, F, h, w, C] -> maps [B, F_lat, H, W] for ``grid`` = (F_lat, H, W).

    Frames get min-max maps, resampled linearly in time with aligned end frames (latent frame 0 <->
    video frame 0, as in causal video VAEs), blurred across frames, then normalised per sample.
    """
    cfg = cfg or PSMConfig()
    if feats.ndim != 5:
        raise ValueError(f"feats must be [B, F, h, w, C], got shape {tuple(feats.shape)}")
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be (F_lat, H, W) with positive sizes, got {grid!r}")
    B, n_frames, h, w, C = feats.shape
    f_lat, H, W = grid
    frame_cfg = dataclasses.replace(cfg, normalize="minmax")
    m = build_maps(feats.reshape(B * n_frames, h, w, C), (H, W), frame_cfg).reshape(B, n_frames, H, W)
    if n_frames != f_lat:
        m = F.interpolate(m[:, None], size=(f_lat, H, W), mode="trilinear", align_corners=True)[:, 0]
    if f_lat > 1:
        m = gaussian_blur1d(m, cfg.temporal_sigma, 1)  # [B, F_lat, H, W]
    return finish(m, cfg.normalize)


# ----------------------------------------------------------------------------------- FLUX packing
def pack_2x2(x: Tensor) -> Tensor:
    """[B, C, H, W] (or a map [B, H, W], packed as C = 1) -> tokens [B, (H/2)(W/2), 4C], FLUX layout."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"pack_2x2 needs [B, C, H, W] with even H and W, got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)  # [B, H/2, W/2, C, 2, 2]
    return x.reshape(B, (H // 2) * (W // 2), C * 4)


def unpack_2x2(tokens: Tensor, H: int, W: int) -> Tensor:
    """Inverse of ``pack_2x2``: tokens [B, (H/2)(W/2), 4C] -> [B, C, H, W] (H, W = latent size)."""
    if H % 2 or W % 2:
        raise ValueError(f"unpack_2x2 needs even H and W, got H={H}, W={W}")
    if tokens.ndim != 3 or tokens.shape[1] != (H // 2) * (W // 2) or tokens.shape[2] % 4:
        raise ValueError(f"tokens must be [B, {(H // 2) * (W // 2)}, 4C] for H={H}, W={W}, "
                         f"got shape {tuple(tokens.shape)}")
    B, _, D = tokens.shape
    x = tokens.reshape(B, H // 2, W // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C, H/2, 2, W/2, 2]
    return x.reshape(B, D // 4, H, W)
