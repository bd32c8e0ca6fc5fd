"""vipo.psm: PCA against numpy / scikit-learn, the map pipeline against the published numpy recipe,
orientation, constant maps, video maps, and FLUX 2x2 packing against diffusers."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter, gaussian_filter1d
from sklearn.decomposition import PCA

from vipo.psm import (PSMConfig, build_maps, build_video_maps, gaussian_blur1d, pack_2x2, pca,
                      unpack_2x2)


def low_rank_feats(b, n, c, rank=4, seed=0, offset=2.0):
    g = torch.Generator().manual_seed(seed)
    u, w = torch.randn(b, n, rank, generator=g), torch.randn(b, rank, c, generator=g)
    scale = 0.6 ** torch.arange(rank, dtype=torch.float32) * 5
    return (u * scale) @ w + 0.1 * torch.randn(b, n, c, generator=g) + offset * torch.randn(b, 1, c, generator=g)


# ----------------------------------------------------------------------------- PCA
@pytest.mark.parametrize("n, c", [(30, 8), (12, 40), (64, 64)])
def test_pca_matches_numpy_svd_up_to_sign(n, c):
    x = low_rank_feats(3, n, c, seed=n)
    scores, evr = pca(x, 3)
    for i in range(3):
        xc = x[i].double().numpy() - x[i].double().numpy().mean(0)
        u, s, _ = np.linalg.svd(xc, full_matrices=False)
        ref = u[:, :3] * s[:3]
        ours = scores[i].double().numpy()
        np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-4 * s[0])
        np.testing.assert_allclose(np.abs((ours * ref).sum(0)), (ref * ref).sum(0), rtol=1e-5)  # per-column sign
        np.testing.assert_allclose(evr[i].numpy(), s[:3] ** 2 / (s**2).sum(), atol=1e-6)


@pytest.mark.parametrize("solver", ["exact", "randomized"])
def test_pca_signs_match_sklearn_exactly(solver):
    x = low_rank_feats(4, 50, 20, seed=1)
    scores, evr = pca(x, 3, solver=solver)
    for i in range(4):
        ref = PCA(n_components=3)
        z = ref.fit_transform(x[i].double().numpy())
        np.testing.assert_allclose(scores[i].numpy(), z, atol=1e-4)  # same signs, not only up to sign
        np.testing.assert_allclose(evr[i].numpy(), ref.explained_variance_ratio_, atol=1e-6)


@pytest.mark.parametrize("offset", [2.0, 50.0])  # large channel means: the implicit centring must hold
def test_randomized_solver_matches_the_exact_one_on_structured_features(offset):
    x = low_rank_feats(2, 520, 300, rank=6, seed=2, offset=offset)  # max(N, C) > 500: "auto" -> randomized
    auto, evr_auto = pca(x, 3)
    exact, evr_exact = pca(x, 3, solver="exact")
    torch.testing.assert_close(auto, exact, rtol=0, atol=1e-4 * exact.abs().max().item())
    torch.testing.assert_close(evr_auto, evr_exact, rtol=0, atol=1e-5)


def test_pca_validation():
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        pca(torch.zeros(4, 5), 2)
    with pytest.raises(ValueError, match="k=6"):
        pca(torch.zeros(1, 5, 4), 6)
    with pytest.raises(KeyError, match="exact"):
        pca(torch.randn(1, 5, 4), 2, solver="lanczos")


# ----------------------------------------------------------------------------- the map pipeline
def published_map(feat: np.ndarray, grid, sigma):
    """train_vipo_flux.py's recipe on one [h, w, C] feature grid, with numpy / scipy / scikit-learn."""
    h, w, c = feat.shape
    model = PCA(n_components=3)
    z = model.fit_transform(feat.reshape(-1, c).astype(np.float64))
    lo, hi = z.min(0), z.max(0)
    s = ((hi - z) / (hi - lo) * model.explained_variance_ratio_).sum(1).reshape(h, w)
    s = gaussian_filter(s, sigma=sigma) if sigma > 0 else s
    s = (s - s.min()) / (s.max() - s.min())
    m = F.interpolate(torch.from_numpy(s).float()[None, None], size=grid, mode="bilinear",
                      align_corners=False, antialias=True)[0, 0]
    return (m - m.min()) / (m.max() - m.min())


@pytest.mark.parametrize("sigma, grid", [(1.0, (32, 24)), (0.0, (8, 8)), (2.0, (16, 16))])
def test_build_maps_reproduces_the_published_recipe(sigma, grid):
    feats = low_rank_feats(3, 12 * 10, 32, seed=3).reshape(3, 12, 10, 32)
    maps = build_maps(feats, grid, PSMConfig(orientation="reverse", blur_sigma=sigma))
    assert maps.shape == (3, *grid)
    for i in range(3):
        torch.testing.assert_close(maps[i], published_map(feats[i].numpy(), grid, sigma), rtol=0, atol=2e-5)


