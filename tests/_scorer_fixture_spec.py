"""What the scorer golden fixtures are made of, shared by the two sides that use it.

``checks/make_scorer_fixtures.py`` (run in the reference environment ``.venv-ref``) feeds these prompts,
images and seeded small-architecture weights to the reference packages and stores their outputs in
``tests/fixtures/scorers/``; ``tests/test_scorer_fixtures.py`` (default suite) feeds the same inputs to our
ports and compares. Plain torch / numpy only: this file must import in both environments.
"""

from __future__ import annotations

import gzip
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "scorers")

PROMPTS = [
    "a", ",", "8", "!", "z", "A", "é", "0123456789", "3.14 + 2,718 = 5.858", "hello, world! (really?) ... --- ;:",
    "a photo of a red fox sitting in fresh snow, golden hour",
    "It's we're they'll I'd you've can't", "Café crème brûlée, naïve Zoë", "東京の夜景 and 北京", "emoji 🐱🚀 ok",
    "“curly quotes” and ‘single’ ones", "a &amp;amp; b &lt;3", "  tabs\tand\nnew   lines  ", "UPPER lower MiXeD",
    "x" * 60, "<|endoftext|> inside text", "",
    "an extremely long prompt that keeps going " * 12,  # > 77 CLIP tokens and > 35 BERT tokens: truncation
    "a dog, a cat, a bird, a fish, a horse, a cow, a pig, a goat, a sheep, a duck, a hen, a fox, a wolf, a bear, "
    "a deer, a lion, a tiger, a zebra, a giraffe, an elephant",  # exactly around the 77-token edge
]

IMAGE_SIZES = [(37, 23), (23, 37), (31, 31), (9, 50), (20, 13)]  # (H, W): odd, wide, tall, upscaled
IMAGE_SEED = 7


def fixture_images() -> List[np.ndarray]:
    """uint8 [H, W, 3] images: a colour gradient plus noise (stored in the fixtures as well)."""
    g = torch.Generator().manual_seed(IMAGE_SEED)
    out = []
    for h, w in IMAGE_SIZES:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")  # [H, W]
        base = torch.stack([yy, xx, 1 - (yy + xx) / 2], -1) * 200  # [H, W, 3]
        noise = torch.randint(0, 56, (h, w, 3), generator=g).float()  # [H, W, 3]
        out.append((base + noise).clamp(0, 255).round().to(torch.uint8).numpy())
    return out


# ----------------------------------------------------------------------- small reference architectures
IMAGE_SIZE = 32  # model input side for all three small models
HPS_SMALL = dict(seed=11, v_width=32, v_layers=2, patch=8, image=IMAGE_SIZE, t_width=32, t_layers=2, vocab=49408,
                 ctx=77, embed=24)  # random_open_clip_state_dict arguments; heads: 32 / 16 = 2 (vision and text)
HPS_HEAD_WIDTH = 16
PICK_SEED = 12
PICK_CONFIG = dict(
    text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu"),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       image_size=IMAGE_SIZE, patch_size=8, hidden_act="gelu"),
    projection_dim=24)
IR_SMALL = dict(seed=13, v_width=32, v_layers=2, patch=8, image=IMAGE_SIZE, t_width=32, t_layers=2, vocab=30524,
                max_pos=40)  # random_imagereward_state_dict arguments; heads: 32 / 16 = 2
IR_HEAD_DIM = 16


def seeded_fill_(module: torch.nn.Module, seed: int) -> float:
    """Overwrite every float tensor of ``module`` from a seeded generator (sorted names; 1-D ``*.weight``
    are norm gains: 1 + 0.1 n; everything else 0.2 n). Returns the sum of |values| as a checksum."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for name, t in sorted(module.state_dict(keep_vars=True).items()):
            if not t.is_floating_point():
                continue
            n = torch.randn(t.shape, generator=g)
            t.copy_(1 + 0.1 * n if (t.dim() == 1 and name.endswith(".weight")) else 0.2 * n)
            total += float(t.abs().sum())
    return total


def checksum(state_dict: Dict[str, torch.Tensor]) -> float:
    return float(sum(v.float().abs().sum() for v in state_dict.values() if v.is_floating_point()))


# ------------------------------------------------------------------ sparse vocabularies (test side)
_NEVER_IN_UTF8 = [chr(b) for b in (0xC0, 0xC1, *range(0xF5, 0x100))]  # byte tokens no UTF-8 text produces


def full_merge_list(merges: Dict[int, Tuple[str, str]], num_merges: int) -> List[Tuple[str, str]]:
    """The fixture's merges at their original ranks; every other rank holds a pair of byte tokens that no
    UTF-8 text contains (so it never fires). Ids and BPE results are then those of the full list for every
    word whose merges the fixture kept."""
    n = len(_NEVER_IN_UTF8)
    return [merges[i] if i in merges else (_NEVER_IN_UTF8[i % n], _NEVER_IN_UTF8[(i // n) % n] + "</w>")
            for i in range(num_merges)]


def write_sparse_bpe_gz(path: str, merges: Dict[int, Tuple[str, str]], num_merges: int) -> None:
    """open_clip's gzipped merge-list layout (a header line, then one merge a line) of ``full_merge_list``."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: fixture\n" + "\n".join(" ".join(m) for m in full_merge_list(merges, num_merges)) + "\n")


def write_sparse_wordpiece_vocab(path: str, tokens: Dict[int, str], size: int) -> None:
    """A BERT ``vocab.txt`` with the fixture's tokens on their original lines and never-matching
    placeholders elsewhere (WordPiece only ever looks up substrings of a word)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens.get(i, f"[unused-vipo-{i}]") for i in range(size)) + "\n")


def merges_used_by(words: Sequence[str], ranks: Dict[Tuple[str, str], int]) -> Dict[int, Tuple[str, str]]:
    """Every merge whose result is a substring of a word (``word + '</w>'``): the only ones that can fire."""
    texts = [w + "</w>" for w in words]
    return {r: m for m, r in ranks.items() if any("".join(m) in t for t in texts)}
