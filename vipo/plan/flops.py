"""FLOPs of real transformers on the meta device (``torch.utils.flop_counter``), and an analytic check.

``Shapes`` says what one forward sees (batch, latent grid, text tokens). ``INPUTS[family](model, shapes)``
builds the keyword arguments of that family's transformer on the meta device (a registry, one small
function per family, mirroring how ``vipo.generators.*`` call the model). ``count(model, inputs, train=...)``
runs it under ``FlopCounterMode``: forward only, or forward + backward with whatever the module is set up to
train (LoRA adapters, gradient checkpointing: its recomputation is counted because it really runs).

Attention. On the meta device ``scaled_dot_product_attention`` falls back to its math form, whose two
``bmm`` calls the counter sees; on a GPU the fused kernels are registered with the counter too. The test
``test_attention_is_counted`` checks ``4 * S^2 * d`` per attention layer against this count.

``analytic_flux(cfg, shapes)`` and ``analytic_wan(cfg, shapes)`` count the same FLOPs by hand (every linear
layer ``2 * rows * in * out``, attention ``4 * S_q * S_k * d`` per head group): an independent check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from vipo.registry import Registry


@dataclass(frozen=True)
class Shapes:
    batch: int  # samples in one forward
    frames: int  # latent frames (1 for images)
    height: int  # latent rows  (pixels / VAE factor)
    width: int  # latent columns
    text: int  # text tokens
    channels: int = 16  # latent channels

    @property
    def image_tokens(self) -> int:  # 2x2 patches
        return self.frames * (self.height // 2) * (self.width // 2)


INPUTS: Registry = Registry("planner input builder")


def _t(*shape, dtype=torch.bfloat16):
    return torch.zeros(*shape, dtype=dtype, device="meta")


@INPUTS.register("flux")
def _flux(model: nn.Module, s: Shapes, dtype=torch.bfloat16) -> dict:
    c = model.config
    n = s.image_tokens
    return dict(hidden_states=_t(s.batch, n, c.in_channels, dtype=dtype),  # [B, N, 64]
                encoder_hidden_states=_t(s.batch, s.text, c.joint_attention_dim, dtype=dtype),  # [B, L, 4096]
                pooled_projections=_t(s.batch, c.pooled_projection_dim, dtype=dtype),  # [B, 768]
                timestep=_t(s.batch, dtype=dtype), guidance=_t(s.batch, dtype=dtype),
                img_ids=_t(n, 3, dtype=torch.float32), txt_ids=_t(s.text, 3, dtype=torch.float32))


@INPUTS.register("flux2")
def _flux2(model: nn.Module, s: Shapes, dtype=torch.bfloat16) -> dict:
    c = model.config
    n = s.image_tokens
    return dict(hidden_states=_t(s.batch, n, c.in_channels, dtype=dtype),  # [B, N, 128]
                encoder_hidden_states=_t(s.batch, s.text, c.joint_attention_dim, dtype=dtype),  # [B, L, 15360]
                timestep=_t(s.batch, dtype=dtype), guidance=_t(s.batch, dtype=dtype),
                img_ids=_t(s.batch, n, 4, dtype=torch.float32), txt_ids=_t(s.batch, s.text, 4, dtype=torch.float32))


@INPUTS.register("sd3")
def _sd3(model: nn.Module, s: Shapes, dtype=torch.bfloat16) -> dict:
    c = model.config
    return dict(hidden_states=_t(s.batch, c.in_channels, s.height, s.width, dtype=dtype),  # [B, 16, h, w]
                encoder_hidden_states=_t(s.batch, s.text, c.joint_attention_dim, dtype=dtype),  # [B, 77+L, 4096]
                pooled_projections=_t(s.batch, c.pooled_projection_dim, dtype=dtype),  # [B, 2048]
                timestep=_t(s.batch, dtype=dtype))


@INPUTS.register("qwen_image")
def _qwen(model: nn.Module, s: Shapes, dtype=torch.bfloat16) -> dict:
    c = model.config
    n = s.image_tokens
    return dict(hidden_states=_t(s.batch, n, c.in_channels, dtype=dtype),  # [B, N, 64]
                encoder_hidden_states=_t(s.batch, s.text, c.joint_attention_dim, dtype=dtype),  # [B, L, 3584]
                timestep=_t(s.batch, dtype=dtype),
                img_shapes=[(1, s.height // 2, s.width // 2)] * s.batch)


@INPUTS.register("z_image")
def _z_image(model: nn.Module, s: Shapes, dtype=torch.bfloat16) -> dict:
    c = model.config
    return dict(x=[_t(c.in_channels, s.frames, s.height, s.width, dtype=dtype) for _ in range(s.batch)],
                t=_t(s.batch, dtype=dtype),  # x: B x [16, 1, h, w]; cap_feats: B x [L, 2560]
                cap_feats=[_t(s.text, c.cap_feat_dim, dtype=dtype) for _ in range(s.batch)])


@INPUTS.register("wan")
def _wan(model: nn.Module, s: Shapes, dtype=torch.bfloat16) -> dict:
    c = model.config
    return dict(hidden_states=_t(s.batch, c.in_channels, s.frames, s.height, s.width, dtype=dtype),  # [B, C, F, h, w]
                timestep=_t(s.batch, dtype=dtype),
                encoder_hidden_states=_t(s.batch, s.text, c.text_dim, dtype=dtype))  # [B, 512, 4096]


def _output(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "sample"):
        out = out.sample
    if isinstance(out, (tuple, list)):  # Z-Image returns a list of per-sample tensors
        return torch.stack([o.float() for o in out])
    return out


def count(model: nn.Module, inputs: dict, train: bool = False) -> int:
    """FLOPs of one forward (``train=False``, under no_grad) or forward + backward (``train=True``)."""
    with FlopCounterMode(display=False) as fc:
        if train:
            model.train()
            _output(model(**inputs)).float().sum().backward()
        else:
            with torch.no_grad():
                model(**inputs)
    return int(fc.get_total_flops())


def forward_flops(model: nn.Module, family: str, shapes: Shapes, dtype=torch.bfloat16) -> int:
    return count(model, INPUTS.get(family)(model, shapes, dtype))


# --------------------------------------------------------------------------------- analytic counts
def _lin(rows: int, d_in: int, d_out: int) -> int:
    return 2 * rows * d_in * d_out


def _time_embed(d: int, freq: int = 256) -> int:
    return _lin(1, freq, d) + _lin(1, d, d)


def analytic_flux(cfg: dict, s: Shapes) -> int:
    """FLUX.1 forward FLOPs: embedders, 2-stream blocks, 1-stream blocks, output; batch ``s.batch``."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n, L = s.image_tokens, s.text
    S = n + L
    f = _lin(n, cfg["in_channels"], d) + _lin(L, cfg["joint_attention_dim"], d)  # x_embedder, context_embedder
    f += _time_embed(d) * (2 if cfg.get("guidance_embeds") else 1) + _lin(1, cfg["pooled_projection_dim"], d) + _lin(1, d, d)
    double = (2 * _lin(1, d, 6 * d)  # adaLN of both streams
              + _lin(S, d, 3 * d) + _lin(n, d, d) + _lin(L, d, d)  # qkv of both streams, both out projections
              + _lin(S, d, 4 * d) + _lin(S, 4 * d, d)  # both MLPs
              + 4 * S * S * d)  # QK^T and AV
    single = _lin(1, d, 3 * d) + _lin(S, d, 3 * d) + _lin(S, d, 4 * d) + _lin(S, 5 * d, d) + 4 * S * S * d
    f += cfg["num_layers"] * double + cfg["num_single_layers"] * single
    f += _lin(1, d, 2 * d) + _lin(n, d, cfg["in_channels"])  # norm_out, proj_out (patch_size 1)
    return s.batch * f