@pytest.mark.parametrize("shape, sigma", [((9, 11), 1.0), ((5, 7), 2.5), ((6, 4), 0.5), ((3, 3), 0.3)])
def test_blur_matches_scipy_gaussian_filter(shape, sigma):
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(4))
    ours = gaussian_blur1d(gaussian_blur1d(x, sigma, -2), sigma, -1)
    for i in range(2):
        ref = gaussian_filter(x[i].double().numpy(), sigma=sigma, mode="reflect")
        np.testing.assert_allclose(ours[i].numpy(), ref, atol=1e-6)
    assert torch.equal(gaussian_blur1d(x, 0.0, -1), x)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9), c=st.integers(3, 12),
       grid=st.tuples(st.integers(1, 20), st.integers(1, 20)), seed=st.integers(0, 2**16),
       orientation=st.sampled_from(["border", "reverse", "none"]),
       aggregation=st.sampled_from(["variance", "mean", "first"]), sigma=st.sampled_from([0.0, 0.5, 1.0]))
def test_maps_lie_in_the_unit_interval(b, h, w, c, grid, seed, orientation, aggregation, sigma):
    feats = torch.randn(b, h, w, c, generator=torch.Generator().manual_seed(seed)) * 3
    cfg = PSMConfig(k=min(3, h * w, c), orientation=orientation, aggregation=aggregation, blur_sigma=sigma)
    maps = build_maps(feats, grid, cfg)
    assert maps.shape == (b, *grid) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1
    # each map either spans [0, 1] or is the all-ones fallback
    for m in maps:
        assert (m.min() == 0 and m.max() == 1) or torch.equal(m, torch.ones_like(m))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(4, 10), w=st.integers(4, 10), c=st.integers(4, 16), seed=st.integers(0, 2**16),
       aggregation=st.sampled_from(["variance", "mean", "first"]))
def test_border_orientation_ignores_the_sign_of_the_features(h, w, c, seed, aggregation):
    feats = torch.randn(2, h, w, c, generator=torch.Generator().manual_seed(seed))
    cfg = PSMConfig(aggregation=aggregation)
    torch.testing.assert_close(build_maps(-feats, (16, 16), cfg), build_maps(feats, (16, 16), cfg),
                               rtol=0, atol=1e-5)


def object_scene(seed=0):
    """12 x 12 feature grid: a 6 x 6 'object' with its own feature vector on a background."""
    g = torch.Generator().manual_seed(seed)
    obj = torch.zeros(12, 12, dtype=torch.bool)
    obj[3:9, 4:10] = True
    a, b = torch.randn(32, generator=g), torch.randn(32, generator=g)
    feats = torch.where(obj[..., None], a, b) + 0.1 * torch.randn(12, 12, 32, generator=g)
    return feats[None], obj


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("aggregation", ["variance", "mean", "first"])
def test_object_scores_higher_than_background_under_border(sign, aggregation):
    feats, obj = object_scene()
    m = build_maps(sign * feats, (12, 12), PSMConfig(aggregation=aggregation))[0]
    assert m[obj].mean() > m[~obj].mean() + 0.5


@pytest.mark.parametrize("aggregation", ["variance", "mean"])
def test_rank_one_features_give_a_clean_two_level_map(aggregation):
    # two exact feature vectors: components 2 and 3 are pure round-off and must not add noise
    _, obj = object_scene()
    feats = torch.where(obj[..., None], torch.linspace(-1, 2, 32), torch.linspace(3, 0, 32))[None]
    m = build_maps(feats, (12, 12), PSMConfig(aggregation=aggregation, blur_sigma=0.0))[0]
    assert torch.equal(m, obj.float())


@pytest.mark.parametrize("value", [0.0, 0.1, -3.7])
@pytest.mark.parametrize("solver", ["exact", "randomized"])
def test_constant_features_give_all_ones(value, solver):
    feats = torch.full((2, 6, 5, 16), value)
    for normalize in ("minmax", "mean_one"):
        maps = build_maps(feats, (8, 8), PSMConfig(normalize=normalize, pca_solver=solver))
        assert torch.equal(maps, torch.ones(2, 8, 8))
    scores, evr = pca(feats.reshape(2, 30, 16), 3, solver=solver)
    assert torch.equal(scores, torch.zeros(2, 30, 3)) and torch.equal(evr, torch.zeros(2, 3))


def test_one_constant_image_does_not_affect_the_others():
    feats, _ = object_scene()
    both = torch.cat([feats, torch.full_like(feats, 0.3)])
    maps = build_maps(both, (12, 12))
    assert torch.equal(maps[1], torch.ones(12, 12))
    torch.testing.assert_close(maps[0], build_maps(feats, (12, 12))[0])


