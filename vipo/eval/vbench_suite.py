"""VBench's prompt suite, its video names and the weight files each dimension reads (pure: no torch, no vbench).

VBench (``vbench`` 0.1.5 on PyPI) evaluates a folder of videos named ``<prompt>-<i>.mp4``: in its standard mode
it walks its own ``VBench_full_info.json`` (946 entries ``{"prompt_en", "dimension": [...]}``, 944 distinct
prompts), keeps the entries that list a requested dimension and looks for ``f"{prompt}-{i}{suffix}"`` with
``i`` in ``0..4`` (``VBench.build_full_info_json``). In its custom mode the prompt is the file name with a
trailing ``-<digits>`` removed (``vbench.utils.get_prompt_from_filename``). ``suite`` builds the list of
prompts to generate for the requested dimensions in either mode; ``video_name`` is the name VBench looks for.

``WEIGHT_FILES`` lists, per dimension, the files under VBench's cache folder (``~/.cache/vbench`` or
``$VBENCH_CACHE_DIR``) that ``vbench.utils.init_submodules(local=True)`` and the dimension's module read;
when one is absent VBench would download it with wget, so vipo reports the dimension as missing instead.
``HUB_FILES`` lists the Hugging Face models a dimension loads by name (GRiT's and Tag2Text's BERT tokenizer, Tag2Text's
BERT weights), looked up in the Hugging Face cache: offline, an absent one would fail inside VBench.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

# VBench.build_full_dimension_list order
DIMENSIONS: Tuple[str, ...] = (
    "subject_consistency", "background_consistency", "aesthetic_quality", "imaging_quality", "object_class",
    "multiple_objects", "color", "spatial_relationship", "scene", "temporal_style", "overall_consistency",
    "human_action", "temporal_flickering", "motion_smoothness", "dynamic_degree", "appearance_style",
)
# dimensions that need the auxiliary info of VBench's own prompts (object names, colours, ...): standard suite only
STANDARD_ONLY: Tuple[str, ...] = ("object_class", "multiple_objects", "scene", "appearance_style", "color",
                                  "spatial_relationship")
SAMPLES_PER_PROMPT = 5  # VBench's standard protocol (build_full_info_json looks for indices 0..4)

_GRIT = ("grit_model/grit_b_densecap_objectdet.pth",)
_VICLIP = ("ViCLIP/ViClip-InternVid-10M-FLT.pth", "ViCLIP/bpe_simple_vocab_16e6.txt.gz")
# relative to VBench's cache folder; a trailing "/" is a folder (the DINO repository torch.hub loads locally)
WEIGHT_FILES: Dict[str, Tuple[str, ...]] = {
    "subject_consistency": ("dino_model/facebookresearch_dino_main/", "dino_model/dino_vitbase16_pretrain.pth"),
    "background_consistency": ("clip_model/ViT-B-32.pt",),
    "aesthetic_quality": ("clip_model/ViT-L-14.pt", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"),
    "imaging_quality": ("pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",),
    "object_class": _GRIT, "multiple_objects": _GRIT, "color": _GRIT, "spatial_relationship": _GRIT,
    "scene": ("caption_model/tag2text_swin_14m.pth",),
    "temporal_style": _VICLIP, "overall_consistency": _VICLIP,
    "human_action": ("umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth",),
    "temporal_flickering": (),
    "motion_smoothness": ("amt_model/amt-s.pth",),
    "dynamic_degree": ("raft_model/models/raft-things.pth",),
    "appearance_style": ("clip_model/ViT-B-32.pt",),
}
# Hugging Face models a dimension's module loads by name (from_pretrained("bert-base-uncased")): the files each needs,
# a tuple of alternatives where any one will do
_BERT_TOKENIZER = ("bert-base-uncased", (("vocab.txt",),))
HUB_FILES: Dict[str, Tuple[Tuple[str, Tuple[Tuple[str, ...], ...]], ...]] = {
    **{d: (_BERT_TOKENIZER,) for d in ("object_class", "multiple_objects", "color", "spatial_relationship")},
    "scene": (("bert-base-uncased", (("vocab.txt",), ("model.safetensors", "pytorch_model.bin"))),),
}
# Python modules a dimension imports beyond vbench's own requirements (VBench's README: install detectron2 yourself)
EXTRA_MODULES: Dict[str, Tuple[str, ...]] = {d: ("detectron2",) for d in
                                             ("object_class", "multiple_objects", "color", "spatial_relationship")}


class SuiteError(ValueError):
    """A prompt suite that VBench could not evaluate (bad file, unknown dimension, unnameable prompt)."""


@dataclass(frozen=True)
class SuitePrompt:
    prompt: str
    dimensions: Tuple[str, ...]  # the requested dimensions this prompt serves


def check_dimensions(dimensions: Optional[Sequence[str]]) -> List[str]:
    """``None`` -> all 16 (VBench's order); names in VBench's underscore form (spaces accepted), no repeats."""
    if dimensions is None:
        return list(DIMENSIONS)
    if isinstance(dimensions, str):
        dimensions = [dimensions]
    out: List[str] = []
    for d in dimensions:
        key = "_".join(str(d).lower().replace("_", " ").split())
        if key not in DIMENSIONS:
            import difflib

            close = difflib.get_close_matches(key, DIMENSIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SuiteError(f"unknown VBench dimension {d!r}{hint}; dimensions: {', '.join(DIMENSIONS)}")
        if key in out:
            raise SuiteError(f"VBench dimension {key!r} is listed twice")
        out.append(key)
    if not out:
        raise SuiteError("vbench.dimensions is empty; leave it out for all 16")
    return out


def video_name(prompt: str, index: int, suffix: str = ".mp4") -> str:
    """The file name VBench looks for: ``f"{prompt}-{index}{suffix}"`` (its ``special_str`` is empty)."""
    return f"{prompt}-{index}{suffix}"


def prompt_of(filename: str) -> str:
    """VBench's ``get_prompt_from_filename``: the stem without a trailing ``-<digits>``."""
    stem = Path(filename).stem
    return re.sub(r"-\d+$", "", stem)


def check_nameable(prompt: str, where: str) -> None:
    """A prompt must survive as a file name and come back unchanged from ``prompt_of``."""
    if not prompt.strip():
        raise SuiteError(f"{where}: empty prompt")
    if "/" in prompt or "\0" in prompt:
        raise SuiteError(f"{where}: prompt {prompt[:60]!r} contains '/', which cannot be in a video file name")
    if len(video_name(prompt, 0).encode()) > 255:
        raise SuiteError(f"{where}: prompt {prompt[:60]!r}... is too long for a file name "
                         f"({len(prompt.encode())} bytes; at most {255 - len('-0.mp4')})")
    if prompt_of(video_name(prompt, 0)) != prompt:
        raise SuiteError(f"{where}: prompt {prompt[:60]!r} would not be read back from its file name by VBench")


def read_full_info(path: str | os.PathLike) -> list:
    """VBench's ``VBench_full_info.json``: a list of ``{"prompt_en": str, "dimension": [str, ...], ...}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VBench prompt suite {path} does not exist (it ships inside the vbench package: "
                                "make vbench-env, or give vbench.info_file=<VBench_full_info.json>)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SuiteError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, list):
        raise SuiteError(f"{path}: expected a list of {{prompt_en, dimension}} entries, got {type(data).__name__}")
    for k, entry in enumerate(data):
        if not (isinstance(entry, dict) and isinstance(entry.get("prompt_en"), str)
                and isinstance(entry.get("dimension"), list)):
            raise SuiteError(f"{path}: entry {k} is not {{'prompt_en': str, 'dimension': [...]}}: {str(entry)[:80]}")
    return data


def standard_suite(full_info: list, dimensions: Sequence[str]) -> List[SuitePrompt]:
    """Distinct prompts of the entries that list a requested dimension, in the file's order (a prompt listed by
    two entries is generated once: VBench gives both entries the same files)."""
    dims = check_dimensions(dimensions)
    order: Dict[str, List[str]] = {}
    for k, entry in enumerate(full_info):
        wanted = [d for d in entry["dimension"] if d in dims]
        if not wanted:
            continue
        check_nameable(entry["prompt_en"], f"VBench_full_info.json entry {k}")
        served = order.setdefault(entry["prompt_en"], [])
        served += [d for d in wanted if d not in served]
    return [SuitePrompt(p, tuple(d for d in dims if d in served)) for p, served in order.items()]


def custom_suite(path: str | os.PathLike, dimensions: Sequence[str]) -> List[SuitePrompt]:
    """A text file, one prompt per line (blank lines skipped); every prompt serves every requested dimension.
    VBench's custom mode reads the prompt from the file name, so the dimensions that need its own prompts'
    auxiliary info (object class, colour, ...) are refused."""
    dims = check_dimensions(dimensions)
    refused = [d for d in dims if d in STANDARD_ONLY]
    if refused:
        raise SuiteError(f"VBench dimensions {refused} need VBench's own prompts (vbench.prompts=standard); "
                         f"a custom prompt file supports: {', '.join(d for d in DIMENSIONS if d not in STANDARD_ONLY)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist (vbench.prompts=standard or a text file)")
    prompts: List[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        p = line.strip()
        if not p:
            continue
        check_nameable(p, f"{path}:{n}")
        if p in prompts:
            raise SuiteError(f"{path}:{n}: prompt {p[:60]!r} repeats line {prompts.index(p) + 1} "
                             "(VBench tells videos apart by prompt)")
        prompts.append(p)
    if not prompts:
        raise SuiteError(f"prompt file {path} has no prompts")
    return [SuitePrompt(p, tuple(dims)) for p in prompts]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache transformers reads: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def hub_file_present(hub: Path, repo_id: str, filename: str) -> bool:
    """Whether ``filename`` of ``repo_id`` is in the hub cache ``hub`` at the revision an offline
    ``from_pretrained(repo_id)`` resolves (``main``), as huggingface_hub itself looks it up."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=hub), str)


