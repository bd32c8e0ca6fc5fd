"""Shared plumbing for the diffusers-backed generators (FLUX.1/2, SD3.5, Wan2.1/2.2, Qwen-Image, Z-Image).

Kept small on purpose: path checks, dtype parsing, loading a checkpoint's parts, the per-prompt embedding
cache, classifier-free guidance, the scheduler's sigma schedule, turning VAE output into ``[0, 1]`` float32
images. The base class of the adapters is ``vipo.generators.adapter.DiffusersGenerator``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

Tensors = Dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- loading
def check_pretrained(path_or_id: str) -> str:
    """A hub id ("org/name") passes through; a local-looking path must exist (FileNotFoundError naming it)."""
    if os.path.exists(path_or_id):
        return path_or_id
    looks_local = (
        path_or_id.startswith(("/", "./", "../", "~", "."))
        or path_or_id.count("/") > 1
        or "\\" in path_or_id
    )
    if looks_local:
        raise FileNotFoundError(f"checkpoint path does not exist: {path_or_id!r}")
    return path_or_id


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"bfloat16" / "bf16" / "float16" / "float32" / a torch.dtype -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
             "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating weights to ``dtype``, keeping the model's ``_keep_in_fp32_modules`` in float32
    (what diffusers' ``from_pretrained(torch_dtype=...)`` does, e.g. Wan's time embedder and norms)."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    for name, sub in module.named_modules():
        want = torch.float32 if any(k in name.split(".") for k in keep) else dtype
        for p in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
            if p.is_floating_point() and p.dtype != want:
                p.data = p.data.to(want)
    return module


def load_parts(path_or_id: str, transformer, vae, text_encoders: Sequence, tokenizers: Sequence,
               dtype: torch.dtype, vae_dtype: torch.dtype, **extra) -> Dict:
    """Load a diffusers checkpoint folder's parts by class: ``transformer/``, ``vae/``, ``text_encoder{,_2,..}/``,
    ``tokenizer{,_2,..}/``, any ``extra`` subfolder=class (Wan2.2's ``transformer_2``), and the scheduler's config.

    Returns ``{"transformer", "vae", "text_encoders": [...], "tokenizers": [...], "scheduler": dict, **extra}``.
    Diffusers models get ``torch_dtype`` (the VAE ``vae_dtype``), transformers models ``dtype``.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    path = check_pretrained(path_or_id)

    def model(cls, sub: str, dt: torch.dtype):
        if cls.__module__.startswith("diffusers"):
            return cls.from_pretrained(path, subfolder=sub, torch_dtype=dt)
        return cls.from_pretrained(path, subfolder=sub, dtype=dt)

    def numbered(name: str, i: int) -> str:
        return name if i == 0 else f"{name}_{i + 1}"

    return dict(
        transformer=model(transformer, "transformer", dtype),
        vae=model(vae, "vae", vae_dtype),
        text_encoders=[model(cls, numbered("text_encoder", i), dtype) for i, cls in enumerate(text_encoders)],
        tokenizers=[cls.from_pretrained(path, subfolder=numbered("tokenizer", i)) for i, cls in enumerate(tokenizers)],
        scheduler=dict(FlowMatchEulerDiscreteScheduler.load_config(path, subfolder="scheduler")),
        **{sub: model(cls, sub, dtype) for sub, cls in extra.items()},
    )


def vae_scale_2d(vae: nn.Module) -> int:
    """Downsampling factor of an ``AutoencoderKL``-style VAE: 2 per block after the first (8 for 4 blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: text encoders and VAEs are never trained here."""
    module.eval()
    module.requires_grad_(False)
    return module


# ----------------------------------------------------------------------------- prompts
class PromptCache:
    """prompt -> dict of unbatched tensors, least recently used first out. ``get`` encodes only the
    prompts it does not hold. ``max_prompts`` bounds memory (a FLUX T5 embedding is 4 MiB in bf16);
    0 keeps everything."""

    def __init__(self, encode_fn: Callable[[List[str]], Tensors], max_prompts: int = 256):
        self.encode_fn = encode_fn  # list of prompts -> dict of batch-first tensors
        self.max_prompts = max_prompts
        self.store: "OrderedDict[str, Tensors]" = OrderedDict()

    @torch.no_grad()
    def get(self, prompts: Sequence[str], device: torch.device | None = None) -> Tensors:
        if isinstance(prompts, str):
            raise TypeError("encode_prompts takes a sequence of prompts, not a single string")
        if len(prompts) == 0:
            raise ValueError("encode_prompts needs at least one prompt")
        missing = list(dict.fromkeys(p for p in prompts if p not in self.store))
        if missing:
            enc = self.encode_fn(missing)
            for i, p in enumerate(missing):
                self.store[p] = {k: v[i].detach().clone() for k, v in enc.items()}
        out = {k: torch.stack([self.store[p][k] for p in prompts]) for k in self.store[prompts[0]]}  # [B, ...]
        for p in prompts:
            self.store.move_to_end(p)
        while self.max_prompts and len(self.store) > self.max_prompts:
            self.store.popitem(last=False)
        return out if device is None else {k: v.to(device) for k, v in out.items()}

    def clear(self) -> None:
        self.store.clear()


def tokenize(tokenizer, prompts: Sequence[str], max_length: int) -> Tensors:
    """Pad to ``max_length`` and truncate, as the diffusers pipelines do."""
    out = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True,
                    return_attention_mask=True, return_tensors="pt")
    return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}


