"""Image preprocessing and the CLIP byte-level BPE tokenizer, in plain torch / PIL.

The reference packages (open_clip, hpsv2, ImageReward) preprocess with torchvision, which cannot be
imported here; these functions reproduce their arithmetic:

- ``resize_longest_and_pad``: HPSv2's eval transform (to tensor, longer side -> ``size`` bicubic with
  antialias, zero-pad centred to a square, then normalise). No centre crop.
- ``resize_shortest_and_center_crop``: torchvision ``Resize(size) + CenterCrop(size)`` on a float tensor
  (a differentiable stand-in for the PIL path of CLIP-style processors).
- ``pil_resize_shortest_and_center_crop``: the same on 8-bit PIL images, exactly as ImageReward does it.

Images are ``[B, 3, H, W]`` floats in ``[0, 1]``.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import unicodedata
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import regex
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------- images
def check_images(images: torch.Tensor, who: str = "scorer") -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{who}: expected images [B, 3, H, W], got shape {tuple(images.shape)}")


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as saving to PNG and reloading would (what the reference code sees)."""
    return (images.clamp(0, 1) * 255).round() / 255  # [B, 3, H, W]


def to_uint8_hwc(images: torch.Tensor) -> List[np.ndarray]:
    """[B, 3, H, W] in [0, 1] -> B arrays [H, W, 3] uint8."""
    u8 = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)  # [B, 3, H, W]
    return [a for a in u8.permute(0, 2, 3, 1).cpu().numpy()]


def normalize(images: torch.Tensor, mean: Sequence[float] = OPENAI_CLIP_MEAN,
              std: Sequence[float] = OPENAI_CLIP_STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s  # [B, 3, H, W]


def _bicubic(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True)


def resize_longest_and_pad(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Scale so the longer side is ``size`` (bicubic, antialiased), then zero-pad centred to size x size.

    New side lengths use Python's ``round`` (as HPSv2's ``ResizeMaxSize``); the left/top pad is
    ``pad // 2``. Padding is applied before normalisation, so padded pixels are black.
    """
    check_images(images, "resize_longest_and_pad")
    h, w = images.shape[-2:]
    scale = size / float(max(h, w))
    new_h, new_w = round(h * scale), round(w * scale)
    out = _bicubic(images, (new_h, new_w))  # [B, 3, new_h, new_w]
    pad_h, pad_w = size - new_h, size - new_w
    return F.pad(out, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)  # [B,3,S,S]


def _shortest_side_size(h: int, w: int, size: int) -> Tuple[int, int]:
    """torchvision ``Resize(int)``: the short side becomes ``size``, the long side ``int(size*long/short)``."""
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def _center_crop_box(h: int, w: int, size: int) -> Tuple[int, int]:
    """torchvision ``CenterCrop``: top/left offsets ``int(round((H - size) / 2))``."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def resize_shortest_and_center_crop(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Differentiable torch version of ``Resize(size, bicubic) + CenterCrop(size)``."""
    check_images(images, "resize_shortest_and_center_crop")
    new_h, new_w = _shortest_side_size(images.shape[-2], images.shape[-1], size)
    out = _bicubic(images, (new_h, new_w))  # [B, 3, new_h, new_w]
    top, left = _center_crop_box(new_h, new_w, size)
    return out[..., top:top + size, left:left + size]  # [B, 3, size, size]


def pil_resize_shortest_and_center_crop(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """``Resize(size, BICUBIC) + CenterCrop(size) + ToTensor`` on 8-bit PIL images (ImageReward's path)."""
    from PIL import Image

    check_images(images, "pil_resize_shortest_and_center_crop")
    new_h, new_w = _shortest_side_size(images.shape[-2], images.shape[-1], size)
    top, left = _center_crop_box(new_h, new_w, size)
    out = []
    for arr in to_uint8_hwc(images):
        pil = Image.fromarray(arr).resize((new_w, new_h), Image.BICUBIC)
        pil = pil.crop((left, top, left + size, top + size))
        out.append(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1))  # [3, S, S]
    return torch.stack(out).to(images.device)  # [B, 3, size, size]


# -------------------------------------------------------------------------------------- tokenizer
_CLIP_SPLIT = regex.compile(  # special tokens, English contractions, letter runs, single digits, other runs
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
    r"""|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


@lru_cache()
def byte_to_unicode() -> Dict[int, str]:
    """The reversible byte -> printable character table of GPT-2 / CLIP byte-level BPE.

    Printable Latin-1 bytes map to themselves; the remaining 68 bytes map to code points 256, 257, ...
    in byte order, so every byte has a visible, non-whitespace stand-in. The dict's order is the
    *vocabulary* order of open_clip / OpenAI CLIP / GPT-2: the 188 printable bytes first (ascending),
    then the 68 others (ascending), so ``"!"`` is id 0 and ``"a"`` id 64, not byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(rest)}}


