"""PSM speed: batched torch maps vs the published per-image scikit-learn loop.

A group of 12 images at DINOv2-large size (37 x 37 patch tokens x 1024 channels; synthetic features:
a few smooth spatial fields - an object blob, gradients, a low-frequency wave - mixed into the channels
with decaying strengths, plus per-channel offsets and noise). Both sides build 64 x 64 maps with the
official recipe: PCA(3), each component (max - z) / (max - min), EVR-weighted sum, Gaussian blur
(sigma 1), min-max, bilinear antialiased resize, min-max. Prints both median times, the ratio, the
largest map difference, and ``BENCH psm_speedup=<ratio>`` (default threads). The same comparison
with every thread pool limited to one thread follows (``BENCH psm_speedup_1thread``): scikit-learn's
many small BLAS calls lose much of their time to threading on 2 cores, so the two ratios differ a lot.

    python bench/bench_psm.py [--repeats 5] [--group 12]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from vipo.psm import PSMConfig, build_maps

TOKENS, CHANNELS, GRID = 37, 1024, (64, 64)


def synthetic_features(group: int, seed: int = 0) -> torch.Tensor:
    """[group, 37, 37, 1024] features with a low-rank spatial structure."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-1, 1, TOKENS)
    yy, xx = torch.meshgrid(t, t, indexing="ij")  # [37, 37]
    out = []
    for _ in range(group):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([1.0, 1.0, 0.4]) + torch.tensor([-0.5, -0.5, 0.3]))
        blob = torch.sigmoid((r**2 - (yy - cy) ** 2 - (xx - cx) ** 2) * 30)  # object mask
        phase = torch.rand(1, generator=g) * 6.3
        fields = torch.stack([blob, xx, yy, torch.sin(3 * xx + phase) * torch.cos(2 * yy), blob * xx])  # [5, 37, 37]
        strength = torch.tensor([6.0, 3.0, 2.5, 1.5, 1.0])[:, None]  # [5, 1]
        mix = torch.randn(5, CHANNELS, generator=g) * strength / CHANNELS**0.5 * 8  # [5, C]
        offset = torch.randn(CHANNELS, generator=g) * 2  # [C]
        noise = torch.randn(TOKENS, TOKENS, CHANNELS, generator=g) * 0.5
        out.append(torch.einsum("fhw,fc->hwc", fields, mix) + offset + noise)
    return torch.stack(out)


def reference_maps(feats: np.ndarray, grid: tuple[int, int], sigma: float = 1.0) -> torch.Tensor:
    """The published loop (train_vipo_flux.py): scikit-learn PCA per image, numpy normalisation."""
    maps = []
    for f in feats:
        h, w, c = f.shape
        pca = PCA(n_components=3)
        z = pca.fit_transform(f.reshape(-1, c))  # [N, 3]
        lo, hi = z.min(0), z.max(0)
        s = ((hi - z) / (hi - lo) * pca.explained_variance_ratio_).sum(1).reshape(h, w)
        s = gaussian_filter(s, sigma=sigma)
        s = (s - s.min()) / (s.max() - s.min() + 1e-8)
        m = F.interpolate(torch.from_numpy(s).float()[None, None], size=grid, mode="bilinear",
                          align_corners=False, antialias=True)[0, 0]
        maps.append((m - m.min()) / (m.max() - m.min() + 1e-8))
    return torch.stack(maps)


def measure(feats: torch.Tensor, cfg: PSMConfig, repeats: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Median seconds of (ours, reference), timed interleaved so that both see the same machine load."""
    feats_np = feats.numpy()
    build_maps(feats[:2], GRID, cfg)  # warm-up
    reference_maps(feats_np[:1], GRID)
    t_ours, t_ref = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ours = build_maps(feats, GRID, cfg)
        t1 = time.perf_counter()
        ref = reference_maps(feats_np, GRID)
        t_ours.append(t1 - t0)
        t_ref.append(time.perf_counter() - t1)
    return statistics.median(t_ours), statistics.median(t_ref), ours, ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--group", type=int, default=12)
    args = ap.parse_args()

    feats = synthetic_features(args.group)
    cfg = PSMConfig(orientation="reverse")  # the official polarity, so both sides compute the same maps
    threads = torch.get_num_threads()
    t_ours, t_ref, ours, ref = measure(feats, cfg, args.repeats)
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):  # numpy / scipy / scikit-learn BLAS and OpenMP pools
        t_ours1, t_ref1, _, _ = measure(feats, cfg, args.repeats)
    torch.set_num_threads(threads)
    exact = build_maps(feats[:2], GRID, PSMConfig(orientation="reverse", pca_solver="exact"))  # slow: 2 only

    print(f"PSM maps, group of {args.group}, {TOKENS}x{TOKENS} tokens x {CHANNELS} ch -> {GRID}, "
          f"median of {args.repeats}")
    print(f"  {'':24} {f'default ({threads}) threads':>22} {'1 thread':>12}")
    print(f"  {'sklearn per-image loop':24} {t_ref * 1e3:19.1f} ms {t_ref1 * 1e3:9.1f} ms")
    print(f"  {'vipo batched build_maps':24} {t_ours * 1e3:19.1f} ms {t_ours1 * 1e3:9.1f} ms")
    print(f"  {'speed-up (target >= 20x)':24} {t_ref / t_ours:20.1f}x {t_ref1 / t_ours1:10.1f}x")
    print(f"  max |ours - reference| {(ours - ref).abs().max():.2e}, "
          f"max |ours - exact PCA| (2 images) {(ours[:2] - exact).abs().max():.2e}")
    print(f"BENCH psm_speedup={t_ref / t_ours:.1f}")
    print(f"BENCH psm_speedup_1thread={t_ref1 / t_ours1:.1f}")


if __name__ == "__main__":
    main()
