"""Qwen-Image (diffusers ``QwenImageTransformer2DModel`` + ``AutoencoderKLQwenImage``) behind the Generator interface.

Layout. The trainer sees unpacked latents ``[B, 16, H/8, W/8]``; the transformer sees 2x2-packed tokens
``[B, (H/16)(W/16), 64]``, packed exactly like FLUX's (``QwenImagePipeline._pack_latents``), so maps live on the
unpacked grid and ``pack_map`` packs them like the latents.

Conventions checked against ``diffusers.QwenImagePipeline`` (tests/test_gen_qwen_image.py):
- timestep = sigma (the pipeline passes ``t / 1000``); ``img_shapes`` = (1, H/16, W/16) per sample;
- text: the pipeline's chat template around the prompt through Qwen2.5-VL, last hidden states of the valid
  tokens with the first 34 (the template's system part) dropped, at most ``max_sequence_length`` tokens;
  we pad each prompt to that length with a mask (so prompts cache one by one) and trim a batch to its
  longest prompt before the transformer;
- "true" classifier-free guidance with a negative prompt, the guided velocity rescaled per token to the
  conditional velocity's norm;
- schedule: ``sigmas = linspace(1, 1/T, T)`` through the scheduler: resolution-dependent exponential shift
  ``mu`` of the token count, stretched so the last non-zero sigma is ``shift_terminal``, then 0;
- decode: ``latents * latents_std + latents_mean`` -> the (video-style) VAE on one frame -> [0, 1].
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch

from vipo.generators._diffusers_utils import (
    calculate_shift, cfg_combine, denormalize, load_parts, scheduler_sigmas, to_unit_range,
)
from vipo.generators.adapter import DiffusersGenerator, Packed2x2Maps
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import QWEN_IMAGE_LORA_TARGETS
from vipo.psm import pack_2x2, unpack_2x2
from vipo.sde import sigma_schedule

# QwenImagePipeline.prompt_template_encode / prompt_template_encode_start_idx
PROMPT_TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                   "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                   "<|im_end|>\n<|im_start|>assistant\n")
TEMPLATE_TOKENS = 34  # tokens of the template's system part, dropped from the hidden states
TOKENIZER_MAX = 1024  # QwenImagePipeline.tokenizer_max_length
# Qwen/Qwen-Image scheduler/scheduler_config.json (used when the components come without a checkpoint)
SCHEDULER_CONFIG = dict(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=8192, max_shift=0.9,
                        num_train_timesteps=1000, shift=1.0, shift_terminal=0.02, time_shift_type="exponential",
                        use_dynamic_shifting=True)


def renorm_per_token(v: torch.Tensor, v_c: torch.Tensor) -> torch.Tensor:
    """Qwen-Image's true CFG: the guided velocity rescaled to the conditional one's norm, token by token.
    v, v_c [B, tokens, D] -> [B, tokens, D]."""
    return v * (v_c.norm(dim=-1, keepdim=True) / v.norm(dim=-1, keepdim=True))


class QwenImageGenerator(Packed2x2Maps, DiffusersGenerator, Generator):
    """Qwen-Image text-to-image. Build with ``QwenImageGenerator("Qwen/Qwen-Image", ...)`` or
    ``QwenImageGenerator.from_components(transformer=..., vae=..., text_encoders=[qwen2_5_vl], tokenizers=[tok])``."""

    is_video = False
    MODEL, TEXT_ENCODERS, LORA_TARGETS = "Qwen-Image", ("Qwen2.5-VL",), QWEN_IMAGE_LORA_TARGETS
    SCHEDULER_CONFIG = SCHEDULER_CONFIG  # Qwen-Image's published config

    def _scales(self, parts: Dict) -> tuple[int, int]:
        return 2 ** len(parts["vae"].temperal_downsample), 2

    def _configure(
        self, parts: Dict, *,
        guidance_scale: float = 4.0,  # true CFG scale (the pipeline's true_cfg_scale); <= 1 disables it
        negative_prompt: str = " ",  # the Qwen-Image examples' negative prompt
        cfg_no_grad_uncond: bool = False,  # unconditional branch without autograd
        shift: Optional[float] = None,  # None: the scheduler's resolution-dependent shift; a number: static shift
    ) -> None:
        if parts["transformer"].config.guidance_embeds:
            raise ValueError("guidance-distilled Qwen-Image transformers (guidance_embeds=True) are not supported")
        if not 0 < self.max_sequence_length <= TOKENIZER_MAX:  # text tokens after the template
            raise ValueError(f"max_sequence_length must be in 1..{TOKENIZER_MAX}, got {self.max_sequence_length}")
        self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
        self.cfg_no_grad_uncond, self.shift = cfg_no_grad_uncond, shift

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
        from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        return load_parts(path_or_id, QwenImageTransformer2DModel, AutoencoderKLQwenImage,
                          [Qwen2_5_VLForConditionalGeneration], [AutoTokenizer], dtype, vae_dtype)

    # ------------------------------------------------------------------ interface
    def latent_shape(self) -> tuple[int, ...]:
        return (self.vae.config.z_dim, self.height // self.vae_scale, self.width // self.vae_scale)

    def _encode(self, prompts: List[str]) -> Cond:
        tok = self.tokenizers[0]([PROMPT_TEMPLATE.format(p) for p in prompts], padding=True, truncation=True,
                                 max_length=TOKENIZER_MAX + TEMPLATE_TOKENS, return_tensors="pt").to(self.device)
        states = self.text_encoders[0](input_ids=tok.input_ids, attention_mask=tok.attention_mask,
                                       output_hidden_states=True).hidden_states[-1]  # [B, L_tok, D]
        n, d = self.max_sequence_length, states.shape[-1]
        embeds = states.new_zeros(len(prompts), n, d)  # [B, L, D]
        mask = torch.zeros(len(prompts), n, dtype=torch.long, device=states.device)  # [B, L]
        for i in range(len(prompts)):
            valid = states[i][tok.attention_mask[i].bool()][TEMPLATE_TOKENS:][:n]  # [l_i, D]
            embeds[i, : len(valid)], mask[i, : len(valid)] = valid, 1
        return {"prompt_embeds": embeds.to(self.dtype), "prompt_mask": mask}

    def _forward(self, tokens: torch.Tensor, sigma: torch.Tensor, cond: Cond, grid: tuple[int, int]) -> torch.Tensor:
        mask = cond["prompt_mask"]  # [b, L]
        n = max(1, int(mask.sum(1).max()))  # trim the padding every prompt of the batch has
        mask = mask[:, :n]
        return self.transformer(
            hidden_states=tokens,  # [b, hw/4, 4C]
            timestep=sigma,  # [b]: the pipeline passes t / 1000 = sigma
            encoder_hidden_states=cond["prompt_embeds"][:, :n],  # [b, n, D]
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,  # the pipeline drops an all-ones mask
            img_shapes=[(1, *grid)] * tokens.shape[0],
            return_dict=False,
        )[0]  # [b, hw/4, 4C]

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=2)  # 2x2 packing
        _, _, h, w = latents.shape
        tokens = pack_2x2(latents.to(device=self.device, dtype=self.dtype))  # [B, hw/4, 4C]
        s = sigma.to(device=self.device, dtype=torch.float32).expand(tokens.shape[0])  # [B]
        c, u = self._cfg_pair(cond, ("prompt_embeds", "prompt_mask"))

        def forward(xx: torch.Tensor, cc: Cond) -> torch.Tensor:
            return self._forward(xx, s.repeat(xx.shape[0] // s.shape[0]), cc, (h // 2, w // 2))

        v = cfg_combine(forward, tokens, c, u, self.guidance_scale, self.cfg_no_grad_uncond, adjust=renorm_per_token)
        return unpack_2x2(v, h, w).float()  # [B, C, h, w]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        z = denormalize(self.vae, latents.to(self.device).unsqueeze(2)).to(self.vae_dtype)  # [B, C, 1, h, w]
        return to_unit_range(self.vae.decode(z, return_dict=False)[0][:, :, 0])  # [B, 3, 8h, 8w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        if self.shift is not None:
            return sigma_schedule(num_steps, self.shift)
        _, h, w = self.latent_shape()
        mu = calculate_shift((h // 2) * (w // 2), self.scheduler_config)
        return scheduler_sigmas(self.scheduler_config, num_steps, mu)
