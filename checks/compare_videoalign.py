"""VideoAlign: run the published reward-model code (KwaiVGI/VideoAlign) beside our port, on a tiny Qwen2-VL.

VideoAlign is a research repository, not a package, and pins transformers 4.45.2; our port runs on the
project's transformers. So the comparison runs in two processes:

    git clone https://github.com/KwaiVGI/VideoAlign /tmp/VideoAlign       # read, run, never copied here
    .venv-ref/bin/python -m pip install --no-deps --target .venv-ref/tf445 transformers==4.45.2 \
        "tokenizers>=0.20,<0.21" "huggingface_hub>=0.23.2,<1.0"
    PYTHONPATH=.venv-ref/tf445 .venv-ref/bin/python checks/compare_videoalign.py reference /tmp/VideoAlign out.pt
    .venv/bin/python checks/compare_videoalign.py ours out.pt

``reference`` executes the repository's own ``Qwen2VLRewardModelBT`` (taken from its trainer.py, whose other
imports -- trl, deepspeed -- are not needed) and its ``vision_process`` helpers with torchvision and the
transformers 4.45.2 Qwen2-VL image processor, and saves inputs, random weights and outputs. ``ours`` feeds the
same to ``vipo.rewards.videoalign`` and prints the largest differences.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import os
import sys
import tempfile
from typing import List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VOCAB, HIDDEN = 300, 32
IDS = dict(video_pad=290, image_pad=291, vision_start=292, vision_end=293, VQ=294, MQ=295, TA=296, pad=297)
TEXT = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=2048, rope_theta=10000.0)
VISION = dict(depth=1, embed_dim=16, hidden_size=HIDDEN, num_heads=2, patch_size=2, temporal_patch_size=2,
              spatial_merge_size=2, mlp_ratio=2, in_channels=3)
MROPE = [2, 3, 3]  # head_dim 16 -> 8 rotary pairs split over (t, h, w)
GRIDS = [(2, 4, 4), (1, 4, 6)]  # (t, h, w) patches per video -> t*h*w/4 merged video tokens
SIZES = [(240, 320), (480, 854), (100, 3000), (28, 28), (1080, 1920), (57, 91)]
TEMPLATE_TYPES = ["none", "simple", "video_score", "detailed_special", "detailed"]
FRAMES = [(17, 16.0, 2.0), (120, 30.0, 2.0), (8, 8.0, 1.0), (1000, 24.0, 8.0), (5, 2.0, 2.0), (49, 16.0, 3.0)]


def _inputs():
    """Two right-padded prompts: text, vision_start, video pads, vision_end, text, the three reward tokens."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for (t, h, w), n_text in zip(GRIDS, (5, 9)):
        text = torch.randint(0, 256, (n_text,), generator=g).tolist()
        rows.append(text + [IDS["vision_start"]] + [IDS["video_pad"]] * (t * h * w // 4) + [IDS["vision_end"]]
                    + text[:3] + [IDS["VQ"], 7, IDS["MQ"], 8, 9, IDS["TA"]])
    L = max(map(len, rows))
    ids = torch.tensor([r + [IDS["pad"]] * (L - len(r)) for r in rows])  # [B, L]
    mask = torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in rows])  # [B, L]
    n = sum(t * h * w for t, h, w in GRIDS)
    pixels = torch.randn(n, 3 * 2 * 2 * 2, generator=g)  # [sum t*h*w, C*tp*p*p]
    return ids, mask, pixels, torch.tensor(GRIDS)


# ------------------------------------------------------------------------------------ reference
def _reward_class(repo: str):
    """The repository's Qwen2VLRewardModelBT, compiled from trainer.py alone (its module imports trl etc.)."""
    from transformers import Qwen2VLForConditionalGeneration

    path = os.path.join(repo, "trainer.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Qwen2VLRewardModelBT")
    ns = {"torch": torch, "nn": torch.nn, "Optional": Optional, "List": List,
          "Qwen2VLForConditionalGeneration": Qwen2VLForConditionalGeneration}
    exec(compile(ast.Module(body=[node], type_ignores=[]), path, "exec"), ns)
    return ns["Qwen2VLRewardModelBT"]