def clip_max_length(tokenizer, default: int = 77) -> int:
    n = getattr(tokenizer, "model_max_length", default)
    return default if n is None or n > 10_000 else int(n)  # unset -> VERY_LARGE_INTEGER


# ----------------------------------------------------------------------------- guidance
def cfg_combine(
    forward: Callable[[torch.Tensor, Tensors], torch.Tensor],
    x: torch.Tensor,
    cond: Tensors,
    uncond: Tensors,
    scale: float,
    no_grad_uncond: bool,
    adjust: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """Classifier-free guidance ``v_u + scale (v_c - v_u)``.

    ``forward(x, cond)`` runs the model on a batch. Scale <= 1 skips the unconditional branch
    (scale 1 is the conditional velocity). ``no_grad_uncond`` runs that branch without autograd
    (the official ViPO Wan script does this to save memory); otherwise both branches share one
    batched forward pass. ``adjust(v, v_c)`` post-processes the guided output (Qwen-Image and Z-Image rescale
    it against the conditional output's norm).
    """
    if scale <= 1.0:
        return forward(x, cond)
    if no_grad_uncond:
        with torch.no_grad():
            v_u = forward(x, uncond)  # [B, ...]
        v_c = forward(x, cond)  # [B, ...]
    else:
        both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}  # [2B, ...]
        v_u, v_c = forward(torch.cat([x, x]), both).chunk(2)  # [B, ...] each
    v = v_u + scale * (v_c - v_u)  # [B, ...]
    return v if adjust is None else adjust(v, v_c)


def scheduler_sigmas(config: Dict, num_steps: int, mu: Optional[float] = None) -> torch.Tensor:
    """[T+1] float32 sigmas from 1 to 0 exactly as ``FlowMatchEulerDiscreteScheduler(**config)`` gives a
    pipeline that passes ``sigmas=linspace(1, 1/T, T)`` (and ``mu`` for resolution-dependent shifting):
    shift or ``time_shift(mu)``, ``shift_terminal`` stretching, then a final 0."""
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    sched = FlowMatchEulerDiscreteScheduler.from_config(config)
    if sched.config.use_dynamic_shifting and mu is None:
        raise ValueError("this scheduler shifts by resolution (use_dynamic_shifting): pass mu")
    sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / num_steps, num_steps), mu=mu)
    return sched.sigmas.float().cpu()  # [T+1]


def calculate_shift(seq_len: int, config: Dict) -> float:
    """The pipelines' ``mu``: linear in the image token count between the scheduler's base and max shift."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    return float(base + (top - base) / (max_len - base_len) * (seq_len - base_len))


# ----------------------------------------------------------------------------- images
def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """VAE output in [-1, 1] -> float32 in [0, 1]."""
    return (x.float() / 2 + 0.5).clamp(0.0, 1.0)


def decode_scaled(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKL`` decode (FLUX.1, SD3.5, Z-Image): ``latents / scaling_factor + shift_factor`` -> VAE
    -> [0, 1]. latents [B, C, h, w] on the VAE's device and dtype -> images [B, 3, 8h, 8w] float32."""
    cfg = vae.config
    return to_unit_range(vae.decode(latents / cfg.scaling_factor + cfg.shift_factor, return_dict=False)[0])


def denormalize(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Wan-family VAEs (Wan, Qwen-Image): ``z * latents_std + latents_mean`` per channel, in float32.
    latents [B, C, F, h, w] -> [B, C, F, h, w]."""
    cfg = vae.config
    shape = (1, cfg.z_dim, 1, 1, 1)
    mean = torch.tensor(cfg.latents_mean, device=latents.device).view(shape)  # [1, C, 1, 1, 1]
    std = torch.tensor(cfg.latents_std, device=latents.device).view(shape)  # [1, C, 1, 1, 1]
    return latents.float() * std + mean


def module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
