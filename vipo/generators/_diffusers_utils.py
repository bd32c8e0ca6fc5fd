"""Shared plumbing for the diffusers-backed generators (FLUX.1/2, SD3.5, Wan2.1/2.2, Qwen-Image, Z-Image).

Kept small on purpose: path checks, dtype parsing, loading a checkpoint's parts, the per-prompt embedding
cache, classifier-free guidance, the scheduler's sigma schedule, turning VAE output into ``[0, 1]`` float32
images, and ``DiffusersGenerator``, the mixin with what the adapters share (component checks, placement,
training setup, negative prompts).
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


# ----------------------------------------------------------------------------- maps
class Packed2x2Maps:
    """``pack_map`` for models whose transformer sees 2x2-packed tokens of the unpacked latents (FLUX.1,
    FLUX.2, Qwen-Image): a map on the latent grid [B, H, W] -> per token [B, (H/2)(W/2), 4], slot 2 dy + dx,
    the same token and slot as the latents' values at that position."""

    def pack_map(self, maps: torch.Tensor) -> torch.Tensor:
        from vipo.psm import pack_2x2

        if maps.ndim != 3:
            raise ValueError(f"pack_map takes maps [B, H/8, W/8], got {list(maps.shape)}")
        return pack_2x2(maps.unsqueeze(1))  # [B, HW/4, 4]


