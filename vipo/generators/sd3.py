"""Stable Diffusion 3 / 3.5 (diffusers ``SD3Transformer2DModel``) behind the Generator interface.

Conventions checked against ``diffusers.StableDiffusion3Pipeline`` (tests/test_gen_sd3.py):
- latents ``[B, 16, H/8, W/8]`` go to the transformer as they are (it patchifies internally);
- timestep = sigma * 1000 (the pipeline passes the scheduler's ``t = 1000 sigma``);
- text: CLIP-L and CLIP-G penultimate hidden states concatenated on channels, zero-padded to the
  T5 width and concatenated with T5 states on the sequence axis; pooled = [CLIP-L, CLIP-G] projections;
- classifier-free guidance ``v_u + g (v_c - v_u)`` with the negative prompt (default "");
  ``cfg_no_grad_uncond`` runs the unconditional branch without autograd;
- schedule: static shift (SD3.5: 3.0, read from the scheduler config when loading a checkpoint);
- decode: ``latents / scaling_factor + shift_factor`` -> VAE -> [0, 1].
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from vipo.generators._diffusers_utils import (
    cfg_combine, clip_max_length, decode_scaled, load_parts, tokenize, vae_scale_2d,
)
from vipo.generators.adapter import DiffusersGenerator
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import SD3_LORA_TARGETS
from vipo.sde import sigma_schedule


class SD3Generator(DiffusersGenerator, Generator):
    """SD3.5 text-to-image. Build with ``SD3Generator("stabilityai/stable-diffusion-3.5-medium")`` or
    ``SD3Generator.from_components(transformer=..., vae=..., text_encoders=[clip_l, clip_g, t5],
    tokenizers=[tok_l, tok_g, tok_t5])``."""

    is_video = False
    MODEL, TEXT_ENCODERS, LORA_TARGETS = "SD3", ("CLIP-L", "CLIP-G", "T5"), SD3_LORA_TARGETS
    DEFAULTS = dict(height=512, width=512, lora_rank=32, max_sequence_length=256)  # T5 tokens (Flow-GRPO: 128)

    def _scales(self, parts: Dict) -> tuple[int, int]:
        return vae_scale_2d(parts["vae"]), parts["transformer"].config.patch_size

    def _configure(
        self, parts: Dict, *,
        guidance_scale: float = 4.5,  # classifier-free guidance; <= 1 disables it
        negative_prompt: str = "",  # the unconditional branch's prompt
        cfg_no_grad_uncond: bool = False,  # unconditional branch without autograd (saves memory)
        shift: Optional[float] = None,  # static schedule shift; None: scheduler config, else 3.0
    ) -> None:
        if shift is None:
            shift = self.scheduler_config.get("shift")
        self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
        self.cfg_no_grad_uncond = cfg_no_grad_uncond
        self.shift = 3.0 if shift is None else shift

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
        from diffusers import AutoencoderKL, SD3Transformer2DModel
        from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

        return load_parts(path_or_id, SD3Transformer2DModel, AutoencoderKL,
                          [CLIPTextModelWithProjection, CLIPTextModelWithProjection, T5EncoderModel],
                          [AutoTokenizer] * 3, dtype, vae_dtype)

    # ------------------------------------------------------------------ interface
    def latent_shape(self) -> tuple[int, ...]:
        return (self.transformer.config.in_channels, self.height // self.vae_scale, self.width // self.vae_scale)

    def _encode(self, prompts: List[str]) -> Cond:
        clip_l, clip_g, t5 = self.text_encoders
        states, pooled = [], []
        for enc, tok in zip((clip_l, clip_g), self.tokenizers[:2]):
            ids = tokenize(tok, prompts, clip_max_length(tok))["input_ids"].to(self.device)
            out = enc(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])  # [B, 77, D_clip]: penultimate layer
            pooled.append(out[0])  # [B, P_clip]: projected pooled output (text_embeds)
        ids = tokenize(self.tokenizers[2], prompts, self.max_sequence_length)["input_ids"].to(self.device)
        t5_states = t5(ids)[0]  # [B, L, D_t5]
        clip_states = torch.cat(states, dim=-1)  # [B, 77, D_l + D_g]
        clip_states = F.pad(clip_states, (0, t5_states.shape[-1] - clip_states.shape[-1]))  # [B, 77, D_t5]
        embeds = torch.cat([clip_states, t5_states], dim=-2)  # [B, 77 + L, D_t5]
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": torch.cat(pooled, -1).to(self.dtype)}

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.transformer(
            hidden_states=x,  # [b, 16, H, W]
            timestep=(sigma * 1000).expand(x.shape[0]),  # [b]: SD3 expects 1000 * sigma
            encoder_hidden_states=cond["prompt_embeds"],  # [b, 77 + L, D]
            pooled_projections=cond["pooled_prompt_embeds"],  # [b, P]
            return_dict=False,
        )[0]  # [b, 16, H, W]

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=self.transformer.config.patch_size)
        x = latents.to(device=self.device, dtype=self.dtype)  # [B, 16, H, W]
        s = sigma.to(device=self.device, dtype=torch.float32).expand(x.shape[0])  # [B]
        c, u = self._cfg_pair(cond, ("prompt_embeds", "pooled_prompt_embeds"))

        def forward(xx: torch.Tensor, cc: Cond) -> torch.Tensor:
            return self._forward(xx, s.repeat(xx.shape[0] // s.shape[0]), cc)

        v = cfg_combine(forward, x, c, u, self.guidance_scale, self.cfg_no_grad_uncond)  # [B, 16, H, W]
        return v.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        return decode_scaled(self.vae, latents.to(device=self.device, dtype=self.vae_dtype))  # [B, 3, 8h, 8w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return sigma_schedule(num_steps, self.shift)