def missing_weights(dimensions: Sequence[str], cache_dir: str | os.PathLike,
                    hub_dir: Optional[str | os.PathLike] = None) -> Dict[str, List[str]]:
    """``{dimension: [what it wants that is absent]}`` for dimensions with anything absent: absolute paths under
    VBench's cache folder, and ``Hugging Face <repo>: <file>`` for a model it loads by name that is not in the hub
    cache (``hub_dir``, default ``hub_cache_dir()``)."""
    root = Path(cache_dir)
    hub = Path(hub_dir) if hub_dir is not None else hub_cache_dir()
    out: Dict[str, List[str]] = {}
    for d in dimensions:
        absent = [str(root / rel) for rel in WEIGHT_FILES[d]
                  if not ((root / rel).is_dir() if rel.endswith("/") else (root / rel).is_file())]
        for repo_id, needs in HUB_FILES.get(d, ()):
            for alternatives in needs:
                if not any(hub_file_present(hub, repo_id, f) for f in alternatives):
                    absent.append(f"Hugging Face {repo_id}: {' or '.join(alternatives)} (in {hub})")
        if absent:
            out[d] = absent
    return out


def default_cache_dir() -> str:
    """VBench's own default: ``$VBENCH_CACHE_DIR``, else ``~/.cache/vbench`` (vbench.utils.CACHE_DIR)."""
    return os.environ.get("VBENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vbench")
