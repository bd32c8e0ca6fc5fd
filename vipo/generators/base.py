"""The Generator interface: everything the trainer needs from a model, nothing more.

Latents are always in the *unpacked* layout: images ``[B, C, H, W]``, video ``[B, C, F, H, W]``.
A generator that works on tokens (FLUX) packs and unpacks inside ``velocity``.
Conditions are plain dicts of batch-first tensors so the trainer can repeat, index and
concatenate them without knowing what they hold (see ``index_cond`` / ``repeat_cond``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, List, Sequence

import torch
from torch import nn

Cond = Dict[str, torch.Tensor]  # every value batch-first: [B, ...]


class Generator(nn.Module, ABC):
    """A flow-matching generator x_t = (1 - s) x0 + s eps with velocity v = eps - x0."""

    is_video: bool = False  # True: latents [B, C, F, H, W] and decode -> [B, 3, F', H', W']

    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample's latent: (C, H, W) or (C, F, H, W) at the configured resolution."""

    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        """Text -> condition dict (batch-first tensors). Implementations cache per prompt."""

    @abstractmethod
    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """Guided velocity. latents [B, C, (F), H, W]; sigma [B] in [0, 1]; returns latents' shape."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images [B, 3, H, W] (or video [B, 3, F, H, W]) in [0, 1], float32."""

    @abstractmethod
    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The sampling schedule: [num_steps + 1] from 1 down to 0 (shifted as the model expects)."""

    def trainable_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def map_grid(self) -> tuple[int, ...]:
        """Grid of a perceptual map for one sample: the latent's spatial (and frame) dims."""
        return tuple(self.latent_shape()[1:])


def index_cond(cond: Cond, idx: torch.Tensor | slice) -> Cond:
    return {k: v[idx] for k, v in cond.items()}


def repeat_cond(cond: Cond, repeats: int) -> Cond:
    """Repeat each prompt's condition ``repeats`` times, consecutively (group layout)."""
    return {k: v.repeat_interleave(repeats, dim=0) for k, v in cond.items()}


def cat_cond(conds: Sequence[Cond]) -> Cond:
    return {k: torch.cat([c[k] for c in conds], dim=0) for k in conds[0]}
