"""FLUX.2 (diffusers ``Flux2Transformer2DModel`` + ``AutoencoderKLFlux2``) behind the Generator interface.

Layout. FLUX.2 samples in the VAE's 2x2-patchified, batch-normalised latent space ``[B, 4C, H/16, W/16]``
(C = 32 for FLUX.2-dev). The trainer sees the same numbers un-patchified, ``[B, C, H/8, W/8]`` (a reshape:
patchified channel ``4c + 2dy + dx`` is latent ``c`` at offset ``(dy, dx)``), so maps live on the ``H/8`` grid
as for FLUX.1, and the transformer's tokens are exactly ``pack_2x2`` of it (``Flux2Pipeline._pack_latents``
of ``_patchify_latents``), which ``pack_map`` repeats for maps.

Conventions checked against ``diffusers.Flux2Pipeline`` (tests/test_gen_flux2.py):
- timestep = sigma (the pipeline passes ``t / 1000``); embedded guidance ``guidance_scale`` (FLUX.2-dev is
  guidance-distilled: no negative prompt);
- ids: text ``(0, 0, 0, l)``, image ``(0, row, col, 0)`` per token;
- text: the pipeline's Mistral3 chat prompt (system message + user prompt) padded to ``max_sequence_length``,
  hidden states of ``text_encoder_layers`` stacked on channels (no mask: padding is part of the prompt);
- schedule: ``linspace(1, 1/T, T)`` through the scheduler with ``mu = compute_empirical_mu(tokens, T)``;
- decode: patchify -> ``* sqrt(bn.running_var + eps) + bn.running_mean`` -> un-patchify -> VAE -> [0, 1].
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from vipo.generators._diffusers_utils import load_parts, scheduler_sigmas, to_unit_range
from vipo.generators.adapter import DiffusersGenerator, Packed2x2Maps
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import FLUX2_LORA_TARGETS
from vipo.psm import pack_2x2, unpack_2x2
from vipo.sde import sigma_schedule

# Used when the components come without a checkpoint (a checkpoint's own scheduler config is read when loading):
# resolution- and step-dependent exponential time shift, mu from the pipeline's compute_empirical_mu
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")


class Flux2Generator(Packed2x2Maps, DiffusersGenerator, Generator):
    """FLUX.2 text-to-image. Build with ``Flux2Generator("black-forest-labs/FLUX.2-dev", ...)`` or
    ``Flux2Generator.from_components(transformer=..., vae=..., text_encoders=[mistral3], tokenizers=[processor])``."""

    is_video = False
    MODEL, TEXT_ENCODERS, LORA_TARGETS = "FLUX.2", ("Mistral3",), FLUX2_LORA_TARGETS
    SCHEDULER_CONFIG = SCHEDULER_CONFIG  # FLUX.2-dev's (max_sequence_length: chat-template tokens, padded)

    def _configure(
        self, parts: Dict, *,
        guidance_scale: float = 4.0,  # embedded guidance (the pipeline's default)
        shift: Optional[float] = None,  # None: the pipeline's empirical mu; a number: static shift
        text_encoder_layers: Sequence[int] = (10, 20, 30),  # hidden states stacked into the prompt embedding
    ) -> None:
        self.guidance_scale, self.shift = guidance_scale, shift
        self.text_encoder_layers = tuple(text_encoder_layers)

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
        from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
        from transformers import AutoProcessor, Mistral3ForConditionalGeneration

        return load_parts(path_or_id, Flux2Transformer2DModel, AutoencoderKLFlux2, [Mistral3ForConditionalGeneration],
                          [AutoProcessor], dtype, vae_dtype)

    # ------------------------------------------------------------------ interface
    def latent_shape(self) -> tuple[int, ...]:
        c = self.transformer.config.in_channels // 4  # 128 patchified channels = 32 latent channels x 2 x 2
        return (c, self.height // self.vae_scale, self.width // self.vae_scale)

    def _encode(self, prompts: List[str]) -> Cond:
        from diffusers import Flux2Pipeline
        from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE

        embeds = Flux2Pipeline._get_mistral_3_small_prompt_embeds(
            self.text_encoders[0], self.tokenizers[0], list(prompts), dtype=self.dtype, device=self.device,
            max_sequence_length=self.max_sequence_length, system_message=SYSTEM_MESSAGE,
            hidden_states_layers=self.text_encoder_layers)  # [B, L, layers * D]
        return {"prompt_embeds": embeds}

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=2)  # 2x2 patches
        b, _, h, w = latents.shape
        dev, dt = self.device, self.dtype
        tokens = pack_2x2(latents.to(device=dev, dtype=dt))  # [B, hw/4, 4C]
        embeds = cond["prompt_embeds"].to(device=dev, dtype=dt)  # [B, L, D]
        img_ids = torch.cartesian_prod(torch.arange(1), torch.arange(h // 2), torch.arange(w // 2), torch.arange(1))
        txt_ids = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(embeds.shape[1]))
        out = self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=embeds,
            timestep=sigma.to(device=dev, dtype=dt).expand(b),  # [B]: the pipeline passes t / 1000 = sigma
            guidance=torch.full((b,), float(self.guidance_scale), device=dev, dtype=torch.float32),  # [B]
            img_ids=img_ids.to(dev).expand(b, -1, -1),  # [B, hw/4, 4]: (0, row, col, 0)
            txt_ids=txt_ids.to(dev).expand(b, -1, -1),  # [B, L, 4]: (0, 0, 0, l)
            return_dict=False,
        )[0]  # [B, hw/4, 4C]
        return unpack_2x2(out, h, w).float()  # [B, C, h, w]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents, multiple=2)
        _, _, h, w = latents.shape
        bn, eps = self.vae.bn, self.vae.config.batch_norm_eps
        tokens = pack_2x2(latents.to(self.device).float())  # [B, hw/4, 4C]: the patchified channels last
        tokens = tokens * torch.sqrt(bn.running_var.float() + eps) + bn.running_mean.float()  # [B, hw/4, 4C]
        z = unpack_2x2(tokens, h, w).to(self.vae_dtype)  # [B, C, h, w]
        return to_unit_range(self.vae.decode(z, return_dict=False)[0])  # [B, 3, 8h, 8w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        if self.shift is not None:
            return sigma_schedule(num_steps, self.shift)
        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        _, h, w = self.latent_shape()
        mu = compute_empirical_mu(image_seq_len=(h // 2) * (w // 2), num_steps=num_steps)
        return scheduler_sigmas(self.scheduler_config, num_steps, mu)