# ----------------------------------------------------------------------------- common base
class DiffusersGenerator:
    """Mixin with what the diffusers adapters share: getting the components (loaded or given), frozen
    encoders/VAE, training setup, the prompt cache and negative prompts.

    A subclass names its text encoders in ``TEXT_ENCODERS``, loads a checkpoint in ``_load(path, dtype,
    vae_dtype) -> dict`` (keys ``transformer``, ``vae``, ``text_encoders``, ``tokenizers``, optionally
    ``scheduler``: the scheduler config), gets them through ``_components`` and finishes with ``_attach``.
    Two-expert models (Wan2.2 A14B) list every network in ``_networks``.
    """

    TEXT_ENCODERS: tuple = ()  # names of the text encoders in order, for error messages
    transformer: nn.Module
    vae: nn.Module
    text_encoders: nn.ModuleList

    @classmethod
    def from_pretrained(cls, path_or_id: str, **options):
        return cls(path_or_id, **options)

    @classmethod
    def from_components(cls, transformer, vae, text_encoders, tokenizers, **options):
        return cls(transformer=transformer, vae=vae, text_encoders=text_encoders, tokenizers=tokenizers, **options)

    def _components(self, path_or_id: Optional[str], given: Dict, dtype, vae_dtype) -> Dict:
        """The checkpoint's parts (``path_or_id``) or the ``given`` ones, all present and the right count."""
        name = type(self).__name__
        parts = self._load(path_or_id, resolve_dtype(dtype), resolve_dtype(vae_dtype)) if path_or_id else dict(given)
        missing = [k for k in ("transformer", "vae", "text_encoders", "tokenizers") if parts.get(k) is None]
        if missing:
            raise ValueError(f"{name} needs path_or_id or all of transformer, vae, text_encoders, tokenizers "
                             f"(missing: {', '.join(missing)})")
        n, names = len(self.TEXT_ENCODERS), ", ".join(self.TEXT_ENCODERS)
        if len(parts["text_encoders"]) != n or len(parts["tokenizers"]) != n:
            raise ValueError(f"{name} needs {n} text encoder(s) and tokenizer(s): [{names}], got "
                             f"{len(parts['text_encoders'])} and {len(parts['tokenizers'])}")
        return parts

    def _set_size(self, height: int, width: int, vae_scale: int, patch: int, model: str) -> None:
        """Image size in pixels: multiples of the VAE's downsampling times the transformer's patch size."""
        step = vae_scale * patch
        if height % step or width % step:
            raise ValueError(f"{model} height/width must be multiples of {step}, got {height}x{width}")
        self.vae_scale, self.height, self.width = vae_scale, height, width

    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> Dict:
        raise NotImplementedError(f"{type(self).__name__} cannot load checkpoints")

    def _attach(self, transformer, vae, text_encoders, tokenizers, *, dtype, device, vae_dtype, lora_rank,
                lora_alpha, target_modules, gradient_checkpointing, prompt_cache_size, **_) -> None:
        """Hold the components, place and freeze them, set up LoRA or full training and the prompt cache.
        (Extra keys of a ``_components`` dict, such as ``scheduler``, are ignored.)"""
        self.transformer, self.vae = transformer, vae
        self.text_encoders = nn.ModuleList(text_encoders)
        self.tokenizers = list(tokenizers)
        self._place(resolve_dtype(dtype), device, resolve_dtype(vae_dtype))
        self._setup_training(lora_rank, lora_alpha, target_modules, gradient_checkpointing)
        self.cache = PromptCache(self._encode, prompt_cache_size)  # type: ignore[attr-defined]

    def _networks(self) -> List[nn.Module]:
        """The denoising networks (one, or Wan2.2's two experts): cast to ``dtype`` and trainable."""
        return [self.transformer]

    def _place(self, dtype: torch.dtype, device: str | torch.device, vae_dtype: torch.dtype) -> None:
        """Move every component to ``device``, cast the transformer and text encoders to ``dtype`` and
        the VAE to ``vae_dtype``; freeze the encoders and the VAE."""
        self.dtype, self.vae_dtype = dtype, vae_dtype
        for m in [*self._networks(), *self.text_encoders]:
            cast(m, dtype).to(device)
        cast(self.vae, vae_dtype).to(device)
        for m in [self.vae, *self.text_encoders]:
            freeze(m)

    def _setup_training(self, lora_rank: int, lora_alpha, target_modules, gradient_checkpointing: bool,
                        lora_init: str | bool = "gaussian") -> None:
        from vipo.generators.lora import configure_training

        self._trainable = []
        for net in self._trained_networks():
            self._trainable += configure_training(net, lora_rank, lora_alpha, target_modules, init=lora_init,
                                                  gradient_checkpointing=gradient_checkpointing)
        for net in self._networks():
            if not any(net is t for t in self._trained_networks()):
                freeze(net)

    def _trained_networks(self) -> List[nn.Module]:
        return self._networks()

    def trainable_parameters(self) -> List[nn.Parameter]:
        return list(self._trainable)

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        for m in [self.vae, *self.text_encoders]:
            m.eval()  # frozen parts never leave eval mode
        return self

    # ------------------------------------------------------------------ prompts
    def encode_prompts(self, prompts: Sequence[str]) -> Tensors:
        """Cached embeddings; with classifier-free guidance also the negative prompt's as ``neg_<key>``."""
        cond = self.cache.get(prompts, self.device)  # type: ignore[attr-defined]
        if self._uses_cfg():
            neg = self.cache.get([self.negative_prompt], self.device)  # type: ignore[attr-defined]
            cond.update({"neg_" + k: v.expand(len(prompts), *v.shape[1:]).clone() for k, v in neg.items()})
        return cond

    def _uses_cfg(self) -> bool:
        """True when the velocity needs the negative prompt (models with a ``negative_prompt`` and scale > 1)."""
        return hasattr(self, "negative_prompt") and getattr(self, "guidance_scale", 1.0) > 1.0

    def _cfg_pair(self, cond: Tensors, keys: Sequence[str]) -> tuple:
        """(cond, uncond) dicts of ``keys`` on the model's device and dtype (float masks stay as they are)."""
        if self._uses_cfg() and "neg_" + keys[0] not in cond:
            raise ValueError("guided velocity needs the negative-prompt entries that encode_prompts adds")
        dev = self.device

        def put(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=dev, dtype=self.dtype) if t.is_floating_point() else t.to(dev)  # type: ignore

        c = {k: put(cond[k]) for k in keys}
        u = {k: put(cond.get("neg_" + k, cond[k])) for k in keys}
        return c, u

    @property
    def device(self) -> torch.device:
        return module_device(self.transformer)

    def _check_latents(self, latents: torch.Tensor, multiple: int = 1) -> None:
        """Unpacked layout with the right channels and rank; height and width divisible by ``multiple``
        (the transformer's patch size). Other resolutions than the configured one are allowed."""
        want = tuple(self.latent_shape())  # type: ignore[attr-defined]
        if latents.ndim != len(want) + 1 or latents.shape[1] != want[0]:
            raise ValueError(f"{type(self).__name__}: latents must be [B, {', '.join(map(str, want))}] "
                             f"(unpacked layout), got {list(latents.shape)}")
        if latents.shape[-2] % multiple or latents.shape[-1] % multiple:
            raise ValueError(f"{type(self).__name__}: latent height/width must be multiples of {multiple} "
                             f"(patch size), got {list(latents.shape)}")
