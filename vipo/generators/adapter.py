"""``DiffusersGenerator``: the base of the diffusers adapters (FLUX.1/2, SD3.5, Wan2.1/2.2, Qwen-Image, Z-Image).

The construction every adapter shares happens here, once: the components (a checkpoint's, or given ones, all
present and the right number of text encoders), the scheduler config (given, else the checkpoint's, else the
class's ``SCHEDULER_CONFIG``), the image size check, placement and freezing, LoRA or full training and the
prompt cache, and the options for all of that. An adapter declares what differs:

- ``MODEL`` (its name in messages), ``TEXT_ENCODERS``, ``LORA_TARGETS``, ``SCHEDULER_CONFIG``, ``DEFAULTS``
  (its defaults of the shared options: ``height``, ``width``, ``lora_rank``, ``max_sequence_length``, ...) and
  ``EXTRA_PARTS`` (components beyond the four, e.g. Wan2.2's ``transformer_2``);
- ``_load(path, dtype, vae_dtype)`` (the checkpoint's classes), ``_scales(parts)`` when its size rule is not
  "VAE downsampling x 2";
- ``_configure(parts, *, <its own options>)``: reads its options (guidance, shift, ...).

The constructor's signature, which the config validator reads, is the shared options (with the adapter's
defaults) followed by ``_configure``'s keyword options: ``inspect.signature(FluxGenerator)`` lists them all.
"""

from __future__ import annotations

import inspect
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from vipo.generators._diffusers_utils import PromptCache, Tensors, cast, freeze, module_device, resolve_dtype, vae_scale_2d

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
    """Mixin with what the diffusers adapters share (see the module docstring): construction, frozen
    encoders/VAE, training setup, the prompt cache and negative prompts. Two-expert models (Wan2.2 A14B) list
    every network in ``_networks``."""

    MODEL: str = "model"  # its name in messages, e.g. "FLUX.2"
    TEXT_ENCODERS: tuple = ()  # names of the text encoders in order, for error messages
    LORA_TARGETS: Sequence[str] = ()  # default lora_target_modules
    SCHEDULER_CONFIG: Optional[Dict] = None  # used when neither scheduler_config nor the checkpoint gives one
    EXTRA_PARTS: tuple = ()  # components beyond transformer, vae, text_encoders, tokenizers
    DEFAULTS: Dict = dict(height=1024, width=1024, max_sequence_length=512, lora_rank=64)  # merged down the classes
    transformer: nn.Module
    vae: nn.Module
    text_encoders: nn.ModuleList

    def __init__(
        self,
        path_or_id: Optional[str] = None,  # hub id or local diffusers folder (transformer/, vae/, ...)
        *,
        transformer: Optional[nn.Module] = None,
        vae: Optional[nn.Module] = None,
        text_encoders: Optional[Sequence[nn.Module]] = None,  # in TEXT_ENCODERS order
        tokenizers: Optional[Sequence] = None,  # one per text encoder
        height: Optional[int] = None,  # pixels; None: DEFAULTS
        width: Optional[int] = None,
        max_sequence_length: Optional[int] = None,  # text tokens
        scheduler_config: Optional[Dict] = None,  # None: the checkpoint's, else SCHEDULER_CONFIG
        dtype: str | torch.dtype = "float32",  # transformer + text encoders; velocity is float32
        vae_dtype: str | torch.dtype = "float32",  # the VAE decodes in float32 unless told otherwise
        device: str | torch.device = "cpu",
        lora_rank: Optional[int] = None,  # 0: full fine-tuning; None: DEFAULTS
        lora_alpha: Optional[float] = None,  # None: 2 * rank
        lora_target_modules: Optional[Sequence[str]] = None,  # None: LORA_TARGETS
        gradient_checkpointing: bool = False,
        prompt_cache_size: int = 256,  # prompt embeddings kept (LRU); 0: all
        **options,  # the adapter's own: _configure's keyword options, and EXTRA_PARTS
    ):
        super().__init__()
        d = self.DEFAULTS
        given = dict(transformer=transformer, vae=vae, text_encoders=text_encoders, tokenizers=tokenizers,
                     **{k: options.pop(k, None) for k in self.EXTRA_PARTS})
        parts = self._components(path_or_id, given, dtype, vae_dtype)
        self.scheduler_config = dict(scheduler_config or parts.get("scheduler") or self.SCHEDULER_CONFIG or {})
        self.max_sequence_length = d["max_sequence_length"] if max_sequence_length is None else max_sequence_length
        self._set_size(d["height"] if height is None else height, d["width"] if width is None else width,
                       *self._scales(parts))
        self._configure(parts, **options)
        self._attach(**parts, dtype=dtype, device=device, vae_dtype=vae_dtype,
                     lora_rank=d["lora_rank"] if lora_rank is None else lora_rank, lora_alpha=lora_alpha,
                     target_modules=lora_target_modules or self.LORA_TARGETS,
                     gradient_checkpointing=gradient_checkpointing, prompt_cache_size=prompt_cache_size)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        parent = next(b.DEFAULTS for b in cls.__mro__[1:] if "DEFAULTS" in vars(b))
        cls.DEFAULTS = {**parent, **vars(cls).get("DEFAULTS", {})}
        cls.__signature__ = cls._signature()

    @classmethod
    def _signature(cls) -> inspect.Signature:
        """The shared options (DEFAULTS filled in), the extra parts, then ``_configure``'s keyword options."""
        shared = [p for name, p in inspect.signature(DiffusersGenerator.__init__).parameters.items()
                  if name != "self" and p.kind is not p.VAR_KEYWORD]
        shared = [p.replace(default=cls.DEFAULTS.get(p.name, p.default)) for p in shared]
        extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in cls.EXTRA_PARTS]
        own = [p.replace(kind=p.KEYWORD_ONLY) for name, p in inspect.signature(cls._configure).parameters.items()
               if name not in ("self", "parts") and p.kind is not p.VAR_KEYWORD]
        return inspect.Signature(shared + extra + own)

    @classmethod
    def from_pretrained(cls, path_or_id: str, **options):
        return cls(path_or_id, **options)

    @classmethod
    def from_components(cls, transformer, vae, text_encoders, tokenizers, **options):
        return cls(transformer=transformer, vae=vae, text_encoders=text_encoders, tokenizers=tokenizers, **options)

    # ------------------------------------------------------------------ what an adapter declares
    def _load(self, path_or_id: str, dtype: torch.dtype, vae_dtype: torch.dtype) -> Dict:
        """A checkpoint's parts: keys ``transformer``, ``vae``, ``text_encoders``, ``tokenizers``, the
        ``EXTRA_PARTS``, optionally ``scheduler`` (its config)."""
        raise NotImplementedError(f"{type(self).__name__} cannot load checkpoints")

    def _scales(self, parts: Dict) -> tuple[int, int]:
        """(VAE downsampling, transformer patch size): height and width are multiples of their product."""
        return vae_scale_2d(parts["vae"]), 2

    def _configure(self, parts: Dict) -> None:
        """The adapter's own options, keyword-only after ``parts`` (the components, size and scheduler config are
        set by then); they join the constructor's signature."""

    # ------------------------------------------------------------------ shared construction
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

    def _set_size(self, height: int, width: int, vae_scale: int, patch: int) -> None:
        """Image size in pixels: multiples of the VAE's downsampling times the transformer's patch size."""
        step = vae_scale * patch
        if height % step or width % step:
            raise ValueError(f"{self.MODEL} height/width must be multiples of {step}, got {height}x{width}")
        self.vae_scale, self.height, self.width = vae_scale, height, width

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
