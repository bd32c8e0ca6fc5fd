"""ImageReward on transformers' BLIP classes.

Reference: THUDM/ImageReward (``ImageReward.score``): a BLIP ViT-L/16 vision encoder (LayerNorm eps 1e-6,
all 197 tokens after the final norm), a BERT-base text encoder with cross-attention into those tokens
(BLIP's ``med`` BertModel, bidirectional self-attention, default "multimodal" mode), the feature of the
first ([CLS]) token, a 5-layer linear MLP (768-1024-128-64-16-1, dropout between, no activations), and
``reward = (mlp - 0.16717362830052426) / 1.0333394966054072``.

Tokenizer: ``bert-base-uncased`` + ``[DEC]`` (bos) + ``[ENC]`` (additional special token), so the
vocabulary has 30524 ids; prompts are padded to 35 ids (``padding="max_length", truncation=True``).
Pixels: ``Resize(224, bicubic)`` + ``CenterCrop(224)`` on 8-bit PIL images + OpenAI mean/std.

Checkpoint ``ImageReward.pt`` is a flat state dict: ``blip.visual_encoder.*`` (timm-style ViT names),
``blip.text_encoder.*`` (the same names as transformers' ``BlipTextModel``) and ``mlp.layers.*``.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
from transformers.models.blip.modeling_blip_text import BlipTextModel

from vipo.rewards.base import Reward, attribute_set
from vipo.rewards.clip_utils import (check_images, normalize, pil_resize_shortest_and_center_crop,
                                     resize_shortest_and_center_crop)
from vipo.rewards.loading import load_torch_checkpoint, resolve, strip_prefix

IMAGEREWARD_ID = "THUDM/ImageReward"
IMAGEREWARD_FILE = "ImageReward.pt"
BERT_TOKENIZER_ID = "bert-base-uncased"
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
MAX_PROMPT_IDS = 35


class ImageRewardHead(nn.Module):
    """The reward MLP. Dropout slots are kept so parameter names match the checkpoint (layers.0/2/4/6/7)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # [B, D] -> [B, 1]


