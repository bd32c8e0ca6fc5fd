"""HPSv2.1 (Human Preference Score v2.1) on transformers' ``CLIPModel``.

Reference: tgxs002/HPSv2 (``hpsv2.score``): an open_clip ViT-H-14 whose weights are replaced by
``HPS_v2.1_compressed.pt`` (key ``state_dict``). Score = cosine of the L2-normalised image and text
embeddings (``diag(image_features @ text_features.T)``), no logit scale.

Preprocessing (HPSv2's eval transform): to tensor, longer side -> 224 bicubic with antialias, zero-pad
centred to 224 x 224, OpenAI mean/std. No centre crop. Text: the CLIP BPE tokenizer, 77 ids, 0-padded.

The converter maps the open_clip layout (fused ``in_proj`` attention, ``proj``/``text_projection``
matrices applied as ``x @ P``) onto transformers' names (separate q/k/v, ``Linear`` projections).
"""

from __future__ import annotations

import math
import os
from typing import Dict, Sequence

import torch
from transformers import CLIPConfig, CLIPModel

from vipo.rewards.base import Reward, attribute_set
from vipo.rewards.clip_utils import CLIPBPETokenizer, normalize, quantize_uint8, resize_longest_and_pad
from vipo.rewards.loading import load_torch_checkpoint, resolve

HPS_HUB_ID = "xswu/HPSv2"  # hub repository of the official checkpoints
HPS_V21_FILE = "HPS_v2.1_compressed.pt"
CLIP_H14_TOKENIZER_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # vocab.json + merges.txt (the OpenAI CLIP BPE)


# ------------------------------------------------------------------------------------ conversion
def clip_config_from_open_clip(sd: Dict[str, torch.Tensor], vision_head_width: int = 80,
                               text_head_width: int = 64) -> CLIPConfig:
    """Infer a ``CLIPConfig`` from an open_clip state dict.

    Head counts are not stored in the weights: ViT-H-14 uses 80-dim vision heads and 64-dim text heads.
    Activation is exact GELU and layer norms use eps 1e-5 (open_clip's ``nn.LayerNorm`` default).
    """
    v_width, _, patch, _ = sd["visual.conv1.weight"].shape  # [W, 3, p, p]
    grid = math.isqrt(sd["visual.positional_embedding"].shape[0] - 1)
    t_width = sd["token_embedding.weight"].shape[1]

    def n_layers(prefix: str) -> int:  # prefix "a.b.resblocks." -> number of distinct block indices
        depth = prefix.count(".")
        return len({k.split(".")[depth] for k in sd if k.startswith(prefix)})

    vision = dict(hidden_size=v_width, intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                  num_hidden_layers=n_layers("visual.transformer.resblocks."),
                  num_attention_heads=v_width // vision_head_width, image_size=grid * patch, patch_size=patch,
                  hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=sd["visual.proj"].shape[1])
    vocab = sd["token_embedding.weight"].shape[0]
    text = dict(vocab_size=vocab, hidden_size=t_width,
                intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                num_hidden_layers=n_layers("transformer.resblocks."), num_attention_heads=t_width // text_head_width,
                max_position_embeddings=sd["positional_embedding"].shape[0], hidden_act="gelu", layer_norm_eps=1e-5,
                projection_dim=sd["text_projection"].shape[1], bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=0)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=sd["text_projection"].shape[1])


def _convert_blocks(sd: Dict[str, torch.Tensor], src: str, dst: str, layers: int) -> Dict[str, torch.Tensor]:
    out = {}
    for i in range(layers):
        s, d = f"{src}.{i}", f"{dst}.{i}"
        q, k, v = sd[f"{s}.attn.in_proj_weight"].chunk(3, dim=0)  # 3 x [W, W]
        qb, kb, vb = sd[f"{s}.attn.in_proj_bias"].chunk(3, dim=0)  # 3 x [W]
        out.update({
            f"{d}.self_attn.q_proj.weight": q, f"{d}.self_attn.k_proj.weight": k, f"{d}.self_attn.v_proj.weight": v,
            f"{d}.self_attn.q_proj.bias": qb, f"{d}.self_attn.k_proj.bias": kb, f"{d}.self_attn.v_proj.bias": vb,
            f"{d}.self_attn.out_proj.weight": sd[f"{s}.attn.out_proj.weight"],
            f"{d}.self_attn.out_proj.bias": sd[f"{s}.attn.out_proj.bias"],
            f"{d}.layer_norm1.weight": sd[f"{s}.ln_1.weight"], f"{d}.layer_norm1.bias": sd[f"{s}.ln_1.bias"],
            f"{d}.layer_norm2.weight": sd[f"{s}.ln_2.weight"], f"{d}.layer_norm2.bias": sd[f"{s}.ln_2.bias"],
            f"{d}.mlp.fc1.weight": sd[f"{s}.mlp.c_fc.weight"], f"{d}.mlp.fc1.bias": sd[f"{s}.mlp.c_fc.bias"],
            f"{d}.mlp.fc2.weight": sd[f"{s}.mlp.c_proj.weight"], f"{d}.mlp.fc2.bias": sd[f"{s}.mlp.c_proj.bias"],
        })
    return out


