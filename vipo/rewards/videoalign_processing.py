"""VideoAlign (VideoReward) inputs in plain torch: frame sampling, resizing, Qwen2-VL patches, prompt text.

Reference: KwaiVGI/VideoAlign ``inference.py`` -> ``vision_process.fetch_video`` (uniform frame indices,
``smart_resize`` to a multiple of 28 under ``max_frame_pixels``, bicubic antialiased resize of the 8-bit
frames) and the Qwen2-VL processor (``/255``, OpenAI mean/std, 14 x 14 x 2 patches in 2 x 2 merge order).

The evaluation prompt text is *not* shipped here: pass the template string, or the path of VideoAlign's
``prompt_template.py`` (its module-level string constants are read with ``ast``, never imported).
"""

from __future__ import annotations

import ast
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from vipo.rewards.clip_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

IMAGE_FACTOR = 28  # patch 14 x merge 2
VIDEO_MIN_PIXELS = 128 * 28 * 28
FRAME_FACTOR = 2
FPS_MIN_FRAMES, FPS_MAX_FRAMES = 4, 768
MAX_RATIO = 200
# data_config.prompt_template_type -> module-level constant in VideoAlign's prompt_template.py
TEMPLATE_CONSTANTS = {"detailed_special": "DETAILED_PROMPT_WITH_SPECIAL_TOKEN", "detailed": "DETAILED_PROMPT",
                      "simple": "SIMPLE_PROMPT", "video_score": "VIDEOSCORE_QUERY_PROMPT"}


# --------------------------------------------------------------------------------- sizes / frames
def _round_to(x: float, f: int) -> int:
    return round(x / f) * f


