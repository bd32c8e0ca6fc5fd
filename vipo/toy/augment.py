"""Colour and quality augmentations for the toy classifiers (the judge must survive GRPO's drift).

A plain classifier drops to chance once images turn reddish (docs/DESIGN.md §6), so training sees tints,
tinted backgrounds, per-channel gains, reddening, channel swaps, grey-scale, noise, blur and contrast
changes. Shape labels survive all of them; the colour label is kept only where the object's colour
name is still meaningful (mild tints, gains, background tints, noise, blur), and ``colour_valid`` marks
the samples whose colour loss should count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _where(p: float, n: int, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=g) < p).view(n, 1, 1, 1)  # [n, 1, 1, 1] bool


def _u(lo: float, hi: float, shape, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def colour_augment(
    images: torch.Tensor, masks: torch.Tensor, g: torch.Generator, p: float = 0.7
) -> tuple[torch.Tensor, torch.Tensor]:
    """images [n, 3, H, W] in [0, 1], object masks [n, H, W] -> (augmented images, colour_valid [n]).

    Each sample is augmented with probability ``p``; an augmented sample gets each operation below
    independently with its own probability.
    """
    n = images.shape[0]
    on = _where(p, n, g)  # [n, 1, 1, 1]
    x = images.clone()
    valid = torch.ones(n, dtype=torch.bool)
    mask = masks.unsqueeze(1)  # [n, 1, H, W]

    # Tint of the whole image towards a random colour; a strong tint voids the colour label.
    w = _u(0.0, 0.45, (n, 1, 1, 1), g) * (on & _where(0.5, n, g))  # [n, 1, 1, 1]
    x = torch.lerp(x, torch.rand(n, 3, 1, 1, generator=g), w)
    valid &= w.flatten() < 0.25
    # Tinted background only (object untouched).
    wb = _u(0.0, 0.6, (n, 1, 1, 1), g) * (on & _where(0.3, n, g)) * (1 - mask)  # [n, 1, H, W]
    x = torch.lerp(x, torch.rand(n, 3, 1, 1, generator=g), wb)
    # Per-channel gains and offsets.
    gain_on = on & _where(0.5, n, g)
    x = torch.where(gain_on, x * _u(0.75, 1.25, (n, 3, 1, 1), g) + _u(-0.08, 0.08, (n, 3, 1, 1), g), x)
    # Reddening, the drift of a redness-trained generator: R up, G and B down.
    red = _u(0.0, 0.35, (n, 1, 1, 1), g) * (on & _where(0.3, n, g))  # [n, 1, 1, 1]
    x = x + red * torch.tensor([1.0, -0.5, -0.5]).view(1, 3, 1, 1)
    valid &= red.flatten() < 0.1
    # Channel permutation (never the identity) and grey-scale: the colour name is gone.
    perm_on = on & _where(0.15, n, g)
    perms = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    idx = perms[torch.randint(len(perms), (n,), generator=g)]  # [n, 3]
    permuted = x.gather(1, idx.view(n, 3, 1, 1).expand_as(x))
    x = torch.where(perm_on, permuted, x)
    grey_on = on & _where(0.1, n, g)
    x = torch.where(grey_on, x.mean(dim=1, keepdim=True).expand_as(x), x)
    valid &= ~(perm_on | grey_on).flatten()
    # Contrast around the per-image mean.
    c = torch.where(on & _where(0.2, n, g), _u(0.5, 1.2, (n, 1, 1, 1), g), torch.ones(n, 1, 1, 1))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + c * (x - mean)
    # Blur (3x3 binomial) and pixel noise.
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    x = torch.where(on & _where(0.25, n, g), blurred, x)
    sigma = _u(0.0, 0.08, (n, 1, 1, 1), g) * (on & _where(0.5, n, g))
    x = x + sigma * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1), valid