def reference(repo: str, out: str) -> None:
    import transformers
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF
    from transformers import Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    spec = importlib.util.spec_from_file_location("videoalign_vision_process", os.path.join(repo, "vision_process.py"))
    vp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vp)
    res = {"transformers": transformers.__version__}
    # prompt text: prompt_template.build_prompt for every template type and dimension choice
    pt_spec = importlib.util.spec_from_file_location("videoalign_prompt_template", os.path.join(repo, "prompt_template.py"))
    pt = importlib.util.module_from_spec(pt_spec)
    pt_spec.loader.exec_module(pt)
    with open(os.path.join(repo, "prompt_template.py"), encoding="utf-8") as f:
        res["prompt_template_py"] = f.read()
    res["prompts"] = [(kind, dims, pt.build_prompt("a cat {playing} piano", dims, kind)) for kind in TEMPLATE_TYPES
                      for dims in (["VQ"], ["MQ", "TA"], ["VQ", "MQ", "TA"])]
    # frame size and count rules
    res["smart_resize"] = [(h, w, mn, mx, *vp.smart_resize(h, w, 28, mn, mx)) for h, w in SIZES
                           for mn, mx in ((vp.VIDEO_MIN_PIXELS, 240 * 320), (4 * 28 * 28, vp.VIDEO_MAX_PIXELS))]
    res["smart_nframes"] = [(n, vfps, fps, vp.smart_nframes({"fps": fps}, n, vfps)) for n, vfps, fps in FRAMES]
    res["smart_nframes_fixed"] = [(n, k, vp.smart_nframes({"nframes": k}, n, 16.0)) for n, k in ((17, 8), (9, 5))]
    # fetch_video's resize of 8-bit frames, then the Qwen2-VL processor (as inference.py calls it)
    g = torch.Generator().manual_seed(1)
    video = torch.randint(0, 256, (4, 3, 61, 83), dtype=torch.uint8, generator=g)  # [T, C, H, W]
    h, w = vp.smart_resize(61, 83, 28, 4 * 28 * 28, 112 * 112)
    resized = TF.resize(video, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()
    proc = Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=112 * 112)
    px = proc(images=None, videos=[resized], return_tensors="pt")
    res.update(video=video, resized=resized, size=(h, w), pixel_values_videos=px["pixel_values_videos"],
               video_grid_thw=px["video_grid_thw"])
    # the reward model
    cfg = Qwen2VLConfig(**TEXT, rope_scaling={"type": "mrope", "mrope_section": MROPE}, vision_config=VISION,
                        video_token_id=IDS["video_pad"], image_token_id=IDS["image_pad"],
                        vision_start_token_id=IDS["vision_start"], pad_token_id=IDS["pad"])
    cls = _reward_class(repo)
    torch.manual_seed(0)
    special = cls(cfg, output_dim=3, special_token_ids=[IDS["VQ"], IDS["MQ"], IDS["TA"]]).eval()
    last = cls(cfg, output_dim=3, reward_token="last").eval()
    last.load_state_dict(special.state_dict())
    ids, mask, pixels, grid = _inputs()
    with torch.no_grad():
        kw = dict(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, video_grid_thw=grid)
        res.update(logits_special=special(**kw)["logits"], logits_last=last(**kw)["logits"])
    res.update(state=special.state_dict(), ids=ids, mask=mask, pixels=pixels, grid=grid)
    torch.save(res, out)
    print(f"reference (transformers {transformers.__version__}) written to {out}")


