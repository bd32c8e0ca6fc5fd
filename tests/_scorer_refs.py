"""Plain-torch reference forwards and random checkpoints in the *reference* layouts (open_clip, BLIP).

Written independently of the converters in ``vipo.rewards``: the reference models are re-implemented
from their published architecture (fused ``in_proj`` attention, ``x @ proj`` projections, pre-norm
residual blocks), so a key-mapping or transpose mistake in a converter shows up as a numeric mismatch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _ln(x, sd, p, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps)


def _mha(q_in, kv_in, wq, bq, wk, bk, wv, bv, wo, bo, heads, mask=None):
    """Multi-head attention on [B, L, W] inputs with explicit weights; mask is additive [Lq, Lk]."""
    b, lq, w = q_in.shape
    lk = kv_in.shape[1]
    d = wq.shape[0] // heads
    q = (q_in @ wq.T + bq).view(b, lq, heads, d).transpose(1, 2)  # [B, h, Lq, d]
    k = (kv_in @ wk.T + bk).view(b, lk, heads, d).transpose(1, 2)  # [B, h, Lk, d]
    v = (kv_in @ wv.T + bv).view(b, lk, heads, d).transpose(1, 2)
    att = q @ k.transpose(-1, -2) / math.sqrt(d)  # [B, h, Lq, Lk]
    if mask is not None:
        att = att + mask
    out = att.softmax(-1) @ v  # [B, h, Lq, d]
    return out.transpose(1, 2).reshape(b, lq, heads * d) @ wo.T + bo


# ------------------------------------------------------------------------------------- open_clip
def random_open_clip_state_dict(seed=0, v_width=32, v_layers=2, patch=4, image=16, t_width=32, t_layers=2,
                                vocab=522, ctx=16, embed=24):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    sd = {}

    def blocks(prefix, width, layers):
        for i in range(layers):
            p = f"{prefix}.{i}"
            sd[f"{p}.ln_1.weight"], sd[f"{p}.ln_1.bias"] = 1 + r(width, s=0.1), r(width, s=0.1)
            sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"] = r(3 * width, width), r(3 * width)
            sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"] = r(width, width), r(width)
            sd[f"{p}.ln_2.weight"], sd[f"{p}.ln_2.bias"] = 1 + r(width, s=0.1), r(width, s=0.1)
            sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"] = r(4 * width, width), r(4 * width)
            sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"] = r(width, 4 * width), r(width)

    grid = image // patch
    sd["visual.class_embedding"] = r(v_width)
    sd["visual.positional_embedding"] = r(grid * grid + 1, v_width)
    sd["visual.conv1.weight"] = r(v_width, 3, patch, patch)
    sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"] = 1 + r(v_width, s=0.1), r(v_width, s=0.1)
    blocks("visual.transformer.resblocks", v_width, v_layers)
    sd["visual.ln_post.weight"], sd["visual.ln_post.bias"] = 1 + r(v_width, s=0.1), r(v_width, s=0.1)
    sd["visual.proj"] = r(v_width, embed)
    sd["token_embedding.weight"] = r(vocab, t_width)
    sd["positional_embedding"] = r(ctx, t_width)
    blocks("transformer.resblocks", t_width, t_layers)
    sd["ln_final.weight"], sd["ln_final.bias"] = 1 + r(t_width, s=0.1), r(t_width, s=0.1)
    sd["text_projection"] = r(t_width, embed)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return sd


def _open_clip_block(x, sd, p, heads, mask=None):
    w = x.shape[-1]
    wq, wk, wv = sd[p + ".attn.in_proj_weight"].split(w)
    bq, bk, bv = sd[p + ".attn.in_proj_bias"].split(w)
    h = _ln(x, sd, p + ".ln_1", 1e-5)
    x = x + _mha(h, h, wq, bq, wk, bk, wv, bv, sd[p + ".attn.out_proj.weight"], sd[p + ".attn.out_proj.bias"],
                 heads, mask)
    h = _ln(x, sd, p + ".ln_2", 1e-5)
    h = F.gelu(h @ sd[p + ".mlp.c_fc.weight"].T + sd[p + ".mlp.c_fc.bias"])
    return x + h @ sd[p + ".mlp.c_proj.weight"].T + sd[p + ".mlp.c_proj.bias"]


def open_clip_encode_image(sd, pixels, heads):
    """open_clip VisionTransformer: conv patches, cls + pos, ln_pre, blocks, ln_post(cls) @ proj -> [B, E]."""
    patch = sd["visual.conv1.weight"].shape[-1]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)  # [B, N, W]
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre", 1e-5)
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    for i in range(layers):
        x = _open_clip_block(x, sd, f"visual.transformer.resblocks.{i}", heads)
    return _ln(x[:, 0], sd, "visual.ln_post", 1e-5) @ sd["visual.proj"]


def open_clip_encode_text(sd, ids, heads):
    """open_clip text tower: causal blocks, ln_final, feature at argmax(ids) (the eot) @ text_projection."""
    L = ids.shape[1]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:L]
    mask = torch.full((L, L), float("-inf")).triu(1)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        x = _open_clip_block(x, sd, f"transformer.resblocks.{i}", heads, mask)
    x = _ln(x, sd, "ln_final", 1e-5)
    return x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ sd["text_projection"]


# ------------------------------------------------------------------------------------- BLIP / ImageReward
def random_imagereward_state_dict(seed=0, v_width=32, v_layers=2, patch=4, image=16, t_width=32, t_layers=2,
                                  vocab=40, max_pos=40):
    """Keys exactly as in ImageReward.pt: blip.visual_encoder.* (timm ViT), blip.text_encoder.* (med BERT),
    blip.vision_proj / text_proj (unused by the score), mlp.layers.{0,2,4,6,7}."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.2):
        return torch.randn(*shape, generator=g) * s

    sd = {}
    ve, te = "blip.visual_encoder.", "blip.text_encoder."
    n = (image // patch) ** 2
    sd[ve + "cls_token"], sd[ve + "pos_embed"] = r(1, 1, v_width), r(1, n + 1, v_width)
    sd[ve + "patch_embed.proj.weight"], sd[ve + "patch_embed.proj.bias"] = r(v_width, 3, patch, patch), r(v_width)
    for i in range(v_layers):
        p = f"{ve}blocks.{i}."
        for ln in ("norm1", "norm2"):
            sd[p + ln + ".weight"], sd[p + ln + ".bias"] = 1 + r(v_width, s=0.1), r(v_width, s=0.1)
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * v_width, v_width), r(3 * v_width)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(v_width, v_width), r(v_width)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(4 * v_width, v_width), r(4 * v_width)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(v_width, 4 * v_width), r(v_width)
    sd[ve + "norm.weight"], sd[ve + "norm.bias"] = 1 + r(v_width, s=0.1), r(v_width, s=0.1)

    sd[te + "embeddings.word_embeddings.weight"] = r(vocab, t_width)
    sd[te + "embeddings.position_embeddings.weight"] = r(max_pos, t_width)
    sd[te + "embeddings.position_ids"] = torch.arange(max_pos)[None]
    sd[te + "embeddings.LayerNorm.weight"] = 1 + r(t_width, s=0.1)
    sd[te + "embeddings.LayerNorm.bias"] = r(t_width, s=0.1)
    for i in range(t_layers):
        p = f"{te}encoder.layer.{i}."
        for att, kv_width in (("attention.", t_width), ("crossattention.", v_width)):
            sd[p + att + "self.query.weight"], sd[p + att + "self.query.bias"] = r(t_width, t_width), r(t_width)
            sd[p + att + "self.key.weight"], sd[p + att + "self.key.bias"] = r(t_width, kv_width), r(t_width)
            sd[p + att + "self.value.weight"], sd[p + att + "self.value.bias"] = r(t_width, kv_width), r(t_width)
            sd[p + att + "output.dense.weight"], sd[p + att + "output.dense.bias"] = r(t_width, t_width), r(t_width)
            sd[p + att + "output.LayerNorm.weight"] = 1 + r(t_width, s=0.1)
            sd[p + att + "output.LayerNorm.bias"] = r(t_width, s=0.1)
        sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"] = r(4 * t_width, t_width), r(4 * t_width)
        sd[p + "output.dense.weight"], sd[p + "output.dense.bias"] = r(t_width, 4 * t_width), r(t_width)
        sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"] = 1 + r(t_width, s=.1), r(t_width, s=.1)
    sd["blip.vision_proj.weight"], sd["blip.vision_proj.bias"] = r(8, v_width), r(8)
    sd["blip.text_proj.weight"], sd["blip.text_proj.bias"] = r(8, t_width), r(8)
    for idx, (i, o) in zip((0, 2, 4, 6, 7), ((t_width, 1024), (1024, 128), (128, 64), (64, 16), (16, 1))):
        sd[f"mlp.layers.{idx}.weight"], sd[f"mlp.layers.{idx}.bias"] = r(o, i, s=1 / (i + 1) ** 0.5), r(o, s=0.1)
    return sd