# ------------------------------------------------------------------------------------ conversion
def configs_from_state_dict(sd: Dict[str, torch.Tensor], head_dim: int = 64,
                            med_config: Optional[dict] = None) -> Tuple[BlipVisionConfig, BlipTextConfig]:
    """Vision and text configs read off the checkpoint's shapes (head counts = width / head_dim: 64 for
    both BLIP ViT-L and BERT-base). ``med_config`` (BLIP's med_config.json) supplies eps / dropout names."""
    vis = strip_prefix(sd, "blip.visual_encoder.")
    txt = strip_prefix(sd, "blip.text_encoder.")
    v_width, _, patch, _ = vis["patch_embed.proj.weight"].shape  # [W, 3, p, p]
    n_pos = vis["pos_embed"].shape[1] - 1
    vision = BlipVisionConfig(
        hidden_size=v_width, intermediate_size=vis["blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len({k.split(".")[1] for k in vis if k.startswith("blocks.")}),
        num_attention_heads=v_width // head_dim, image_size=int(round(n_pos ** 0.5)) * patch, patch_size=patch,
        hidden_act="gelu", layer_norm_eps=1e-6)
    med = med_config or {}
    t_width = txt["embeddings.word_embeddings.weight"].shape[1]
    text = BlipTextConfig(
        vocab_size=txt["embeddings.word_embeddings.weight"].shape[0], hidden_size=t_width,
        encoder_hidden_size=v_width, intermediate_size=txt["encoder.layer.0.intermediate.dense.weight"].shape[0],
        num_hidden_layers=len({k.split(".")[2] for k in txt if k.startswith("encoder.layer.")}),
        num_attention_heads=t_width // head_dim,
        max_position_embeddings=txt["embeddings.position_embeddings.weight"].shape[0],
        hidden_act=med.get("hidden_act", "gelu"), layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        pad_token_id=med.get("pad_token_id", 0), is_decoder=True,  # is_decoder: build the cross-attention
        bos_token_id=None, eos_token_id=None, sep_token_id=None)
    return vision, text


def convert_blip_vision_state_dict(vis: Dict[str, torch.Tensor], num_layers: int) -> Dict[str, torch.Tensor]:
    """BLIP/timm ViT names -> transformers ``BlipVisionModel`` names (same tensors; qkv layouts agree)."""
    out = {
        "embeddings.class_embedding": vis["cls_token"],  # [1, 1, W]
        "embeddings.position_embedding": vis["pos_embed"],  # [1, N+1, W]
        "embeddings.patch_embedding.weight": vis["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": vis["patch_embed.proj.bias"],
        "post_layernorm.weight": vis["norm.weight"], "post_layernorm.bias": vis["norm.bias"],
    }
    names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
             "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(num_layers):
        for src, dst in names.items():
            for p in ("weight", "bias"):
                out[f"encoder.layers.{i}.{dst}.{p}"] = vis[f"blocks.{i}.{src}.{p}"]
    return out


def _load_strict(module: nn.Module, sd: Dict[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise KeyError(f"ImageReward {what}: missing {missing}, unexpected {unexpected}")


def imagereward_modules_from_state_dict(sd: Dict[str, torch.Tensor], head_dim: int = 64,
                                        med_config: Optional[dict] = None
                                        ) -> Tuple[BlipVisionModel, BlipTextModel, ImageRewardHead]:
    """Build the three modules from an ``ImageReward.pt`` state dict (strict: every weight used)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    v_cfg, t_cfg = configs_from_state_dict(sd, head_dim, med_config)
    vision = BlipVisionModel(v_cfg)
    _load_strict(vision, convert_blip_vision_state_dict(strip_prefix(sd, "blip.visual_encoder."),
                                                        v_cfg.num_hidden_layers), "vision encoder")
    text = BlipTextModel(t_cfg, add_pooling_layer=False)
    _load_strict(text, strip_prefix(sd, "blip.text_encoder."), "text encoder")
    head = ImageRewardHead(sd["mlp.layers.0.weight"].shape[1])
    _load_strict(head, strip_prefix(sd, "mlp."), "MLP head")
    return vision.eval(), text.eval(), head.eval()


def blip_tokenizer(path_or_id: str = BERT_TOKENIZER_ID):
    """bert-base-uncased WordPiece + ``[DEC]`` (bos) + ``[ENC]``, as BLIP's ``init_tokenizer``."""
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(resolve(path_or_id, what="BERT tokenizer"))
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


# ---------------------------------------------------------------------------------------- scorer
class ImageRewardModel(Reward):
    """ImageReward, float32 [B] (standardised: about N(0, 1) over the authors' benchmark).

    path_or_id: ``ImageReward.pt``, a folder holding it (and optionally ``med_config.json``), or the hub
    id ``THUDM/ImageReward``. preprocess: ``"reference"`` (8-bit PIL, exact) or ``"torch"`` (float,
    differentiable approximation).
    """

    def __init__(self, path_or_id: str = IMAGEREWARD_ID, tokenizer_path_or_id: str = BERT_TOKENIZER_ID,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 preprocess: str = "reference", filename: str = IMAGEREWARD_FILE):
        super().__init__()
        ckpt_path = resolve(path_or_id, filename, what="ImageReward checkpoint")
        med_path = os.path.join(os.path.dirname(ckpt_path), "med_config.json")
        med = None
        if os.path.exists(med_path):
            with open(med_path) as f:
                med = json.load(f)
        vision, text, head = imagereward_modules_from_state_dict(load_torch_checkpoint(ckpt_path), med_config=med)
        self._attach(vision, text, head, blip_tokenizer(tokenizer_path_or_id), device, dtype, preprocess)

    @classmethod
    def from_model(cls, vision: BlipVisionModel, text: BlipTextModel, head: ImageRewardHead, tokenizer,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   preprocess: str = "reference") -> "ImageRewardModel":
        obj = cls.__new__(cls)
        Reward.__init__(obj)
        obj._attach(vision, text, head, tokenizer, device, dtype, preprocess)
        return obj

    def _attach(self, vision, text, head, tokenizer, device, dtype, preprocess: str) -> None:
        if preprocess not in ("reference", "torch"):
            raise ValueError(f"ImageReward: preprocess must be 'reference' or 'torch', got {preprocess!r}")
        self.vision = vision.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.text = text.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.mlp = head.to(device=device).float().eval().requires_grad_(False)  # the reference runs it in fp32
        self.tokenizer = tokenizer
        self.image_size = int(vision.config.image_size)
        self.preprocess_mode = preprocess

    def differentiable_path(self):
        """The float (torch) preprocessing instead of the reference one through 8-bit PIL images."""
        return attribute_set(self, "preprocess_mode", "torch")

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised pixels [B, 3, S, S]."""
        check_images(images, "ImageReward")
        if self.preprocess_mode == "torch":
            return normalize(resize_shortest_and_center_crop(images.float(), self.image_size))
        return normalize(pil_resize_shortest_and_center_crop(images, self.image_size))

    def features(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Cross-attended [CLS] features [B, D_text] (fp32)."""
        p = next(self.vision.parameters())
        pixels = self.preprocess(images).to(device=p.device, dtype=p.dtype)  # [B, 3, S, S]
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state  # [B, N+1, D_vis]
        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_PROMPT_IDS,
                             return_tensors="pt")
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=p.device)  # [B, N+1]
        out = self.text(input_ids=ids["input_ids"].to(p.device), attention_mask=ids["attention_mask"].to(p.device),
                        encoder_hidden_states=image_embeds, encoder_attention_mask=image_atts)
        return out.last_hidden_state[:, 0].float()  # [B, D_text]

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"ImageReward scores images [B, 3, H, W]; got shape {tuple(images.shape)}")
        raw = self.mlp(self.features(images, prompts)).squeeze(-1)  # [B]
        return (raw - REWARD_MEAN) / REWARD_STD
