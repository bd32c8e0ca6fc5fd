"""Toy-world metrics: does a generated image show the prompted object, and does it look like real data?

``ToyEvaluator().evaluate(images [N, 3, 32, 32] in [0, 1], prompts)`` returns

- ``shape_acc`` / ``colour_acc``: the judge classifier's accuracy on the prompted shape / colour;
- ``fd``: Fréchet distance between the judge's pooled features (spatial means of all three stages: the
  last stage is nearly colour-blind by training, the first one sees colour) of the images and of real images
  (reference statistics from ``REFERENCE_SIZE`` procedural images, computed once per process and cached);
  like FID it is biased upwards for small N, so compare values at equal N only (``fd_floor`` gives the
  value that N real images reach);
- ``reward_<name>``: the mean of each rule-based reward (redness, object_brightness, ...).

The judge is a classifier instance separate from the PSM backbone (see ``vipo.toy.train_classifier``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vipo.rewards.rules import Centred, ObjectBrightness, Redness, UniformBackground
from vipo.toy.data import as_generator, prompt_to_label, render_batch
from vipo.toy.nets import ToyClassifier, load_classifier, resolve_weights

REFERENCE_SIZE = 2048  # real images behind the FD reference statistics
REFERENCE_SEED = 424_242  # their seed (fixed: every run compares against the same statistics)
_REFERENCE_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def feature_stats(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """feats [N, D] -> (mean [D], covariance [D, D]) in float64."""
    f = feats.double()
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / max(1, f.shape[0] - 1)


def _sqrtm_psd(mat: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(mat)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(mu1, cov1, mu2, cov2, sqrt_cov1: torch.Tensor | None = None) -> float:
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2) for symmetric PSD covariances."""
    s1 = _sqrtm_psd(cov1) if sqrt_cov1 is None else sqrt_cov1
    inner = s1 @ cov2 @ s1  # [D, D] symmetric PSD; same trace-sqrt as C1 C2
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt)


class ToyEvaluator:
    """Judge-based toy metrics; ``judge_weights``: "shipped" or a path to classifier weights."""

    fd_features = "pooled_all"  # which judge output the Fréchet distance compares

    def __init__(self, judge_weights: str = "shipped", resolution: int = 32, batch_size: int = 256):
        self.judge: ToyClassifier = load_classifier(judge_weights, kind="judge")
        self.key = (str(resolve_weights(judge_weights, "judge")), REFERENCE_SIZE, REFERENCE_SEED)
        self.resolution = resolution
        self.batch_size = batch_size
        self.rewards = {"redness": Redness(), "object_brightness": ObjectBrightness(),
                        "uniform_background": UniformBackground(), "centred": Centred()}

    @torch.no_grad()
    def judge_outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Judge logits and pooled features for images [N, 3, H, W] in [0, 1] (resized to 32 if needed)."""
        x = images.float()
        if x.shape[-2:] != (self.resolution,) * 2:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear", antialias=True, align_corners=False)
        outs = [self.judge(chunk) for chunk in x.split(self.batch_size)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def reference(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, covariance, covariance^1/2) of judge features on real images, cached per process."""
        if self.key not in _REFERENCE_CACHE:
            images = render_batch(REFERENCE_SIZE, REFERENCE_SEED).images  # [N, 3, 32, 32]
            mu, cov = feature_stats(self.judge_outputs(images)[self.fd_features])
            _REFERENCE_CACHE[self.key] = (mu, cov, _sqrtm_psd(cov))
        return _REFERENCE_CACHE[self.key]

    def fd(self, features: torch.Tensor) -> float:
        mu_r, cov_r, sqrt_r = self.reference()
        mu, cov = feature_stats(features)
        return frechet_distance(mu_r, cov_r, mu, cov, sqrt_cov1=sqrt_r)

    def fd_floor(self, n: int, seed: int = 7) -> float:
        """FD that ``n`` real images (a fresh seed) reach: the small-sample bias floor."""
        return self.fd(self.judge_outputs(render_batch(n, as_generator(seed)).images)[self.fd_features])

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ToyEvaluator expects images [N, 3, H, W], got {tuple(images.shape)}")
        if len(prompts) != images.shape[0]:
            raise ValueError(f"ToyEvaluator: {images.shape[0]} images but {len(prompts)} prompts")
        labels = torch.tensor([prompt_to_label(p) for p in prompts])  # [N, 2] (shape, colour)
        out = self.judge_outputs(images)
        metrics = {
            "shape_acc": (out["shape"].argmax(1) == labels[:, 0]).float().mean().item(),
            "colour_acc": (out["colour"].argmax(1) == labels[:, 1]).float().mean().item(),
            "fd": self.fd(out[self.fd_features]),
        }
        for name, reward in self.rewards.items():
            metrics[f"reward_{name}"] = reward(images.float(), list(prompts)).mean().item()
        return metrics
