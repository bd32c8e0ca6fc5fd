"""FLUX.1 (diffusers ``FluxTransformer2DModel``) behind the Generator interface.

Layout. The trainer sees unpacked latents ``[B, 16, H/8, W/8]``; the transformer sees 2x2-packed
tokens ``[B, (H/16)(W/16), 64]``. ``velocity`` packs, runs the model and unpacks, so perceptual maps
live on the unpacked grid ``[H/8, W/8]`` (``map_grid``) and ``pack_map`` packs them like latents.

Conventions checked against ``diffusers.FluxPipeline`` (tests/test_gen_flux.py):
- timestep: the pipeline passes ``t / 1000`` = sigma and the model multiplies by 1000 -> we pass sigma;
- guidance-distilled models (FLUX.1-dev) take ``guidance = guidance_scale`` (model multiplies by 1000);
- text: CLIP-L pooled output (77 tokens) + T5-XXL hidden states (``max_sequence_length`` tokens),
  ``txt_ids`` zeros ``[L, 3]``, ``img_ids`` = (0, row, col) of each packed token;
- schedule: linspace(1, 0) mapped by the resolution-dependent shift ``mu(image_seq_len)``; pass
  ``shift`` to use a static shift instead (DanceGRPO and the official ViPO FLUX script use shift=3);
- decode: ``latents / scaling_factor + shift_factor`` -> VAE -> [0, 1].
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from vipo.generators._diffusers_utils import clip_max_length, decode_scaled, load_parts, tokenize
from vipo.generators.adapter import DiffusersGenerator, Packed2x2Maps
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import FLUX_LORA_TARGETS
from vipo.psm import pack_2x2, unpack_2x2  # FluxPipeline._pack_latents / _unpack_latents layout
from vipo.sde import flux_sigma_schedule, sigma_schedule


def image_ids(h2: int, w2: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Position ids of the packed tokens: (0, row, col) for a (h2 x w2) token grid -> [h2*w2, 3]."""
    ids = torch.zeros(h2, w2, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w2, device=device, dtype=dtype)[None, :]
    return ids.reshape(h2 * w2, 3)


class FluxGenerator(Packed2x2Maps, DiffusersGenerator, Generator):
    """FLUX.1 text-to-image. Build with ``FluxGenerator("black-forest-labs/FLUX.1-dev", ...)`` or
    ``FluxGenerator.from_components(transformer=..., vae=..., text_encoders=[clip, t5],
    tokenizers=[clip_tok, t5_tok])``."""

    is_video = False
    MODEL, TEXT_ENCODERS, LORA_TARGETS = "FLUX", ("CLIP", "T5"), FLUX_LORA_TARGETS
    DEFAULTS = dict(height=512, width=512, lora_rank=32)  # max_sequence_length: T5 tokens

    def _configure(
        self, parts: Dict, *,
        guidance_scale: float = 3.5,  # embedded guidance of FLUX.1-dev (ignored by models without it)
        shift: Optional[float] = None,  # None: resolution-dependent shift (FLUX.1-dev); a number: static
    ) -> None:
        if shift is None and self.scheduler_config:  # FLUX.1-schnell: no dynamic shifting
            sched = self.scheduler_config
            shift = None if sched.get("use_dynamic_shifting", True) else float(sched.get("shift", 1.0))
        self.guidance_scale, self.shift = guidance_scale, shift

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
        from diffusers import AutoencoderKL, FluxTransformer2DModel
        from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

        return load_parts(path_or_id, FluxTransformer2DModel, AutoencoderKL, [CLIPTextModel, T5EncoderModel],
                          [AutoTokenizer, AutoTokenizer], dtype, vae_dtype)

    # ------------------------------------------------------------------ interface
    def latent_shape(self) -> tuple[int, ...]:
        c = self.transformer.config.in_channels // 4  # 64 packed channels = 16 latent channels x 2 x 2
        return (c, self.height // self.vae_scale, self.width // self.vae_scale)

    def _encode(self, prompts: List[str]) -> Cond:
        (clip, t5), (clip_tok, t5_tok) = self.text_encoders, self.tokenizers
        ids = tokenize(clip_tok, prompts, clip_max_length(clip_tok))["input_ids"].to(self.device)
        pooled = clip(ids, output_hidden_states=False).pooler_output  # [B, 768]
        ids = tokenize(t5_tok, prompts, self.max_sequence_length)["input_ids"].to(self.device)
        embeds = t5(ids)[0]  # [B, L, 4096]
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=2)  # 2x2 packing
        b, _, h, w = latents.shape
        dev, dt = self.device, self.dtype
        tokens = pack_2x2(latents.to(device=dev, dtype=dt))  # [B, HW/4, 64]
        embeds = cond["prompt_embeds"].to(device=dev, dtype=dt)  # [B, L, D]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), float(self.guidance_scale), device=dev, dtype=torch.float32)  # [B]
        out = self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=embeds,
            pooled_projections=cond["pooled_prompt_embeds"].to(device=dev, dtype=dt),  # [B, P]
            timestep=sigma.to(device=dev, dtype=dt).expand(b),  # [B]: sigma, the model multiplies by 1000
            img_ids=image_ids(h // 2, w // 2, dev, dt),  # [HW/4, 3]
            txt_ids=torch.zeros(embeds.shape[1], 3, device=dev, dtype=dt),  # [L, 3]
            guidance=guidance,
            return_dict=False,
        )[0]  # [B, HW/4, 64]
        return unpack_2x2(out, h, w).float()  # [B, 16, H, W]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        return decode_scaled(self.vae, latents.to(device=self.device, dtype=self.vae_dtype))  # [B, 3, 8h, 8w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        if self.shift is not None:
            return sigma_schedule(num_steps, self.shift)
        c, h, w = self.latent_shape()
        return flux_sigma_schedule(num_steps, image_seq_len=(h // 2) * (w // 2))