def byte_vocabulary() -> List[str]:
    """The 256 single-byte tokens in vocabulary order (ids 0..255; ids 256..511 are the same + ``</w>``)."""
    return list(byte_to_unicode().values())


def clean_text(text: str) -> str:
    """open_clip's cleaning: fix text (ftfy when installed, else NFC), unescape HTML twice,
    collapse whitespace, lower-case."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


def clip_vocabulary(merges: Sequence[Tuple[str, str]]) -> List[str]:
    """CLIP's token list in id order: bytes, bytes + ``</w>``, one token per merge, sot, eot."""
    chars = byte_vocabulary()
    return chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]


class CLIPBPETokenizer:
    """The CLIP tokenizer (as open_clip's ``tokenize``): ``[sot] + bpe(text) + [eot]``, truncated to
    ``context_length`` with the last kept id replaced by ``eot``, padded with 0."""

    def __init__(self, encoder: Dict[str, int], merges: Sequence[Tuple[str, str]], context_length: int = 77,
                 sot_token: str = "<|startoftext|>", eot_token: str = "<|endoftext|>"):
        self.encoder = dict(encoder)
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.context_length = context_length
        self.sot_id = self.encoder[sot_token]
        self.eot_id = self.encoder[eot_token]
        # special tokens written in a prompt map to their ids in open_clip's spelling only: open_clip (and so
        # HPSv2) reads "<|endoftext|>" in a prompt as punctuation and letters, unlike transformers' tokenizer
        self.special = {"<start_of_text>": self.sot_id, "<end_of_text>": self.eot_id}
        self._cache: Dict[str, List[str]] = {}

    @classmethod
    def from_pretrained(cls, path_or_id: str, context_length: int = 77) -> "CLIPBPETokenizer":
        """A folder (or hub id) with ``vocab.json`` + ``merges.txt``, or open_clip's ``*.txt.gz`` merge list."""
        from vipo.rewards.loading import resolve

        if str(path_or_id).endswith(".gz"):
            return cls.from_bpe_gz(resolve(path_or_id, what="CLIP BPE vocabulary"), context_length)
        vocab_path = resolve(path_or_id, "vocab.json", what="CLIP tokenizer vocabulary")
        merges_path = resolve(path_or_id, "merges.txt", what="CLIP tokenizer merges")
        with open(vocab_path, encoding="utf-8") as f:
            encoder = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            lines = [ln for ln in f.read().split("\n") if ln and not ln.startswith("#version")]
        return cls(encoder, [tuple(ln.split()) for ln in lines], context_length)

    @classmethod
    def from_bpe_gz(cls, path: str, context_length: int = 77, num_merges: int = 49152 - 256 - 2) -> "CLIPBPETokenizer":
        """open_clip's gzipped merge list: the vocabulary is bytes, bytes + '</w>', the merges, sot, eot."""
        with gzip.open(path) as f:
            lines = f.read().decode("utf-8").split("\n")[1:num_merges + 1]
        merges = [tuple(ln.split()) for ln in lines if ln]
        return cls({t: i for i, t in enumerate(clip_vocabulary(merges))}, merges, context_length)

    def _bpe(self, word: str) -> List[str]:
        if word in self._cache:
            return self._cache[word]
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(parts[i], parts[i + 1]) for i in range(len(parts) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):  # merge every occurrence of the best pair, left to right
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> List[int]:
        """BPE ids of ``text`` without sot/eot."""
        table = byte_to_unicode()
        ids: List[int] = []
        for piece in _CLIP_SPLIT.findall(clean_text(text)):
            if piece in self.special:
                ids.append(self.special[piece])
                continue
            word = "".join(table[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(word))
        return ids

    def __call__(self, texts: Sequence[str] | str, context_length: Optional[int] = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        out = torch.zeros(len(texts), length, dtype=torch.long)  # [B, L], 0 = padding
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot_id
            out[row, :len(ids)] = torch.tensor(ids)
        return out


def write_bpe_files(folder: str, merges: Sequence[Tuple[str, str]]) -> None:
    """Write ``vocab.json`` + ``merges.txt`` in the CLIP layout (bytes, bytes</w>, merges, sot, eot).

    Used to build tiny tokenizers for tests without downloads.
    """
    vocab = clip_vocabulary(merges)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
