"""FLOPs of one reward evaluation and one map-backbone pass per generated sample, at the resolution each sees.

CLIP (HPSv2.1, PickScore) and ImageReward (BLIP) and the map backbones (DINOv2, SAM) are counted by
``torch.utils.flop_counter`` on the meta device, one image (one frame) at a time; a video's map runs every
frame. VideoAlign (Qwen2-VL) is counted analytically from its config, because its vision tower's rotary
positions are computed from the frame grid's values, which the meta device does not hold: the sampled frames
(2 fps of the 16 fps video), resized to at most ``max_frame_pixels`` in 28-pixel multiples, give
``frames/2 x (h/14)(w/14)`` patches (temporal patch 2); the vision tower attends within each temporal patch
group; the merger turns 4 patches into one language token; the language model then reads those tokens and the
prompt (``text_tokens``).
"""

from __future__ import annotations

import torch

from vipo.plan import arch as A
from vipo.plan.flops import count


def _image(h: int, w: int):
    return torch.zeros(1, 3, h, w, device="meta")  # [1, 3, h, w]


def _lin(rows: int, d_in: int, d_out: int) -> int:
    return 2 * rows * d_in * d_out


def qwen2vl_video_flops(config: dict, inp: dict, frames: int, height: int, width: int) -> int:
    """Analytic forward FLOPs of Qwen2-VL on a video of ``frames`` frames of ``height x width`` pixels."""
    from vipo.rewards.videoalign_processing import num_sampled_frames, smart_resize

    v = config["vision_config"]
    nf = num_sampled_frames(frames, inp["video_fps"], inp["fps"]) if frames > 1 else 2
    h, w = smart_resize(height, width, factor=v["patch_size"] * v["spatial_merge_size"],
                        max_pixels=inp["max_frame_pixels"])
    groups, grid = nf // v["temporal_patch_size"], (h // v["patch_size"]) * (w // v["patch_size"])
    P = groups * grid  # vision patches
    e, mlp = v["embed_dim"], int(v["embed_dim"] * v["mlp_ratio"])
    f = _lin(P, 3 * v["temporal_patch_size"] * v["patch_size"] ** 2, e)  # patch embedding
    f += v["depth"] * (_lin(P, e, 3 * e) + _lin(P, e, e) + 4 * groups * grid * grid * e + _lin(P, e, mlp) + _lin(P, mlp, e))
    m = v["spatial_merge_size"] ** 2
    f += _lin(P // m, e * m, e * m) + _lin(P // m, e * m, v["hidden_size"])  # merger
    d, L = config["hidden_size"], config["num_hidden_layers"]
    hd = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * hd
    S = P // m + inp["text_tokens"]
    f += L * (_lin(S, d, d) + 2 * _lin(S, d, kv) + _lin(S, d, d) + 4 * S * S * d
              + 3 * _lin(S, d, config["intermediate_size"]))
    return f


def reward_flops(name: str, geo) -> int:
    """Forward FLOPs of reward ``name`` on one generated sample (0 for rule-based and toy rewards)."""
    entry = A.reward_arch(name)
    if entry is None:
        return 0
    inp = entry["input"]
    if inp["kind"] == "qwen2vl_video":
        return qwen2vl_video_flops(entry["config"], inp, geo.frames, geo.height, geo.width)
    model = A.build(entry)
    ids = torch.zeros(1, inp["text_tokens"], dtype=torch.long, device="meta")  # [1, L]
    if inp["kind"] == "clip":
        per = count(model, dict(input_ids=ids, pixel_values=_image(inp["image"], inp["image"])))
    elif inp["kind"] == "blip":
        def run(**kw):
            img = model.vision(pixel_values=kw["pixel_values"]).last_hidden_state  # [1, 197, 1024]
            txt = model.text(input_ids=kw["input_ids"], encoder_hidden_states=img).last_hidden_state  # [1, L, 768]
            return model.head(txt[:, 0])  # [1, 1]
        per = count(_Call(model, run), dict(input_ids=ids, pixel_values=_image(inp["image"], inp["image"])))
    else:
        raise A.PlanError(f"plan error: reward {name!r} has an unknown input kind {inp['kind']!r}")
    return per * geo.frames


def backbone_flops(path_or_id, geo, resolution=None) -> int:
    """Forward FLOPs of the map backbone on every frame of one sample (0 for the toy and unmodelled backbones)."""
    entry = A.backbone_arch(path_or_id)
    if entry is None:
        return 0
    model = A.build(entry)
    inp = entry["input"]
    if inp["kind"] == "vit":
        from vipo.backbones._common import short_side_size

        h, w = short_side_size(geo.height, geo.width, resolution or entry["config"]["image_size"], inp["patch"])
        per = count(model, dict(pixel_values=_image(h, w)))
    elif inp["kind"] == "sam":
        per = count(model, dict(pixel_values=_image(inp["image"], inp["image"])))
    else:
        raise A.PlanError(f"plan error: backbone {path_or_id!r} has an unknown input kind {inp['kind']!r}")
    return per * geo.frames


class _Call(torch.nn.Module):
    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, **kw):
        return self.fn(**kw)
