"""Loading the reference scorer packages in .venv-ref (shared by check_scorers.py and make_scorer_fixtures.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import types


def import_imagereward():
    """ImageReward's modules without its package ``__init__`` (which imports the ReFL trainer: diffusers,
    accelerate). Needs transformers 4.55.4 first on the path (.venv-ref/tf4): image-reward 1.5 imports helpers
    from ``transformers.modeling_utils`` that 4.56 removed."""
    found = importlib.util.find_spec("ImageReward")
    if found is None:
        raise ImportError("image-reward is not installed (run checks/ref_env.sh)")
    pkg = types.ModuleType("ImageReward")
    pkg.__path__ = list(found.submodule_search_locations)
    sys.modules.setdefault("ImageReward", pkg)
    from ImageReward import ImageReward as ir
    from ImageReward.models.BLIP.blip import init_tokenizer
    from ImageReward.models.BLIP.med import BertConfig, BertModel
    from ImageReward.models.BLIP.vit import VisionTransformer

    return types.SimpleNamespace(module=ir, init_tokenizer=init_tokenizer, BertConfig=BertConfig,
                                 BertModel=BertModel, VisionTransformer=VisionTransformer)


def open_clip_simple_tokenizer():
    """hpsv2's bundled open_clip tokenizer (what ``hpsv2.score`` uses) and its module."""
    from hpsv2.src.open_clip import tokenizer as oc_tok

    return oc_tok._tokenizer, oc_tok


def laion_clip_tokenizer():
    """transformers' ``CLIPTokenizer`` on open_clip's own vocabulary and merges (the layout of
    laion/CLIP-ViT-H-14's tokenizer files, whose ids equal open_clip's): PickScore's reference tokenizer."""
    from transformers import CLIPTokenizer

    ref_tok, _ = open_clip_simple_tokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    folder = tempfile.mkdtemp()
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({rename.get(t, t): i for t, i in ref_tok.encoder.items()}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        ranked = sorted(ref_tok.bpe_ranks.items(), key=lambda kv: kv[1])
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m, _ in ranked) + "\n")
    return CLIPTokenizer.from_pretrained(folder)
