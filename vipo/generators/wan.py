"""Wan2.1 text-to-video (diffusers ``WanTransformer3DModel`` + ``AutoencoderKLWan``).

Latents are video ``[B, 16, F_lat, H/8, W/8]`` with ``F_lat = (frames - 1) // 4 + 1`` (the causal VAE
keeps frame 0 and compresses each following group of 4 frames into one latent frame), so maps are
per latent frame: ``map_grid() = (F_lat, H/8, W/8)``; ``latent_frame_of`` gives each video frame's
latent frame.

Conventions checked against ``diffusers.WanPipeline`` (tests/test_gen_wan.py):
- timestep = sigma * 1000;
- text: UMT5 hidden states over ``max_sequence_length`` tokens, zeroed beyond each prompt's length;
- classifier-free guidance with a negative prompt (default ""; the official scripts use Wan's long
  Chinese negative prompt); ``cfg_no_grad_uncond`` as in the official ViPO Wan script;
- schedule: static shift (Wan2.1 recommends 3.0 at 480p, 5.0 at 720p; ViPO used 8.0);
- decode: ``latents * latents_std + latents_mean`` (per channel) -> VAE -> [0, 1], [B, 3, frames, H, W].
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence

import torch
from torch import nn

from vipo.generators._diffusers_utils import (
    DiffusersGenerator, cfg_combine, check_pretrained, resolve_dtype,
    to_unit_range, tokenize,
)
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import WAN_LORA_TARGETS
from vipo.sde import sigma_schedule


class WanGenerator(DiffusersGenerator, Generator):
    """Wan2.1 T2V. Build with ``WanGenerator("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", ...)`` or
    ``WanGenerator.from_components(transformer=..., vae=..., text_encoders=[umt5], tokenizers=[tok])``."""

    is_video = True

    def __init__(
        self,
        path_or_id: Optional[str] = None,  # hub id or local diffusers folder
        *,
        transformer: Optional[nn.Module] = None,
        vae: Optional[nn.Module] = None,
        text_encoders: Optional[Sequence[nn.Module]] = None,  # [UMT5EncoderModel]
        tokenizers: Optional[Sequence] = None,
        height: int = 480,  # pixels, multiple of 16
        width: int = 832,
        num_frames: int = 33,  # video frames, 4k + 1
        guidance_scale: float = 5.0,  # classifier-free guidance; <= 1 disables it
        negative_prompt: str = "",
        cfg_no_grad_uncond: bool = False,  # unconditional branch without autograd (official ViPO Wan)
        shift: Optional[float] = None,  # static schedule shift; None: scheduler's flow_shift, else 5.0
        max_sequence_length: int = 512,  # UMT5 tokens
        dtype: str | torch.dtype = "float32",  # transformer + text encoders; velocity is float32
        vae_dtype: str | torch.dtype = "float32",  # the VAE decodes in float32 unless told otherwise
        device: str | torch.device = "cpu",
        lora_rank: int = 32,  # 0: full fine-tuning
        lora_alpha: Optional[float] = None,  # None: 2 * rank
        lora_target_modules: Optional[Sequence[str]] = None,  # None: WAN_LORA_TARGETS
        gradient_checkpointing: bool = False,
        prompt_cache_size: int = 256,  # prompt embeddings kept (LRU); 0: all
    ):
        super().__init__()
        if path_or_id is not None:
            loaded = self._load(path_or_id, resolve_dtype(dtype), resolve_dtype(vae_dtype))
            transformer, vae, text_encoders, tokenizers, cfg_shift = loaded
            shift = cfg_shift if shift is None else shift
        if transformer is None or vae is None or text_encoders is None or tokenizers is None:
            raise ValueError("WanGenerator needs path_or_id or all of transformer, vae, text_encoders, tokenizers")
        if len(text_encoders) != 1 or len(tokenizers) != 1:
            raise ValueError("Wan needs one text encoder and tokenizer: [UMT5]")
        self.t_scale = int(vae.config.scale_factor_temporal)  # 4
        self.s_scale = int(vae.config.scale_factor_spatial)  # 8
        if (num_frames - 1) % self.t_scale:
            raise ValueError(f"Wan num_frames must be {self.t_scale}k + 1, got {num_frames}")
        step = self.s_scale * transformer.config.patch_size[1]
        if height % step or width % step:
            raise ValueError(f"Wan height/width must be multiples of {step}, got {height}x{width}")
        self.height, self.width, self.num_frames = height, width, num_frames
        self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
        self.cfg_no_grad_uncond = cfg_no_grad_uncond
        self.shift = 5.0 if shift is None else shift
        self.max_sequence_length = max_sequence_length
        self._attach(transformer, vae, text_encoders, tokenizers, dtype=dtype, device=device, vae_dtype=vae_dtype,
                     lora_rank=lora_rank, lora_alpha=lora_alpha, target_modules=lora_target_modules or WAN_LORA_TARGETS,
                     gradient_checkpointing=gradient_checkpointing, prompt_cache_size=prompt_cache_size)

    @staticmethod
    def _load(path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype):
        from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
        from transformers import AutoTokenizer, UMT5EncoderModel

        path = check_pretrained(path_or_id)
        transformer = WanTransformer3DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype)
        vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", torch_dtype=vae_dtype)
        umt5 = UMT5EncoderModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype)
        tok = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
        sched = FlowMatchEulerDiscreteScheduler.load_config(path, subfolder="scheduler")
        return transformer, vae, [umt5], [tok], sched.get("flow_shift", sched.get("shift"))

    # ------------------------------------------------------------------ interface
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // self.t_scale + 1

    def latent_shape(self) -> tuple[int, ...]:
        c = self.vae.config.z_dim
        return (c, self.latent_frames(), self.height // self.s_scale, self.width // self.s_scale)

    def latent_frame_of(self, num_frames: Optional[int] = None) -> torch.Tensor:
        """Latent frame that each decoded video frame comes from: frame 0 -> 0, frames 4k-3..4k -> k."""
        n = self.num_frames if num_frames is None else num_frames
        j = torch.arange(n)
        return (j + self.t_scale - 1) // self.t_scale  # [n]

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        cond = self.cache.get(prompts, self.device)
        if self.guidance_scale > 1.0:
            neg = self.cache.get([self.negative_prompt], self.device)
            cond.update({"neg_" + k: v.expand(len(prompts), *v.shape[1:]).clone() for k, v in neg.items()})
        return cond

    def _encode(self, prompts: List[str]) -> Cond:
        prompts = [re.sub(r"\s+", " ", p).strip() for p in prompts]  # the pipeline's whitespace clean-up
        toks = tokenize(self.tokenizers[0], prompts, self.max_sequence_length)
        ids, mask = toks["input_ids"].to(self.device), toks["attention_mask"].to(self.device)
        states = self.text_encoders[0](ids, mask).last_hidden_state  # [B, L, 4096]
        states = states * mask.unsqueeze(-1).to(states.dtype)  # [B, L, 4096]: zero past each prompt's end
        return {"prompt_embeds": states.to(self.dtype)}

    def _forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.transformer(
            hidden_states=x,  # [b, 16, F, H, W]
            timestep=sigma * 1000,  # [b]: Wan expects 1000 * sigma
            encoder_hidden_states=cond["prompt_embeds"],  # [b, L, D]
            return_dict=False,
        )[0]  # [b, 16, F, H, W]

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=self.transformer.config.patch_size[1])
        dev, dt = self.device, self.dtype
        x = latents.to(device=dev, dtype=dt)  # [B, 16, F, H, W]
        s = sigma.to(device=dev, dtype=torch.float32).expand(x.shape[0])  # [B]
        c = {"prompt_embeds": cond["prompt_embeds"].to(device=dev, dtype=dt)}
        u = {"prompt_embeds": cond.get("neg_prompt_embeds", c["prompt_embeds"]).to(device=dev, dtype=dt)}
        if self.guidance_scale > 1.0 and "neg_prompt_embeds" not in cond:
            raise ValueError("guided velocity needs the negative-prompt entries that encode_prompts adds")

        def forward(xx: torch.Tensor, cc: Cond) -> torch.Tensor:
            return self._forward(xx, s.repeat(xx.shape[0] // s.shape[0]), cc)

        v = cfg_combine(forward, x, c, u, self.guidance_scale, self.cfg_no_grad_uncond)  # [B, 16, F, H, W]
        return v.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        cfg = self.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean, device=self.device).view(shape)  # [1, 16, 1, 1, 1]
        std = torch.tensor(cfg.latents_std, device=self.device).view(shape)  # [1, 16, 1, 1, 1]
        z = (latents.to(self.device).float() * std + mean).to(self.vae_dtype)  # [B, 16, F, h, w]
        return to_unit_range(self.vae.decode(z, return_dict=False)[0])  # [B, 3, frames, 8h, 8w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return sigma_schedule(num_steps, self.shift)