def test_mean_one_normalisation():
    feats = low_rank_feats(3, 64, 16, seed=5).reshape(3, 8, 8, 16)
    unit = build_maps(feats, (16, 16))
    mean_one = build_maps(feats, (16, 16), PSMConfig(normalize="mean_one"))
    torch.testing.assert_close(mean_one.mean((1, 2)), torch.ones(3))
    torch.testing.assert_close(mean_one, unit / unit.mean((1, 2), keepdim=True))  # same shape of map


def test_config_validation():
    for bad in [dict(k=0), dict(k=2.5), dict(orientation="up"), dict(aggregation="sum"), dict(normalize="z"),
                dict(blur_sigma=-1.0), dict(temporal_sigma=-0.1), dict(pca_solver="lanczos")]:
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            PSMConfig(**bad)


# ----------------------------------------------------------------------------- video
@pytest.mark.parametrize("normalize", ["minmax", "mean_one"])
def test_one_frame_video_equals_the_image_path(normalize):
    feats = low_rank_feats(2, 49, 16, seed=6).reshape(2, 7, 7, 16)
    cfg = PSMConfig(normalize=normalize, temporal_sigma=0.7)
    video = build_video_maps(feats[:, None], (1, 10, 12), cfg)
    assert video.shape == (2, 1, 10, 12)
    assert torch.equal(video[:, 0], build_maps(feats, (10, 12), cfg))


def test_video_maps_are_per_frame_maps_resampled_in_time():
    frames = low_rank_feats(2 * 3, 36, 16, seed=7).reshape(2, 3, 6, 6, 16)  # [B, F=3, h, w, C]
    per_frame = build_maps(frames.reshape(6, 6, 6, 16), (8, 8)).reshape(2, 3, 8, 8)
    cfg = PSMConfig(temporal_sigma=0.0)
    assert torch.equal(build_video_maps(frames, (3, 8, 8), cfg), per_frame)
    two = build_video_maps(frames, (2, 8, 8), cfg)  # end frames aligned: latent 0 <- frame 0, 1 <- frame 2
    assert torch.equal(two[:, 0], per_frame[:, 0]) and torch.equal(two[:, 1], per_frame[:, 2])
    five = build_video_maps(frames, (5, 8, 8), cfg)  # linear in between: latent 1 = (frame 0 + frame 1) / 2
    torch.testing.assert_close(five[:, 1], (per_frame[:, 0] + per_frame[:, 1]) / 2)


def test_video_temporal_blur_matches_scipy():
    frames = low_rank_feats(4, 36, 16, seed=8).reshape(1, 4, 6, 6, 16)
    per_frame = build_maps(frames[0], (6, 6)).numpy()  # [4, 6, 6]
    ref = gaussian_filter1d(per_frame.astype(np.float64), 0.8, axis=0, mode="reflect")
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    ours = build_video_maps(frames, (4, 6, 6), PSMConfig(temporal_sigma=0.8))[0]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)


# ----------------------------------------------------------------------------- FLUX packing
def test_pack_by_hand():
    x = torch.arange(8.0).reshape(1, 2, 2, 2)  # [B=1, C=2, 2, 2]: one token holding both channels
    assert torch.equal(pack_2x2(x), torch.arange(8.0).reshape(1, 1, 8))
    m = torch.arange(16.0).reshape(1, 4, 4)  # a map, packed as C = 1: 2x2 blocks in raster order
    expected = torch.tensor([[[0.0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]])
    assert torch.equal(pack_2x2(m), expected)


def test_pack_round_trip_and_errors():
    x = torch.randn(3, 16, 6, 10)
    tokens = pack_2x2(x)
    assert tokens.shape == (3, 15, 64)
    assert torch.equal(unpack_2x2(tokens, 6, 10), x)
    with pytest.raises(ValueError, match="even"):
        pack_2x2(torch.zeros(1, 4, 5, 6))
    with pytest.raises(ValueError, match="even"):
        unpack_2x2(tokens, 5, 12)
    with pytest.raises(ValueError, match="tokens must be"):
        unpack_2x2(tokens, 8, 10)


def test_pack_matches_diffusers_flux_pipeline():
    from diffusers import FluxPipeline

    x = torch.randn(2, 16, 8, 12)
    ref = FluxPipeline._pack_latents(x, 2, 16, 8, 12)
    assert torch.equal(pack_2x2(x), ref)
    assert torch.equal(unpack_2x2(ref, 8, 12), FluxPipeline._unpack_latents(ref, 8 * 8, 12 * 8, 8))
    m = torch.rand(2, 8, 12)
    assert torch.equal(pack_2x2(m), FluxPipeline._pack_latents(m[:, None], 2, 1, 8, 12))