def convert_open_clip_state_dict(sd: Dict[str, torch.Tensor], config: CLIPConfig) -> Dict[str, torch.Tensor]:
    """open_clip ``CLIP`` state dict -> transformers ``CLIPModel`` state dict (same numbers, new names)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    v_cfg, t_cfg = config.vision_config, config.text_config
    out = {
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],  # [W]
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],  # [W, 3, p, p]
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],  # [N+1, W]
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t(),  # x @ P == Linear with weight P^T
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"],
        "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"],
    }
    out.update(_convert_blocks(sd, "visual.transformer.resblocks", "vision_model.encoder.layers",
                               v_cfg.num_hidden_layers))
    out.update(_convert_blocks(sd, "transformer.resblocks", "text_model.encoder.layers", t_cfg.num_hidden_layers))
    return {k: v.contiguous() for k, v in out.items()}


def clip_model_from_open_clip(sd: Dict[str, torch.Tensor], vision_head_width: int = 80,
                              text_head_width: int = 64) -> CLIPModel:
    """Build a ``CLIPModel`` holding the weights of an open_clip state dict (strict: every weight used)."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    config = clip_config_from_open_clip(sd, vision_head_width, text_head_width)
    model = CLIPModel(config)
    converted = convert_open_clip_state_dict(sd, config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise KeyError(f"open_clip -> CLIPModel conversion: missing {missing}, unexpected {unexpected}")
    return model.eval()


def load_hps_clip(path_or_id: str = HPS_HUB_ID, filename: str = HPS_V21_FILE) -> CLIPModel:
    """An HPS checkpoint as a ``CLIPModel``: the official ``.pt`` (converted on the fly) or a folder
    written by ``CLIPModel.save_pretrained`` (``config.json`` present)."""
    if os.path.isdir(path_or_id) and os.path.exists(os.path.join(path_or_id, "config.json")):
        return CLIPModel.from_pretrained(path_or_id).eval()
    ckpt = load_torch_checkpoint(resolve(path_or_id, filename, what="HPSv2 checkpoint"))
    return clip_model_from_open_clip(ckpt.get("state_dict", ckpt))


def convert_hps_checkpoint(path_or_id: str, out_dir: str, filename: str = HPS_V21_FILE) -> str:
    """Convert the official checkpoint once and save it as a transformers folder (pass that folder as
    ``path_or_id`` later: it loads without the conversion step)."""
    load_hps_clip(path_or_id, filename).save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------- scorer
class HPSv21(Reward):
    """HPSv2.1 reward: ``cos(image_embedding, text_embedding)`` per (image, prompt) pair, float32 [B].

    path_or_id: the official ``.pt`` file, a folder holding it (or a converted ``save_pretrained`` folder),
    or the hub id ``xswu/HPSv2``. tokenizer_path_or_id: a folder / hub id with ``vocab.json`` +
    ``merges.txt``, or open_clip's ``bpe_simple_vocab_16e6.txt.gz``. quantize: round images to 8 bits
    first, as the reference (which scores saved PNGs) sees them; turn off to keep gradients.
    """

    def __init__(self, path_or_id: str = HPS_HUB_ID, tokenizer_path_or_id: str = CLIP_H14_TOKENIZER_ID,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, quantize: bool = True,
                 filename: str = HPS_V21_FILE):
        super().__init__()
        self._attach(load_hps_clip(path_or_id, filename), CLIPBPETokenizer.from_pretrained(tokenizer_path_or_id),
                     device, dtype, quantize)

    @classmethod
    def from_model(cls, model: CLIPModel, tokenizer: CLIPBPETokenizer, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, quantize: bool = True) -> "HPSv21":
        """Wrap an in-memory ``CLIPModel`` (e.g. a tiny random one in tests)."""
        obj = cls.__new__(cls)
        Reward.__init__(obj)
        obj._attach(model, tokenizer, device, dtype, quantize)
        return obj

    def _attach(self, model: CLIPModel, tokenizer: CLIPBPETokenizer, device, dtype, quantize: bool) -> None:
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.quantize = quantize

    def differentiable_path(self):
        """Without the 8-bit rounding (whose gradient is zero); the float resize and normalisation as always."""
        return attribute_set(self, "quantize", False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised pixels [B, 3, S, S] (S = model image size)."""
        if self.quantize:
            images = quantize_uint8(images)
        return normalize(resize_longest_and_pad(images.float(), self.image_size))

    def embed(self, images: torch.Tensor, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised image and text embeddings, each [B, D]."""
        p = next(self.model.parameters())
        pixels = self.preprocess(images).to(device=p.device, dtype=p.dtype)  # [B, 3, S, S]
        ids = self.tokenizer(list(prompts)).to(p.device)  # [B, 77]
        img = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)  # [B, D]
        txt = self.model.text_projection(self.model.text_model(input_ids=ids).pooler_output)  # [B, D]
        return torch.nn.functional.normalize(img.float(), dim=-1), torch.nn.functional.normalize(txt.float(), dim=-1)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"HPSv21 scores images [B, 3, H, W]; got shape {tuple(images.shape)} "
                             "(score video frames as a batch of images)")
        img, txt = self.embed(images, prompts)
        return (img * txt).sum(-1)  # [B]