def smart_resize(height: int, width: int, factor: int = IMAGE_FACTOR, min_pixels: int = VIDEO_MIN_PIXELS,
                 max_pixels: int = 240 * 320) -> Tuple[int, int]:
    """Frame size used by the model: multiples of ``factor``, aspect ratio kept as far as possible.

    First both sides are rounded to the factor; if the area then exceeds ``max_pixels`` the frame is
    shrunk by ``sqrt(area / max_pixels)`` and floored, else if below ``min_pixels`` grown and ceiled.
    (The two checks are exclusive, so ``max_pixels`` wins when it is below ``min_pixels``.)
    """
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio must be below {MAX_RATIO}, got {height} x {width}")
    h, w = max(factor, _round_to(height, factor)), max(factor, _round_to(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def num_sampled_frames(total: int, video_fps: float, fps: Optional[float] = 2.0,
                       nframes: Optional[int] = None) -> int:
    """How many frames the model sees: ``nframes`` rounded to even, or ``total / video_fps * fps``
    clamped to [4, min(768, total)] (rounded to even bounds) and rounded to even; at most ``total``."""
    if nframes is not None:
        n = _round_to(nframes, FRAME_FACTOR)
    else:
        lo = math.ceil(FPS_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
        hi = math.floor(min(FPS_MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
        n = _round_to(min(max(total / video_fps * fps, lo), hi), FRAME_FACTOR)
    n = min(n, total)
    if not FRAME_FACTOR <= n <= total:
        raise ValueError(f"VideoAlign needs between {FRAME_FACTOR} and {total} frames, got {n}")
    return n


def frame_indices(total: int, n: int) -> torch.Tensor:
    """Uniform indices ``round(linspace(0, total - 1, n))`` (round half to even, as torch does)."""
    return torch.linspace(0, total - 1, n).round().long()


def resize_frames_uint8(frames: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> 8-bit values [N, 3, h, w] as float (0..255), resized bicubic with
    antialias on the 8-bit frames and rounded back to 8 bits (torchvision's uint8 behaviour)."""
    u8 = (frames.float().clamp(0, 1) * 255).round()  # [N, 3, H, W] 0..255
    if tuple(u8.shape[-2:]) == tuple(size):
        return u8
    out = F.interpolate(u8, size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.round().clamp(0, 255)  # [N, 3, h, w]


def patchify(frames: torch.Tensor, patch_size: int = 14, temporal_patch_size: int = 2,
             merge_size: int = 2) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """Normalised frames [T, C, H, W] -> Qwen2-VL patches [t*h*w, C*tp*p*p] and grid (t, h, w).

    An odd frame count is padded by repeating the last frame. Patch order: time, then 2 x 2 merge
    windows row-major, then the positions inside a window; each patch flattens (C, tp, p, p).
    """
    if frames.shape[0] % temporal_patch_size:
        pad = temporal_patch_size - frames.shape[0] % temporal_patch_size
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    T, C, H, W = frames.shape
    t, h, w = T // temporal_patch_size, H // patch_size, W // patch_size
    x = frames.reshape(t, temporal_patch_size, C, h // merge_size, merge_size, patch_size,
                       w // merge_size, merge_size, patch_size)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # [t, h/m, w/m, m, m, C, tp, p, p]
    return x.reshape(t * h * w, C * temporal_patch_size * patch_size * patch_size), (t, h, w)


def video_to_patches(video: torch.Tensor, size: Tuple[int, int], mean: Sequence[float] = OPENAI_CLIP_MEAN,
                     std: Sequence[float] = OPENAI_CLIP_STD, patch_size: int = 14, temporal_patch_size: int = 2,
                     merge_size: int = 2) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """One sampled clip [T, 3, H, W] in [0, 1] -> (patches [N, 3*tp*p*p], grid (t, h, w))."""
    x = resize_frames_uint8(video, size) / 255.0  # [T, 3, h, w]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return patchify((x - m) / s, patch_size, temporal_patch_size, merge_size)


# ------------------------------------------------------------------------------------------ text
def read_reference_templates(path: str) -> Dict[str, object]:
    """Module-level string and dict constants of VideoAlign's ``prompt_template.py`` (parsed, not run)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VideoAlign prompt template file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out: Dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def resolve_template(template: Optional[str], template_type: str) -> Tuple[Optional[str], Dict[str, object]]:
    """``template`` is the template text itself, or a path to ``prompt_template.py`` (the constant for
    ``template_type`` is picked). Returns (text or None for type "none", all constants read)."""
    if template_type == "none":
        return None, {}
    if template is None:
        raise ValueError(f"VideoAlign prompt template type {template_type!r} needs its text: pass prompt_template= "
                         "the template string or the path of VideoAlign's prompt_template.py")
    if template.endswith(".py"):
        consts = read_reference_templates(template)
        name = TEMPLATE_CONSTANTS.get(template_type)
        if name not in consts:
            raise KeyError(f"{template!r} has no constant {name!r} for template type {template_type!r}")
        return str(consts[name]), consts
    return template, {}


def build_query(prompt: str, template: Optional[str], eval_dims: Sequence[str] = ("VQ",),
                descriptions: Optional[Dict[str, Sequence[str]]] = None) -> str:
    """The user text for one video: the prompt alone (no template) or the template filled in.

    Templates use ``{text_prompt}`` and, for the per-dimension ones, ``{dimension_name}`` /
    ``{dimension_description}`` (from ``DIMENSION_DESCRIPTIONS``; several dimensions are joined as the
    reference does: ``overall performance(a, b)`` / ``the overall performance of the video``).
    """
    if template is None:
        return prompt
    fields = {"text_prompt": prompt}
    if "{dimension_name}" in template or "{dimension_description}" in template:
        if descriptions is None:
            raise ValueError("this VideoAlign template needs DIMENSION_DESCRIPTIONS (pass prompt_template.py)")
        if len(eval_dims) > 1:
            fields["dimension_name"] = f"overall performance({', '.join(descriptions[d][0] for d in eval_dims)})"
            fields["dimension_description"] = "the overall performance of the video"
        else:
            fields["dimension_name"], fields["dimension_description"] = descriptions[eval_dims[0]][:2]
    return template.format(**fields)


def qwen2_vl_chat(query: str, tokenizer=None, chat_template: Optional[str] = None) -> str:
    """One user turn holding a video and ``query``, with the generation prompt, as Qwen2-VL's chat template
    renders it (the tokenizer's template is used when it has one)."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": query}]}]
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if tokenizer is not None and template:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True)
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|><|video_pad|><|vision_end|>{query}<|im_end|>\n<|im_start|>assistant\n")