def analytic_wan(cfg: dict, s: Shapes) -> int:
    """Wan2.1 forward FLOPs: patch embedding, condition embedder, blocks (self-, cross-attention, FFN), head."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    pt, ph, pw = cfg["patch_size"]
    n = (s.frames // pt) * (s.height // ph) * (s.width // pw)
    L = s.text
    c_in, c_out = cfg["in_channels"], cfg["out_channels"]
    f = _lin(n, c_in * pt * ph * pw, d)  # the Conv3d patch embedding as a linear map
    f += _time_embed(d, cfg["freq_dim"]) + _lin(1, d, 6 * d)  # time embedding, time projection
    f += _lin(L, cfg["text_dim"], d) + _lin(L, d, d)  # text embedder (2 layers)
    block = (_lin(n, d, 3 * d) + _lin(n, d, d) + 4 * n * n * d  # self-attention
             + _lin(n, d, d) + _lin(L, d, 2 * d) + _lin(n, d, d) + 4 * n * L * d  # cross-attention
             + _lin(n, d, cfg["ffn_dim"]) + _lin(n, cfg["ffn_dim"], d))  # FFN
    f += cfg["num_layers"] * block
    f += _lin(n, d, c_out * pt * ph * pw)  # head
    return s.batch * f


ANALYTIC: Dict[str, Callable[[dict, Shapes], int]] = {"flux": analytic_flux, "wan": analytic_wan}
