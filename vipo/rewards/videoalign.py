"""VideoAlign (VideoReward, Qwen2-VL based) video reward through transformers and peft.

Reference: KwaiVGI/VideoAlign (``inference.VideoVLMRewardInference``, ``trainer.Qwen2VLRewardModelBT``):

- a Qwen2-VL backbone with ``rm_head = Linear(hidden, output_dim, bias=False)`` on the last hidden states;
- video features replace the ``<|video_pad|>`` embeddings; the text decoder is then run with **sequential
  position ids** (``arange(L)`` on all three M-RoPE axes: the reference calls the inner text model
  directly, bypassing Qwen2-VL's 3-D ``get_rope_index``);
- with special tokens (``<|VQ_reward|>``, ``<|MQ_reward|>``, ``<|TA_reward|>``) the head is read at those
  tokens, ``[B, 3, N]``, and for ``N == 3`` the diagonal gives (VQ, MQ, TA); with ``reward_token="last"``
  at the last non-pad token;
- ``use_norm``: ``(r - mean) / std`` per dimension from ``inference_config`` in ``model_config.json``;
  ``Overall = VQ + MQ + TA``.

Checkpoint folder layout (``KwaiVGI/VideoReward``): ``model_config.json`` + ``checkpoint-<step>/`` with
``model.pth`` or ``adapter_model.safetensors`` + ``non_lora_state_dict.pth``; the base model is
``model_config.model_name_or_path`` (Qwen2-VL-2B-Instruct).
"""

from __future__ import annotations

import ast
import glob
import json
import os
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from vipo.rewards.base import Reward
from vipo.rewards.loading import load_torch_checkpoint, resolve
from vipo.rewards.videoalign_processing import (build_query, frame_indices, num_sampled_frames, qwen2_vl_chat,
                                                resolve_template, smart_resize, video_to_patches)

VIDEOREWARD_ID = "KwaiVGI/VideoReward"
REWARD_TOKENS = ("<|VQ_reward|>", "<|MQ_reward|>", "<|TA_reward|>")
DIMENSIONS = ("VQ", "MQ", "TA")


class VideoRewardModel(nn.Module):
    """Qwen2-VL vision tower (``visual``) + text decoder (``model``) + ``rm_head``: the reference's module
    names, so its (peft) checkpoints load without renaming."""

    def __init__(self, visual: nn.Module, text_model: nn.Module, hidden_size: int, video_token_id: int,
                 output_dim: int = 3, special_token_ids: Optional[Sequence[int]] = None,
                 pad_token_id: Optional[int] = None):
        super().__init__()
        self.visual, self.model = visual, text_model
        self.rm_head = nn.Linear(hidden_size, output_dim, bias=False)
        self.video_token_id = video_token_id
        self.special_token_ids = list(special_token_ids) if special_token_ids else None
        self.pad_token_id = pad_token_id

    @classmethod
    def from_config(cls, config, **kw) -> "VideoRewardModel":
        """Random weights from a ``Qwen2VLConfig`` (tests)."""
        from transformers.models.qwen2_vl.modeling_qwen2_vl import (Qwen2VisionTransformerPretrainedModel,
                                                                    Qwen2VLTextModel)

        return cls(Qwen2VisionTransformerPretrainedModel._from_config(config.vision_config),
                   Qwen2VLTextModel._from_config(config.text_config), config.text_config.hidden_size,
                   config.video_token_id, **kw)

    def resize_token_embeddings(self, n: int) -> None:
        """Keep the first ``n`` rows (the reference resizes to ``len(tokenizer)``); new rows get the mean."""
        old = self.model.embed_tokens
        new = nn.Embedding(n, old.embedding_dim, padding_idx=old.padding_idx, dtype=old.weight.dtype,
                           device=old.weight.device)
        with torch.no_grad():
            k = min(n, old.num_embeddings)
            new.weight[:k] = old.weight[:k]
            new.weight[k:] = old.weight.mean(0)
        self.model.embed_tokens = new

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values_videos: torch.Tensor,
                video_grid_thw: torch.Tensor) -> torch.Tensor:
        """Head outputs per video: [B, 3] (special tokens, output_dim 3) or [B, 3 * N] / [B, N]."""
        embeds = self.model.embed_tokens(input_ids)  # [B, L, D]
        vis = self.visual(pixel_values_videos.to(self.rm_head.weight.dtype), grid_thw=video_grid_thw)
        vis = getattr(vis, "pooler_output", vis)  # merged tokens [sum(t*h*w/4), D]
        mask = (input_ids == self.video_token_id).unsqueeze(-1).expand_as(embeds)  # [B, L, D]
        if int(mask[..., 0].sum()) != vis.shape[0]:
            raise ValueError(f"{int(mask[..., 0].sum())} video tokens in the text but {vis.shape[0]} video features")
        embeds = embeds.masked_scatter(mask, vis.to(embeds.dtype))
        B, L = input_ids.shape
        positions = torch.arange(L, device=input_ids.device).view(1, 1, L).expand(3, B, L)  # sequential, [3, B, L]
        hidden = self.model(inputs_embeds=embeds, attention_mask=attention_mask,
                            position_ids=positions).last_hidden_state  # [B, L, D]
        logits = self.rm_head(hidden)  # [B, L, N]
        if self.special_token_ids is None:  # "last": the token before the first pad
            last = (torch.eq(input_ids, self.pad_token_id).int().argmax(-1) - 1) % L  # [B]
            return logits[torch.arange(B, device=logits.device), last]  # [B, N]
        special = torch.zeros_like(input_ids, dtype=torch.bool)
        for tid in self.special_token_ids:
            special |= input_ids == tid
        if int(special.sum()) != 3 * B:
            raise ValueError(f"expected 3 reward tokens per sample, found {int(special.sum())} for {B} samples "
                             "(is the prompt template the one with <|VQ_reward|> ... <|TA_reward|>?)")
        pooled = logits[special].view(B, 3, -1)  # [B, 3, N]
        if pooled.shape[-1] == 3:
            pooled = pooled.diagonal(dim1=1, dim2=2)  # [B, 3]: head k read at reward token k
        return pooled.reshape(B, -1)