def blip_vit_forward(sd, pixels, heads):
    """BLIP's VisionTransformer: patches + cls + pos, pre-norm blocks (eps 1e-6), final norm -> [B, N+1, W]."""
    ve = "blip.visual_encoder."
    patch = sd[ve + "patch_embed.proj.weight"].shape[-1]
    x = F.conv2d(pixels, sd[ve + "patch_embed.proj.weight"], sd[ve + "patch_embed.proj.bias"], stride=patch)
    x = x.flatten(2).transpose(1, 2)  # [B, N, W]
    x = torch.cat([sd[ve + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[ve + "pos_embed"]
    w = x.shape[-1]
    layers = len({k.split(".")[3] for k in sd if k.startswith(ve + "blocks.")})
    for i in range(layers):
        p = f"{ve}blocks.{i}."
        wq, wk, wv = sd[p + "attn.qkv.weight"].split(w)
        bq, bk, bv = sd[p + "attn.qkv.bias"].split(w)
        h = _ln(x, sd, p + "norm1", 1e-6)
        x = x + _mha(h, h, wq, bq, wk, bk, wv, bv, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"], heads)
        h = _ln(x, sd, p + "norm2", 1e-6)
        x = x + F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T \
            + sd[p + "mlp.fc2.bias"]
    return _ln(x, sd, ve + "norm", 1e-6)


def med_bert_forward(sd, ids, mask, image_embeds, heads):
    """BLIP's med BertModel, multimodal mode: post-norm layers of self-attention (padding mask -10000),
    cross-attention to all image tokens, GELU feed-forward; returns last hidden states [B, L, D]."""
    te = "blip.text_encoder."
    x = sd[te + "embeddings.word_embeddings.weight"][ids]  # [B, L, D]
    x = x + sd[te + "embeddings.position_embeddings.weight"][:ids.shape[1]]
    x = _ln(x, sd, te + "embeddings.LayerNorm", 1e-12)
    pad = ((1.0 - mask[:, None, None, :].float()) * -10000.0)  # [B, 1, 1, L]
    layers = len({k.split(".")[4] for k in sd if k.startswith(te + "encoder.layer.")})

    def attend(x, kv, p, m):
        a = _mha(x, kv, sd[p + "self.query.weight"], sd[p + "self.query.bias"], sd[p + "self.key.weight"],
                 sd[p + "self.key.bias"], sd[p + "self.value.weight"], sd[p + "self.value.bias"],
                 sd[p + "output.dense.weight"], sd[p + "output.dense.bias"], heads, m)
        return _ln(a + x, sd, p + "output.LayerNorm", 1e-12)

    for i in range(layers):
        p = f"{te}encoder.layer.{i}."
        x = attend(x, x, p + "attention.", pad)
        x = attend(x, image_embeds, p + "crossattention.", None)
        h = F.gelu(x @ sd[p + "intermediate.dense.weight"].T + sd[p + "intermediate.dense.bias"])
        h = h @ sd[p + "output.dense.weight"].T + sd[p + "output.dense.bias"]
        x = _ln(h + x, sd, p + "output.LayerNorm", 1e-12)
    return x


def imagereward_forward(sd, pixels, ids, mask, v_heads, t_heads):
    """Raw MLP output and the standardised reward, each [B]."""
    feats = med_bert_forward(sd, ids, mask, blip_vit_forward(sd, pixels, v_heads), t_heads)[:, 0]
    for idx in (0, 2, 4, 6, 7):
        feats = feats @ sd[f"mlp.layers.{idx}.weight"].T + sd[f"mlp.layers.{idx}.bias"]
    raw = feats[:, 0]
    return raw, (raw - 0.16717362830052426) / 1.0333394966054072
