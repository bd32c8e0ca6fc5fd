"""Z-Image (diffusers ``ZImageTransformer2DModel`` + FLUX's 16-channel ``AutoencoderKL``) behind the Generator
interface.

Layout. Latents ``[B, 16, H/8, W/8]``; the transformer takes them as a list of ``[16, 1, H/8, W/8]`` and
patchifies 2x2 internally (tokens row-major, patch slot ``2 dy + dx``), so maps live on the ``H/8`` grid and
``pack_map`` gives each token's four map values in the transformer's own slot order.

Conventions checked against ``diffusers.ZImagePipeline`` (tests/test_gen_z_image.py):
- the model is called with ``1 - sigma`` and predicts ``-v`` (the pipeline negates its output);
- text: the Qwen3 chat template (generation prompt, thinking on) padded to ``max_sequence_length``, the
  second-to-last hidden states of the valid tokens only (we cache them padded with a mask);
- guidance ``v_c + g (v_c - v_u)`` with a negative prompt (``g = 0``: Z-Image-Turbo, no guidance), optionally off
  where ``1 - sigma > cfg_truncation`` and capped at ``cfg_normalization`` times the conditional norm;
- schedule: ``linspace(1, 1/T, T)`` through the scheduler (static shift 3 for Z-Image-Turbo; ``mu`` of the
  token count when the scheduler shifts by resolution);
- decode: ``latents / scaling_factor + shift_factor`` -> VAE -> [0, 1].
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from vipo.generators._diffusers_utils import calculate_shift, cfg_combine, decode_scaled, load_parts, scheduler_sigmas
from vipo.generators.adapter import DiffusersGenerator, Packed2x2Maps
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import Z_IMAGE_LORA_TARGETS
from vipo.sde import sigma_schedule

# Tongyi-MAI/Z-Image-Turbo scheduler/scheduler_config.json
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)


class ZImageGenerator(Packed2x2Maps, DiffusersGenerator, Generator):
    """Z-Image text-to-image. Build with ``ZImageGenerator("Tongyi-MAI/Z-Image-Turbo", ...)`` or
    ``ZImageGenerator.from_components(transformer=..., vae=..., text_encoders=[qwen3], tokenizers=[tok])``."""

    is_video = False
    MODEL, TEXT_ENCODERS, LORA_TARGETS = "Z-Image", ("Qwen3",), Z_IMAGE_LORA_TARGETS
    SCHEDULER_CONFIG = SCHEDULER_CONFIG  # Z-Image-Turbo's (max_sequence_length: chat-template tokens)

    def _configure(
        self, parts: Dict, *,
        guidance_scale: float = 0.0,  # g in v_c + g (v_c - v_u); 0: no guidance (Z-Image-Turbo)
        negative_prompt: str = "",
        cfg_truncation: float = 1.0,  # guidance off where 1 - sigma > this (1: never)
        cfg_normalization: float = 0.0,  # > 0: cap the guided norm at this times the conditional norm
        cfg_no_grad_uncond: bool = False,  # unconditional branch without autograd
        shift: Optional[float] = None,  # None: the scheduler's shift rule; a number: static shift
    ) -> None:
        self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
        self.cfg_truncation, self.cfg_normalization = cfg_truncation, cfg_normalization
        self.cfg_no_grad_uncond, self.shift = cfg_no_grad_uncond, shift

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
        from diffusers import AutoencoderKL, ZImageTransformer2DModel
        from transformers import AutoModel, AutoTokenizer

        return load_parts(path_or_id, ZImageTransformer2DModel, AutoencoderKL, [AutoModel], [AutoTokenizer],
                          dtype, vae_dtype)

    def _uses_cfg(self) -> bool:
        return self.guidance_scale > 0.0

    # ------------------------------------------------------------------ interface
    def latent_shape(self) -> tuple[int, ...]:
        return (self.transformer.config.in_channels, self.height // self.vae_scale, self.width // self.vae_scale)

    def _encode(self, prompts: List[str]) -> Cond:
        tok = self.tokenizers[0]
        chats = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True,
                                         enable_thinking=True) for p in prompts]
        ids = tok(chats, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                  return_tensors="pt").to(self.device)
        states = self.text_encoders[0](input_ids=ids.input_ids, attention_mask=ids.attention_mask.bool(),
                                       output_hidden_states=True).hidden_states[-2]  # [B, L, D]
        mask = ids.attention_mask.long()  # [B, L]
        return {"prompt_embeds": (states * mask.unsqueeze(-1)).to(self.dtype), "prompt_mask": mask}

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        caps = [e[m.bool()] for e, m in zip(cond["prompt_embeds"], cond["prompt_mask"])]  # B x [l_i, D]
        out = self.transformer(list(x.unsqueeze(2).unbind(0)),  # B x [C, 1, H, W]
                               1 - sigma,  # [b]: the model's time runs from 0 (noise) to 1
                               caps, return_dict=False)[0]  # B x [C, 1, H, W]
        return -torch.stack(out).squeeze(2)  # [b, C, H, W]: the model predicts -v

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=2)  # 2x2 patches
        x = latents.to(device=self.device, dtype=self.dtype)  # [B, C, H, W]
        s = sigma.to(device=self.device, dtype=torch.float32).expand(x.shape[0])  # [B]
        c, u = self._cfg_pair(cond, ("prompt_embeds", "prompt_mask"))
        g = self.guidance_scale if float(1 - s[0]) <= self.cfg_truncation else 0.0

        def forward(xx: torch.Tensor, cc: Cond) -> torch.Tensor:
            return self._forward(xx, s.repeat(xx.shape[0] // s.shape[0]), cc).float()

        cap = self.cfg_normalization if g > 0 and self.cfg_normalization > 0 else None

        def capped(v: torch.Tensor, v_c: torch.Tensor) -> torch.Tensor:  # the guided norm <= cap * conditional norm
            limit = cap * v_c.flatten(1).norm(dim=1)  # [B]
            norm = v.flatten(1).norm(dim=1)  # [B]
            return v * torch.where(norm > limit, limit / norm, torch.ones_like(norm)).view(-1, 1, 1, 1)

        v = cfg_combine(forward, x, c, u, 1.0 + g, self.cfg_no_grad_uncond,  # v_c + g (v_c - v_u)
                        adjust=capped if cap else None)  # [B, C, H, W]
        return v.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        return decode_scaled(self.vae, latents.to(device=self.device, dtype=self.vae_dtype))  # [B, 3, 8h, 8w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        if self.shift is not None:
            return sigma_schedule(num_steps, self.shift)
        _, h, w = self.latent_shape()
        return scheduler_sigmas(self.scheduler_config, num_steps, calculate_shift((h // 2) * (w // 2),
                                                                                 self.scheduler_config))
