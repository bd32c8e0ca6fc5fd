"""Real architectures on the meta device: build any model of ``data/models.yaml`` without weights.

``build(entry)`` turns a ``{class, config}`` entry into an ``nn.Module`` whose parameters live on the meta
device (shapes and dtypes only, nothing allocated; about 0.1 s for FLUX.1-dev). ``generator_arch(path_or_id)``
looks a generator up by the id an experiment config names (``generator.path_or_id``), ``reward_arch`` by
``reward.name`` and ``backbone_arch`` by ``backbone.path_or_id``. An id the data does not know is a ``PlanError``
that names the known ones.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

DATA = Path(__file__).resolve().parent / "data"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class PlanError(ValueError):
    """Bad planner input (unknown model or GPU, a config that cannot fit); the message is one line."""


@lru_cache(maxsize=None)
def models_data() -> dict:
    import yaml

    return yaml.safe_load((DATA / "models.yaml").read_text())


def dtype_of(name: Any) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    if str(name) not in DTYPES:
        raise PlanError(f"plan error: unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return DTYPES[str(name)]


@contextmanager
def default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class ImageRewardArch(nn.Module):
    """ImageReward's modules (BLIP ViT-L vision, BERT-base text with cross-attention, MLP head), as
    ``vipo.rewards.imagereward`` builds them from a checkpoint."""

    def __init__(self, vision: dict, text: dict):
        super().__init__()
        from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        from vipo.rewards.imagereward import ImageRewardHead

        self.vision = BlipVisionModel(BlipVisionConfig(**vision))
        self.text = BlipTextModel(BlipTextConfig(**text), add_pooling_layer=False)
        self.head = ImageRewardHead(text["hidden_size"])


def _class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def build(entry: dict, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``{class: 'diffusers.X' | 'transformers.Y' | 'vipo...Z', config: {...}}`` -> module on the meta device."""
    cls = _class(entry["class"])
    config = dict(entry.get("config") or {})
    with torch.device("meta"), default_dtype(dtype):
        if entry["class"].startswith("transformers."):
            model = cls(cls.config_class(**config))
        else:
            model = cls(**config)
    return model.eval()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class GeneratorArch:
    path_or_id: str
    family: str  # flux | flux2 | sd3 | qwen_image | z_image | wan
    transformer: dict  # {class, config, source}
    experts: int = 1  # Wan2.2 A14B: two transformers, one runs per step
    text_encoders: list = field(default_factory=list)  # names in models.yaml `encoders`
    vae: Optional[str] = None
    vae_spatial: int = 8  # pixels per latent cell
    text_tokens_extra: int = 0  # tokens added to max_sequence_length (SD3's CLIP tokens)
    published: Optional[dict] = None

    def build(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return build(self.transformer, dtype)


def generator_arch(path_or_id: str) -> GeneratorArch:
    gens = models_data()["generators"]
    key = path_or_id
    if key not in gens:  # a local folder named like the hub id (".../FLUX.1-dev") is accepted by its last part
        tails = {k.split("/")[-1]: k for k in gens}
        key = tails.get(Path(str(path_or_id)).name, key)
    if key not in gens:
        raise PlanError(f"plan error: generator.path_or_id={path_or_id!r} has no architecture in "
                        f"vipo/plan/data/models.yaml; known: {', '.join(gens)}")
    e = gens[key]
    return GeneratorArch(path_or_id=key, family=e["family"], transformer=e["transformer"],
                         experts=int(e.get("experts", 1)), text_encoders=list(e.get("text_encoders") or []),
                         vae=e.get("vae"), vae_spatial=int(e.get("vae_spatial", 8)),
                         text_tokens_extra=int(e.get("text_tokens_extra", 0)), published=e.get("published"))


def encoder_entry(name: str) -> dict:
    return models_data()["encoders"][name]


def reward_arch(name: str) -> Optional[dict]:
    """The reward model's entry, or None for rewards computed by rules or the toy world (no network cost)."""
    return models_data()["rewards"].get(name)


def backbone_arch(path_or_id: Optional[str]) -> Optional[dict]:
    return models_data()["backbones"].get(path_or_id) if path_or_id else None


@lru_cache(maxsize=None)
def encoder_params(name: str) -> int:
    """Parameters of a frozen text encoder or VAE (built once on the meta device)."""
    return n_params(build(encoder_entry(name)))