# ------------------------------------------------------------------------------------ checkpoints
def _insert_adapter_name(key: str, adapter: str = "default") -> str:
    """peft's saved names drop the adapter: ``q_proj.lora_A.weight`` -> ``q_proj.lora_A.default.weight``,
    ``embed_tokens.lora_embedding_A`` -> ``embed_tokens.lora_embedding_A.default``."""
    head, sep, tail = key.partition(".lora_")
    if not sep:
        return key
    name, dot, rest = tail.partition(".")
    return f"{head}.lora_{name}.{adapter}" + (f".{rest}" if dot else "")


def load_reward_state(model: VideoRewardModel, state: Dict[str, torch.Tensor], lora_r: int = 16,
                      lora_alpha: int = 32, use_rslora: bool = False) -> VideoRewardModel:
    """Load a reference state dict (peft prefixes allowed) into ``model``, adding LoRA adapters (via peft)
    on exactly the modules that have LoRA weights. ``lm_head`` entries are ignored (no LM head here)."""
    state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("lm_head")}
    targets = sorted({k.split(".lora_")[0] for k in state if ".lora_" in k})
    if targets:
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=lora_r, lora_alpha=lora_alpha, use_rslora=use_rslora,
                                           target_modules=targets, lora_dropout=0.0, bias="none"), model)
        state = {_insert_adapter_name(k): v for k, v in state.items()}
    own = model.state_dict()
    unexpected = [k for k in state if k not in own]
    if unexpected:
        raise KeyError(f"VideoAlign checkpoint has weights the model lacks: {unexpected[:8]} ...")
    bad = [k for k in state if own[k].shape != state[k].shape]
    if bad:
        shapes = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in bad[:4]]
        raise ValueError(f"VideoAlign checkpoint shape mismatch (name, checkpoint, model): {shapes}")
    model.load_state_dict(state, strict=False)
    return model


