"""The toy generator: a 1.1M-parameter class-conditional rectified-flow UNet in pixel space.

Latents are the pixels mapped to [-1, 1] (an identity "VAE"): ``latent_shape() == (3, R, R)`` and
``decode(x) = clamp((x + 1) / 2, 0, 1)``. A prompt's condition is its class label, its position in
``vipo.toy.data.PROMPTS``; the empty prompt is the null class used for classifier-free guidance.
Flow convention as everywhere in vipo: x_s = (1 - s) x0 + s eps, v = eps - x0, sampling from s=1 to 0.
The network sees the timestep ``1000 * s``, as it did in pretraining (``vipo.toy.pretrain``).
Shipped weights exist for ``resolution=32`` (default) and ``resolution=16`` (faster, less accurate shapes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vipo.generators.base import Cond, Generator
from vipo.sde import sigma_schedule
from vipo.toy.data import prompt_index
from vipo.toy.nets import NULL_CLASS, build_unet, load_unet

NULL_PROMPT = ""  # the unconditional prompt


class ToyGenerator(Generator):
    """Toy rectified-flow generator; ``weights``: "shipped" (packaged EMA), None (random init) or a path."""

    def __init__(
        self,
        weights: str | None = "shipped",  # "shipped" | None (random init) | path to a safetensors file
        resolution: int = 32,  # image side in pixels; "shipped" weights exist for 32 and 16
        guidance_scale: float = 1.0,  # classifier-free guidance; 1 = conditional velocity only
        shift: float = 1.0,  # sigma-schedule shift a in a t / (1 + (a - 1) t)
    ):
        super().__init__()
        self.unet = build_unet(resolution) if weights is None else load_unet(weights, resolution)
        self.resolution = resolution
        self.guidance_scale = float(guidance_scale)
        self.shift = float(shift)

    def latent_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        labels = [NULL_CLASS if p.strip() == NULL_PROMPT else prompt_index(p) for p in prompts]
        return {"class_labels": torch.tensor(labels, dtype=torch.long, device=self._device())}  # [B]

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        labels = cond["class_labels"]  # [B]
        sigma = sigma.to(latents.dtype).expand(latents.shape[0])  # [B]
        if self.guidance_scale == 1.0:
            return self.unet(latents, sigma * 1000, class_labels=labels).sample  # [B, 3, H, W]
        null = torch.full_like(labels, NULL_CLASS)
        both = self.unet(
            torch.cat([latents, latents]), torch.cat([sigma, sigma]) * 1000, class_labels=torch.cat([labels, null])
        ).sample  # [2B, 3, H, W]
        v_cond, v_null = both.chunk(2)
        return v_null + self.guidance_scale * (v_cond - v_null)  # [B, 3, H, W]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.float() + 1) / 2).clamp(0, 1)  # [B, 3, H, W]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [0, 1] -> latents in [-1, 1] (inverse of ``decode``)."""
        return images * 2 - 1

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return sigma_schedule(num_steps, self.shift)  # [T+1] from 1 to 0

    def _device(self) -> torch.device:
        return next(self.unet.parameters()).device


@torch.no_grad()
def sample_ode(
    generator: Generator, prompts: Sequence[str], num_steps: int = 20, seed: int | torch.Generator = 0
) -> torch.Tensor:
    """Euler ODE samples from s=1 to s=0 for any Generator -> images [B, 3, H, W] in [0, 1]."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    cond = generator.encode_prompts(prompts)
    x = torch.randn(len(prompts), *generator.latent_shape(), generator=g)  # [B, C, H, W] at s=1
    device = next(generator.parameters()).device
    x = x.to(device)
    sigmas = generator.sigmas(num_steps).to(device)  # [T+1]
    for k in range(num_steps):
        s = sigmas[k].expand(x.shape[0])  # [B]
        x = x + (sigmas[k + 1] - sigmas[k]) * generator.velocity(x, s, cond)  # dt < 0
    return generator.decode(x)
