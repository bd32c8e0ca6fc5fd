"""Wan2.1 and Wan2.2 text-to-video (diffusers ``WanTransformer3DModel`` + ``AutoencoderKLWan``).

Latents are video ``[B, C, F_lat, H/s, W/s]`` with ``F_lat = (frames - 1) // 4 + 1`` (the causal VAE
keeps frame 0 and compresses each following group of 4 frames into one latent frame), so maps are
per latent frame: ``map_grid() = (F_lat, H/s, W/s)``; ``latent_frame_of`` gives each video frame's
latent frame. Wan2.1 and Wan2.2 A14B: C = 16, s = 8; Wan2.2 TI2V-5B: C = 48, s = 16 (its own VAE).

Wan2.2 A14B has two experts: ``transformer`` for high noise (``sigma >= boundary_ratio``) and
``transformer_2`` for low noise; ``velocity`` calls the expert that owns the step (with ``guidance_scale``
or ``guidance_scale_2``), so rollout and update follow the same switch. ``train_experts`` chooses which
experts get LoRA (or full fine-tuning); the other is frozen. Checkpoints hold every trained expert.
TI2V-5B (``expand_timesteps``) gives the transformer one timestep per latent token, as its pipeline does.

Conventions checked against ``diffusers.WanPipeline`` (tests/test_gen_wan.py):
- timestep = sigma * 1000;
- text: UMT5 hidden states over ``max_sequence_length`` tokens, zeroed beyond each prompt's length;
- classifier-free guidance with a negative prompt (default ""; the official scripts use Wan's long
  Chinese negative prompt); ``cfg_no_grad_uncond`` as in the official ViPO Wan script;
- schedule: static shift (Wan2.1 recommends 3.0 at 480p, 5.0 at 720p; ViPO used 8.0; Wan2.2 A14B 12.0,
  TI2V-5B 5.0);
- Wan2.2: expert switch where the pipeline's ``t = 1000 sigma >= 1000 boundary_ratio`` (tests/test_gen_wan22.py);
- decode: ``latents * latents_std + latents_mean`` (per channel) -> VAE -> [0, 1], [B, 3, frames, H, W].
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional

import torch
from torch import nn

from vipo.generators._diffusers_utils import (
    cfg_combine, check_pretrained, denormalize, load_parts, to_unit_range, tokenize,
)
from vipo.generators.adapter import DiffusersGenerator
from vipo.generators.base import Cond, Generator
from vipo.generators.lora import WAN_LORA_TARGETS
from vipo.sde import sigma_schedule


EXPERTS = ("both", "high", "low")  # train_experts choices: high = transformer, low = transformer_2


class WanGenerator(DiffusersGenerator, Generator):
    """Wan2.1 / Wan2.2 T2V. Build with ``WanGenerator("Wan-AI/Wan2.2-T2V-A14B-Diffusers", ...)`` or
    ``WanGenerator.from_components(transformer=..., vae=..., text_encoders=[umt5], tokenizers=[tok],
    transformer_2=..., boundary_ratio=0.875)``."""

    is_video = True
    MODEL, TEXT_ENCODERS, LORA_TARGETS = "Wan", ("UMT5",), WAN_LORA_TARGETS
    DEFAULTS = dict(height=480, width=832, lora_rank=32)  # max_sequence_length: UMT5 tokens
    EXTRA_PARTS = ("transformer_2",)  # Wan2.2 A14B low-noise expert (components; loaded from a path)

    def _scales(self, parts: Dict) -> tuple[int, int]:
        return int(parts["vae"].config.scale_factor_spatial), parts["transformer"].config.patch_size[1]  # 8 (16), 2

    def _configure(
        self, parts: Dict, *,
        boundary_ratio: Optional[float] = None,  # Wan2.2 A14B: sigma >= ratio -> transformer; None: from the path
        guidance_scale_2: Optional[float] = None,  # CFG of the low-noise expert; None: guidance_scale
        expand_timesteps: Optional[bool] = None,  # Wan2.2 TI2V-5B: per-token timesteps; None: from the path
        train_experts: str = "both",  # both | high (transformer) | low (transformer_2)
        num_frames: int = 33,  # video frames, 4k + 1
        guidance_scale: float = 5.0,  # classifier-free guidance; <= 1 disables it
        negative_prompt: str = "",
        cfg_no_grad_uncond: bool = False,  # unconditional branch without autograd (official ViPO Wan)
        shift: Optional[float] = None,  # static schedule shift; None: scheduler's flow_shift, else 5.0
    ) -> None:
        index = parts.get("model_index") or {}  # a checkpoint's model_index.json
        boundary_ratio = index.get("boundary_ratio") if boundary_ratio is None else boundary_ratio
        expand_timesteps = index.get("expand_timesteps") if expand_timesteps is None else expand_timesteps
        if shift is None:
            shift = self.scheduler_config.get("flow_shift", self.scheduler_config.get("shift"))
        self.transformer_2 = parts.pop("transformer_2", None)
        if (self.transformer_2 is None) != (boundary_ratio is None):
            raise ValueError("Wan2.2 two-expert models need both transformer_2 and boundary_ratio "
                             f"(got transformer_2={'set' if self.transformer_2 is not None else None}, "
                             f"boundary_ratio={boundary_ratio})")
        if train_experts not in EXPERTS or (train_experts == "low" and self.transformer_2 is None):
            raise ValueError(f"train_experts={train_experts!r}: choose one of {', '.join(EXPERTS)} "
                             "('low' needs transformer_2)")
        self.boundary_ratio, self.train_experts = boundary_ratio, train_experts
        self.expand_timesteps = bool(expand_timesteps)
        self.t_scale = int(parts["vae"].config.scale_factor_temporal)  # 4
        self.s_scale = self.vae_scale  # 8 (Wan2.2 TI2V-5B: 16)
        if (num_frames - 1) % self.t_scale:
            raise ValueError(f"Wan num_frames must be {self.t_scale}k + 1, got {num_frames}")
        self.num_frames = num_frames
        self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
        self._guidance_scale_2 = guidance_scale_2  # None: follows guidance_scale, also when that is set later
        self.cfg_no_grad_uncond = cfg_no_grad_uncond
        self.shift = 5.0 if shift is None else shift

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> dict:
        import os

        from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
        from transformers import AutoTokenizer, UMT5EncoderModel

        try:  # model_index.json: boundary_ratio, expand_timesteps, transformer_2
            index = dict(WanPipeline.load_config(check_pretrained(path_or_id)))
        except EnvironmentError:  # a folder of parts without model_index.json: a Wan2.1-style single model
            index = {}
        two = (index.get("transformer_2") or [None])[0] is not None or os.path.isdir(f"{path_or_id}/transformer_2")
        parts = load_parts(path_or_id, WanTransformer3DModel, AutoencoderKLWan, [UMT5EncoderModel], [AutoTokenizer],
                           dtype, vae_dtype, **({"transformer_2": WanTransformer3DModel} if two else {}))
        return {**parts, "model_index": index}

    def _networks(self) -> List[nn.Module]:
        return [self.transformer] + ([self.transformer_2] if self.transformer_2 is not None else [])

    @property
    def fsdp_roots(self) -> List[str]:
        """FSDP shards the experts as separate roots: each step runs only one of them."""
        return ["transformer"] + (["transformer_2"] if self.transformer_2 is not None else [])

    def _trained_networks(self) -> List[nn.Module]:
        nets = self._networks()
        return {"both": nets, "high": nets[:1], "low": nets[1:]}[self.train_experts]

    @property
    def guidance_scale_2(self) -> float:
        """CFG of the low-noise expert: the one given, else ``guidance_scale`` (a VBench preset that sets only
        ``guidance_scale`` sets both experts' guidance)."""
        return self.guidance_scale if self._guidance_scale_2 is None else self._guidance_scale_2

    @guidance_scale_2.setter
    def guidance_scale_2(self, value: Optional[float]) -> None:
        self._guidance_scale_2 = value

    def _uses_cfg(self) -> bool:
        return max(self.guidance_scale, self.guidance_scale_2) > 1.0

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

    def _encode(self, prompts: List[str]) -> Cond:
        prompts = [re.sub(r"\s+", " ", p).strip() for p in prompts]  # the pipeline's whitespace clean-up
        toks = tokenize(self.tokenizers[0], prompts, self.max_sequence_length)
        ids, mask = toks["input_ids"].to(self.device), toks["attention_mask"].to(self.device)
        states = self.text_encoders[0](ids, mask).last_hidden_state  # [B, L, 4096]
        states = states * mask.unsqueeze(-1).to(states.dtype)  # [B, L, 4096]: zero past each prompt's end
        return {"prompt_embeds": states.to(self.dtype)}

    def expert(self, sigma: torch.Tensor) -> tuple[nn.Module, float]:
        """The network that owns noise level ``sigma`` [B] and its guidance scale: Wan2.2's high-noise expert
        where the pipeline's timestep ``1000 sigma >= 1000 boundary_ratio``, else the low-noise one."""
        if self.transformer_2 is None:
            return self.transformer, self.guidance_scale
        high = sigma.float() * 1000 >= self.boundary_ratio * 1000  # [B]
        if not (high.all() or not high.any()):
            raise ValueError(f"one velocity call spans both Wan2.2 experts (sigmas {sigma.tolist()}, "
                             f"boundary {self.boundary_ratio}); call it per noise level")
        return (self.transformer, self.guidance_scale) if high[0] else (self.transformer_2, self.guidance_scale_2)

    def _forward(self, net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        t = sigma * 1000  # [b]: Wan expects 1000 * sigma
        if self.expand_timesteps:  # TI2V-5B: one timestep per latent token of the 2x2 patch grid
            f, h, w = x.shape[2:]
            p = self.transformer.config.patch_size
            t = t[:, None].expand(-1, (f // p[0]) * (h // p[1]) * (w // p[2]))  # [b, tokens]
        return net(
            hidden_states=x,  # [b, C, F, H, W]
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],  # [b, L, D]
            return_dict=False,
        )[0]  # [b, C, F, H, W]

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        self._check_latents(latents, multiple=self.transformer.config.patch_size[1])
        x = latents.to(device=self.device, dtype=self.dtype)  # [B, C, F, H, W]
        s = sigma.to(device=self.device, dtype=torch.float32).expand(x.shape[0])  # [B]
        c, u = self._cfg_pair(cond, ("prompt_embeds",))
        net, scale = self.expert(s)

        def forward(xx: torch.Tensor, cc: Cond) -> torch.Tensor:
            return self._forward(net, xx, s.repeat(xx.shape[0] // s.shape[0]), cc)

        v = cfg_combine(forward, x, c, u, scale, self.cfg_no_grad_uncond)  # [B, C, F, H, W]
        return v.float()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._check_latents(latents)
        z = denormalize(self.vae, latents.to(self.device)).to(self.vae_dtype)  # [B, C, F, h, w]
        return to_unit_range(self.vae.decode(z, return_dict=False)[0])  # [B, 3, frames, s h, s w]

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return sigma_schedule(num_steps, self.shift)