# ------------------------------------------------------------------------------------------ ours
def ours(path: str) -> int:
    import transformers
    from transformers import Qwen2VLConfig

    from vipo.rewards.videoalign import VideoRewardModel, load_reward_state
    from vipo.rewards.videoalign_processing import (build_query, num_sampled_frames, patchify, resize_frames_uint8,
                                                    resolve_template, smart_resize, video_to_patches)

    ref = torch.load(path, weights_only=False)
    print(f"VideoAlign: reference code on transformers {ref['transformers']}, ours on {transformers.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        template_py = os.path.join(tmp, "prompt_template.py")
        with open(template_py, "w", encoding="utf-8") as f:
            f.write(ref["prompt_template_py"])
        bad = []
        for kind, dims, text in ref["prompts"]:
            template, consts = resolve_template(template_py, kind)
            if build_query("a cat {playing} piano", template, dims, consts.get("DIMENSION_DESCRIPTIONS")) != text:
                bad.append((kind, dims))
    print(f"  prompt text       {len(ref['prompts'])} cases, {len(bad)} differ {bad}")
    bad = [r for r in ref["smart_resize"] if tuple(smart_resize(r[0], r[1], 28, r[2], r[3])) != tuple(r[4:])]
    print(f"  smart_resize      {len(ref['smart_resize'])} cases, {len(bad)} differ {bad}")
    bad = [r for r in ref["smart_nframes"] if num_sampled_frames(r[0], r[1], r[2]) != r[3]]
    bad += [r for r in ref["smart_nframes_fixed"] if num_sampled_frames(r[0], 16.0, nframes=r[1]) != r[2]]
    print(f"  smart_nframes     {len(ref['smart_nframes']) + 2} cases, {len(bad)} differ {bad}")
    video = ref["video"].float() / 255  # [T, 3, H, W] in [0, 1]
    mine = resize_frames_uint8(video, ref["size"])  # [T, 3, h, w] 0..255
    d = (mine - ref["resized"]).abs()
    print(f"  resize (8-bit)    max |diff| {float(d.max()):.0f} levels, {float((d > 0).float().mean()):.2%} of values")
    patches, grid = video_to_patches(video, ref["size"])
    print(f"  patches           grid {grid} vs {tuple(ref['video_grid_thw'][0].tolist())}, max |diff| "
          f"{float((patches - ref['pixel_values_videos']).abs().max()):.3e}")
    m = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    s = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    same_in, _ = patchify((ref["resized"] / 255 - m) / s)  # [N, 3*2*14*14]
    print(f"  patchify only     (reference-resized frames) max |diff| "
          f"{float((same_in - ref['pixel_values_videos']).abs().max()):.3e}")
    cfg = Qwen2VLConfig(text_config=dict(**TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                  "mrope_section": MROPE},
                                         bos_token_id=None, eos_token_id=None),
                        vision_config=VISION, video_token_id=IDS["video_pad"], image_token_id=IDS["image_pad"],
                        vision_start_token_id=IDS["vision_start"])
    worst = 0.0
    for mode, special in (("special", [IDS["VQ"], IDS["MQ"], IDS["TA"]]), ("last", None)):
        model = VideoRewardModel.from_config(cfg, output_dim=3, special_token_ids=special, pad_token_id=IDS["pad"])
        load_reward_state(model, ref["state"]).eval()
        with torch.no_grad():
            out = model(ref["ids"], ref["mask"], ref["pixels"], ref["grid"])  # [B, 3]
        diff = float((out - ref[f"logits_{mode}"]).abs().max())
        worst = max(worst, diff)
        print(f"  reward head ({mode:7s}) max |ours - reference| {diff:.3e}  (|reference| up to "
              f"{float(ref[f'logits_{mode}'].abs().max()):.3f})")
    return 0 if worst <= 1e-4 and math.isfinite(worst) else 1


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "reference" and len(sys.argv) == 4:
        reference(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "ours":
        sys.exit(ours(sys.argv[2]))
    else:
        sys.exit(__doc__)