def latest_checkpoint(folder: str, step: Optional[int] = None) -> str:
    found = sorted(glob.glob(os.path.join(folder, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[-1]))
    if not found:
        raise FileNotFoundError(f"no checkpoint-<step> folder in {folder!r}")
    wanted = os.path.join(folder, f"checkpoint-{step}")
    return wanted if step is not None and wanted in found else found[-1]


def read_checkpoint_state(ckpt_dir: str) -> Dict[str, torch.Tensor]:
    full = os.path.join(ckpt_dir, "model.pth")
    if os.path.exists(full):
        return load_torch_checkpoint(full)
    from safetensors.torch import load_file

    state = load_file(resolve(ckpt_dir, "adapter_model.safetensors", what="VideoAlign LoRA weights"))
    state.update(load_torch_checkpoint(resolve(ckpt_dir, "non_lora_state_dict.pth", what="VideoAlign weights")))
    return state


def _as_list(dims) -> list:
    """``"VQ"``, ``"['VQ', 'MQ']"`` or a list -> a list of dimension names."""
    if isinstance(dims, str):
        return list(ast.literal_eval(dims)) if dims.strip().startswith("[") else [dims]
    return list(dims)


# ---------------------------------------------------------------------------------------- scorer
class VideoAlign(Reward):
    """VideoAlign reward on videos [B, 3, F, H, W] in [0, 1]: float32 [B].

    output: ``"overall"`` (VQ + MQ + TA), one of ``"VQ" | "MQ" | "TA"``, or a dict of weights.
    video_fps: frame rate of the given frames (frames are resampled to ``fps`` as the reference does).
    prompt_template: the template text, or the path of VideoAlign's ``prompt_template.py``.
    """

    def __init__(self, path_or_id: str = VIDEOREWARD_ID, base_path_or_id: Optional[str] = None,
                 prompt_template: Optional[str] = None, output: str | Dict[str, float] = "overall",
                 video_fps: float = 16.0, use_norm: bool = True, checkpoint_step: Optional[int] = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration

        folder = resolve(path_or_id, what="VideoAlign checkpoint folder")
        with open(resolve(folder, "model_config.json", what="VideoAlign config")) as f:
            cfg = json.load(f)
        mcfg, lcfg = cfg["model_config"], cfg.get("peft_lora_config", {})
        if mcfg.get("reward_token", "special") not in ("special", "last"):
            raise NotImplementedError(f"VideoAlign reward_token {mcfg['reward_token']!r} (only 'special' / 'last')")
        base = resolve(base_path_or_id or mcfg["model_name_or_path"], what="Qwen2-VL base model (base_path_or_id=)")
        tokenizer = AutoTokenizer.from_pretrained(base, padding_side="right")
        special = None
        if mcfg.get("use_special_tokens"):
            tokenizer.add_special_tokens({"additional_special_tokens": list(REWARD_TOKENS)})
            special = tokenizer.convert_tokens_to_ids(list(REWARD_TOKENS))
        hf = Qwen2VLForConditionalGeneration.from_pretrained(base)
        # transformers >= 4.52 nests both towers under .model; older versions keep .visual and .model (text)
        nested = hasattr(hf.model, "language_model")
        visual, text = (hf.model.visual, hf.model.language_model) if nested else (hf.visual, hf.model)
        hidden = getattr(hf.config, "text_config", hf.config).hidden_size
        model = VideoRewardModel(visual, text, hidden, hf.config.video_token_id, mcfg.get("output_dim", 3), special,
                                 tokenizer.pad_token_id)
        model.resize_token_embeddings(len(tokenizer))
        load_reward_state(model, read_checkpoint_state(latest_checkpoint(folder, checkpoint_step)),
                          lcfg.get("lora_r", 16), lcfg.get("lora_alpha", 32), lcfg.get("use_rslora", False))
        chat = None
        for name in ("chat_template.jinja", "chat_template.json"):
            if os.path.exists(os.path.join(base, name)) and not getattr(tokenizer, "chat_template", None):
                with open(os.path.join(base, name)) as f:
                    chat = f.read() if name.endswith("jinja") else json.load(f)["chat_template"]
        self._attach(model, tokenizer, cfg.get("data_config", {}), cfg.get("inference_config"), prompt_template,
                     output, video_fps, use_norm, device, dtype, chat)

    @classmethod
    def from_model(cls, model: VideoRewardModel, tokenizer, data_config: Optional[dict] = None,
                   inference_config: Optional[dict] = None, prompt_template: Optional[str] = None,
                   output: str | Dict[str, float] = "overall", video_fps: float = 16.0, use_norm: bool = True,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> "VideoAlign":
        obj = cls.__new__(cls)
        Reward.__init__(obj)
        obj._attach(model, tokenizer, data_config or {}, inference_config, prompt_template, output, video_fps,
                    use_norm, device, dtype, None)
        return obj

    def _attach(self, model, tokenizer, data_config, inference_config, prompt_template, output, video_fps,
                use_norm, device, dtype, chat_template) -> None:
        if isinstance(output, str) and output not in ("overall", *DIMENSIONS):
            raise ValueError(f"VideoAlign output must be 'overall', 'VQ', 'MQ', 'TA' or a dict, got {output!r}")
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.tokenizer, self.chat_template = tokenizer, chat_template
        self.data_config, self.inference_config = dict(data_config), inference_config
        self.output, self.video_fps, self.use_norm = output, video_fps, use_norm
        if isinstance(output, dict) and set(output) - {*DIMENSIONS, "Overall"}:
            raise ValueError(f"VideoAlign output weights must use keys VQ, MQ, TA, Overall; got {sorted(output)}")
        self.eval_dims = _as_list(self.data_config.get("eval_dim", "VQ"))
        self.template, consts = resolve_template(prompt_template, self.data_config.get("prompt_template_type", "none"))
        self.descriptions = consts.get("DIMENSION_DESCRIPTIONS")
        self.last_components: Dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------ inputs
    def prepare(self, videos: torch.Tensor, prompts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Model inputs for videos [B, 3, F, H, W] in [0, 1] (padded to the longest text, right)."""
        B, _, total, H, W = videos.shape
        fps = self.data_config.get("fps", 2.0)
        n = num_sampled_frames(total, self.video_fps, None if self.data_config.get("num_frames") else fps,
                               self.data_config.get("num_frames"))
        vcfg = getattr(self.model.visual, "config", None)
        p, tp, m = (getattr(vcfg, "patch_size", 14), getattr(vcfg, "temporal_patch_size", 2),
                    getattr(vcfg, "spatial_merge_size", 2))
        size = smart_resize(H, W, factor=p * m, max_pixels=self.data_config.get("max_frame_pixels", 240 * 320))
        idx = frame_indices(total, n).to(videos.device)
        patches, grids, texts = [], [], []
        for b in range(B):
            clip = videos[b].index_select(1, idx).transpose(0, 1)  # [n, 3, H, W]
            flat, grid = video_to_patches(clip, size, patch_size=p, temporal_patch_size=tp, merge_size=m)
            patches.append(flat)  # [t*h*w, 3*tp*p*p]
            grids.append(grid)
            chat = qwen2_vl_chat(build_query(prompts[b], self.template, self.eval_dims, self.descriptions),
                                 self.tokenizer, self.chat_template)
            n_tokens = grid[0] * grid[1] * grid[2] // (m * m)  # one token per merged m x m window
            texts.append(chat.replace("<|video_pad|>", "<|video_pad|>" * n_tokens, 1))
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.tensor(grids)}

    def rewards(self, videos: torch.Tensor, prompts: Sequence[str]) -> Dict[str, torch.Tensor]:
        """``{"VQ", "MQ", "TA", "Overall"}`` each [B] (normalised when ``use_norm`` and constants exist)."""
        dev = self.model.rm_head.weight.device
        batch = {k: v.to(dev) for k, v in self.prepare(videos, prompts).items()}
        heads = self.model(**batch).float()  # [B, 3]
        if heads.shape[-1] != 3:
            raise ValueError(f"VideoAlign expects 3 reward heads, the model gives {heads.shape[-1]}")
        out = {d: heads[:, i] for i, d in enumerate(DIMENSIONS)}
        if self.use_norm and self.inference_config:
            c = self.inference_config
            out = {d: (out[d] - c[f"{d}_mean"]) / c[f"{d}_std"] for d in DIMENSIONS}
        out["Overall"] = out["VQ"] + out["MQ"] + out["TA"]
        return out

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if images.dim() != 5:
            raise ValueError(f"VideoAlign scores videos [B, 3, F, H, W]; got shape {tuple(images.shape)}")
        r = self.rewards(images, prompts)
        self.last_components = {k: v.detach() for k, v in r.items()}
        if isinstance(self.output, dict):
            return sum(float(w) * r[k] for k, w in self.output.items())
        return r["Overall"] if self.output == "overall" else r[self.output]
