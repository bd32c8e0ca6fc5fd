"""Attention maps (``psm.source=attention``): the generator's own image-token -> prompt-token attention.

Captured while the rollout runs, with no second forward pass: forward hooks on the chosen attention
modules switch on a ``TorchFunctionMode`` that sees the ``scaled_dot_product_attention`` call inside
(diffusers' native attention backend), computes ``softmax(q k^T * scale)`` for the image queries from
the same q and k, keeps the prompt-key columns, averages the heads and lets the call run unchanged.
The softmax is over all keys the model attends to (joint attention: prompt and image tokens).

Per velocity call the rows that belong to the conditional branch are the last ``b`` rows seen (the order
of ``cfg_combine``: batched ``[uncond, cond]``, or the unconditional forward first). Per sample, the
selected prompt tokens' columns are summed with weights from a token rule (``TOKEN_RULES``: ``content``
= every real token of the prompt, ``nouns`` = the tokens of the given words; a prompt without any of
them falls back to its content tokens) and averaged over the chosen layers and rollout steps. The
image-token grid is resized to the latent grid, optionally blurred, and min-max normalised per sample
(a map without contrast becomes ones).

Which modules to hook, the token layout and the prompt tokens of each generator are in
``ATTENTION_MODELS`` (generator name -> ``AttentionModel``). The toy generator is refused: it is
class-conditional, its label enters through the timestep embedding, so it has no prompt tokens; its
UNet's self-attention relates image positions to each other only and would not answer the question
this source is for (where does the model put the prompt?).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from vipo.psm import PSMConfig, finish, gaussian_blur1d, unit_peak
from vipo.registry import Registry

ATTENTION_MODELS: Registry["AttentionModel"] = Registry("attention model")
# rule(words [B, L] (a token's lowercase word, None for padding and special tokens), cfg) -> weights [B, L]
TOKEN_RULES: Registry[Callable[[list, "AttentionConfig"], Tensor]] = Registry("prompt-token rule")
LAYOUTS = ("text_first", "image_first", "cross")  # sequence layout at a hooked module


@dataclass
class AttentionConfig:
    layers: list = field(default_factory=list)  # hooked attention layers, indices (negative: from the end); [] = all
    steps: list = field(default_factory=list)  # rollout steps averaged, indices (negative: from the end); [] = all
    tokens: str = "content"  # prompt tokens: content (all real tokens) | nouns (tokens of the words in `nouns`)
    nouns: list = field(default_factory=list)  # words for tokens=nouns, e.g. [cat, ball]
    blur_sigma: float = 0.0  # Gaussian blur std on the latent grid, in cells; 0 = off
    query_chunk: int = 256  # image queries per softmax chunk (bounds memory: chunk x keys x heads)
    per_step: bool = False  # one map per rollout step (as STAR): step t's advantage uses step t's map

    def __post_init__(self) -> None:
        if self.tokens not in TOKEN_RULES:
            raise ValueError(f"attention.tokens={self.tokens!r}; known: {TOKEN_RULES.names()}")
        if self.tokens == "nouns" and not self.nouns:
            raise ValueError("attention.tokens=nouns needs attention.nouns, e.g. [cat, ball]")
        if not all(isinstance(i, int) for i in [*self.layers, *self.steps]):
            raise ValueError(f"attention.layers and attention.steps take integer indices, got "
                             f"{self.layers}, {self.steps}")
        if self.per_step and self.steps:
            raise ValueError("attention.per_step keeps every rollout step; leave attention.steps empty")
        if self.blur_sigma < 0 or self.query_chunk < 1:
            raise ValueError("attention.blur_sigma must be >= 0 and attention.query_chunk >= 1")


@dataclass
class AttentionModel:
    """How to read one generator's attention."""

    modules: Callable  # generator -> [(name, attention module, layout)] in depth order
    segments: Callable  # generator -> [(tokenizer, length)]: the prompt sequence the keys hold, in order
    token_grid: Callable  # generator -> image-token grid (h, w) or (f, h, w), row-major token order


@TOKEN_RULES.register("content")
def _content(words: list, cfg: AttentionConfig) -> Tensor:
    return torch.tensor([[w is not None and w != "" for w in row] for row in words], dtype=torch.float32)  # [B, L]


@TOKEN_RULES.register("nouns")
def _nouns(words: list, cfg: AttentionConfig) -> Tensor:
    nouns = {n.lower() for n in cfg.nouns}
    w = torch.tensor([[x in nouns for x in row] for row in words], dtype=torch.float32)  # [B, L]
    return torch.where(w.sum(1, keepdim=True) > 0, w, _content(words, cfg))  # no noun: all content tokens


def token_words(prompt: str, segments: Sequence[tuple]) -> list:
    """The lowercase word of each key position of ``prompt`` (None: padding or special token), over segments."""
    out: list = []
    spans = [(m.start(), m.end(), m.group().lower()) for m in re.finditer(r"\w+", prompt)]
    for tok, length in segments:
        if not getattr(tok, "is_fast", False):
            raise ValueError(f"psm.source=attention needs fast tokenizers (character offsets); "
                             f"{type(tok).__name__} is not")
        enc = tok(prompt, padding="max_length", max_length=length, truncation=True, return_offsets_mapping=True)
        special = set(tok.all_special_ids)
        for i, m, (s, e) in zip(enc["input_ids"], enc["attention_mask"], enc["offset_mapping"]):
            if not m or i in special or e <= s:
                out.append(None)
            else:
                out.append(next((w for a, b, w in spans if a <= s < b), ""))  # "": punctuation
    return out


# ----------------------------------------------------------------------------------- capture
class _SDPAProbe(TorchFunctionMode):
    """Active during one hooked module's forward: hands the q, k of its attention call to the capture."""

    def __init__(self, owner: "AttentionCapture", layout: str):
        super().__init__()
        self.owner, self.layout, self.seen = owner, layout, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.seen = True
            self.owner._record(self.layout, *args, **kwargs)
        return func(*args, **kwargs)


def image_to_text_probs(q: Tensor, k: Tensor, layout: str, text_len: int, *, attn_mask: Optional[Tensor] = None,
                        scale: Optional[float] = None, chunk: int = 1024) -> Tensor:
    """Head-mean attention of image queries on prompt keys: q [B, H, Sq, D], k [B, Hk, Sk, D] -> [B, N, L].

    ``layout``: ``text_first`` (sequence [prompt L, image N]), ``image_first`` ([image N, prompt L]) or
    ``cross`` (queries are the image, keys the prompt). The softmax runs over all keys, in query chunks."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    sq, sk = q.shape[2], k.shape[2]
    rows = {"text_first": slice(text_len, sq), "image_first": slice(0, sq - text_len), "cross": slice(0, sq)}[layout]
    cols = {"text_first": slice(0, text_len), "image_first": slice(sk - text_len, sk), "cross": slice(0, sk)}[layout]
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    qi = q[:, :, rows].float()  # [B, H, N, D]
    out = []
    for s in range(0, qi.shape[2], chunk):
        logits = qi[:, :, s:s + chunk] @ k.float().mT * scale  # [B, H, n, Sk]
        if attn_mask is not None:
            m = attn_mask[..., rows, :][..., s:s + chunk, :] if attn_mask.shape[-2] == sq else attn_mask
            logits = logits.masked_fill(~m, -torch.inf) if m.dtype == torch.bool else logits + m.float()
        out.append(logits.softmax(-1)[..., cols].mean(1))  # [B, n, L]
    return torch.cat(out, 1)  # [B, N, L]


class AttentionCapture:
    """Context manager around a rollout: accumulates per-sample image-token maps [B, N] of the chosen layers
    and steps. ``prompts``: the rollout's B prompts in row order; ``num_steps``: its SDE steps."""

    def __init__(self, generator, model: AttentionModel, cfg: AttentionConfig, prompts: Sequence[str], num_steps: int):
        self.generator, self.cfg, self.num_steps = generator, cfg, num_steps
        every = model.modules(generator)
        idx = range(len(every)) if not cfg.layers else [_index(i, len(every), "attention.layers") for i in cfg.layers]
        self.modules = [every[i] for i in idx]
        self.steps = set(range(num_steps)) if not cfg.steps else {_index(i, num_steps, "attention.steps")
                                                                   for i in cfg.steps}
        segments = model.segments(generator)
        words = [token_words(p, segments) for p in prompts]
        w = TOKEN_RULES.get(cfg.tokens)(words, cfg)  # [B, L]
        self.weights = w / w.sum(1, keepdim=True).clamp_min(1)  # [B, L]; a prompt with no tokens gives 0
        self.grid = tuple(model.token_grid(generator))
        self.sums = torch.zeros(num_steps, len(prompts), math.prod(self.grid))  # [T, B, N]
        self.counts = torch.zeros(num_steps, len(prompts))  # [T, B]
        self.sdpa_calls = 0  # attention calls analysed (for tests and the bench)
        self._handles: list = []
        self._sigma_step: dict = {}  # sigma -> step index, in order of appearance
        self._rows_done: dict = {}  # step -> rows seen so far
        self._active = False
        self._text_len = 0
        self._forward: list = []  # per transformer forward: [rows, N, L] summed over the hooked layers

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> "AttentionCapture":
        tr = self.generator.transformer
        self._handles.append(tr.register_forward_pre_hook(self._on_forward, with_kwargs=True))
        for _, module, layout in self.modules:
            probe = _SDPAProbe(self, layout)
            self._handles.append(module.register_forward_pre_hook(lambda *a, p=probe: self._enter_probe(p)))
            self._handles.append(module.register_forward_hook(lambda *a, p=probe: self._exit_probe(p),
                                                              always_call=True))
        self.generator.velocity = self._velocity  # an instance attribute over the class method
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        del self.generator.velocity  # the class method shows again

    def _enter_probe(self, probe: _SDPAProbe) -> None:
        if self._active:
            probe.seen = False
            probe.__enter__()

    def _exit_probe(self, probe: _SDPAProbe) -> None:
        if self._active:
            probe.__exit__(None, None, None)
            if not probe.seen:
                raise RuntimeError("psm.source=attention: an attention layer ran without torch's "
                                   "scaled_dot_product_attention; use diffusers' native attention backend")

    def _on_forward(self, module, args, kwargs) -> None:
        ehs = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        self._text_len = int(ehs.shape[1])  # [b, L, D]: prompt keys per attention call
        if self._active:
            self._forward.append(None)

    def _record(self, layout: str, *args, **kwargs) -> None:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        a = {**dict(zip(names, args)), **kwargs}  # F.scaled_dot_product_attention's arguments by name
        with torch.no_grad():
            p = image_to_text_probs(a["query"], a["key"], layout, self._text_len, attn_mask=a.get("attn_mask"),
                                    scale=a.get("scale"), chunk=self.cfg.query_chunk)  # [rows, N, L]
        acc = self._forward[-1]
        self._forward[-1] = p if acc is None else acc + p
        self.sdpa_calls += 1

    def _velocity(self, latents: Tensor, sigma: Tensor, cond):
        b = latents.shape[0]
        s = round(float(sigma.flatten()[0]), 6)
        step = self._sigma_step.setdefault(s, len(self._sigma_step))
        self._active = step in self.steps
        self._forward = []
        try:
            out = type(self.generator).velocity(self.generator, latents, sigma, cond)
        finally:
            self._active = False
        start = self._rows_done.get(step, 0)
        self._rows_done[step] = start + b
        if step in self.steps:
            rows = torch.cat([f for f in self._forward if f is not None])[-b:]  # [b, N, L] conditional rows
            w = self.weights[start:start + b].to(rows.device)  # [b, L]
            m = torch.einsum("bnl,bl->bn", rows, w) / len(self.modules)  # [b, N]
            self.sums[step, start:start + b] += m.cpu()
            self.counts[step, start:start + b] += 1
        return out

    # -- result --------------------------------------------------------------------------------
    def token_maps(self, per_step: bool = False) -> Tensor:
        """Mean over the chosen layers and steps: [B, *token grid]; ``per_step``: [B, T, *token grid]."""
        steps = sorted(self.steps)
        if bool((self.counts[steps] == 0).any()):
            raise RuntimeError("attention capture: some samples were never seen by a captured step")
        if per_step:
            return (self.sums / self.counts[..., None]).transpose(0, 1).reshape(-1, self.num_steps, *self.grid)
        return (self.sums[steps].sum(0) / self.counts[steps].sum(0)[:, None]).reshape(-1, *self.grid)

    def maps(self, grid: tuple[int, ...], cfg: PSMConfig) -> Tensor:
        """Maps [B, *grid] on the latent grid in [0, 1]; with ``per_step``: [B, T, *grid], each step normalised."""
        t = self.token_maps(self.cfg.per_step)  # [B, (T), (f), h, w]
        lead = t.shape[:-len(self.grid)]  # (B,) or (B, T)
        t = t.reshape(-1, *self.grid)  # [B', (f), h, w]
        H, W = grid[-2:]
        m = F.interpolate(t.reshape(-1, 1, *t.shape[-2:]), size=(H, W), mode="bilinear", align_corners=False,
                          antialias=True)[:, 0].reshape(*t.shape[:-2], H, W)  # [B', (f), H, W]
        if len(grid) == 3 and m.shape[1] != grid[0]:
            m = F.interpolate(m[:, None], size=tuple(grid), mode="trilinear", align_corners=True)[:, 0]
        s = self.cfg.blur_sigma
        m = gaussian_blur1d(gaussian_blur1d(m, s, -2), s, -1)
        return finish(unit_peak(m), cfg.normalize).reshape(*lead, *grid)


def _index(i: int, n: int, where: str) -> int:
    if not -n <= i < n:
        raise ValueError(f"{where}: index {i} is out of range for {n} entries")
    return i % n


# ----------------------------------------------------------------------------------- generators
def _latent_hw(gen) -> tuple[int, int]:
    return tuple(gen.latent_shape()[-2:])


ATTENTION_MODELS.register("flux")(AttentionModel(  # joint attention: keys [T5 prompt L, image N]
    modules=lambda g: ([(f"double.{i}", b.attn, "text_first") for i, b in enumerate(g.transformer.transformer_blocks)]
                       + [(f"single.{i}", b.attn, "text_first")
                          for i, b in enumerate(g.transformer.single_transformer_blocks)]),
    segments=lambda g: [(g.tokenizers[1], g.max_sequence_length)],
    token_grid=lambda g: tuple(n // 2 for n in _latent_hw(g)),  # 2x2 packed tokens
))
ATTENTION_MODELS.register("sd3")(AttentionModel(  # joint attention: keys [image N, CLIP 77, T5 L]
    modules=lambda g: [(f"joint.{i}", b.attn, "image_first") for i, b in enumerate(g.transformer.transformer_blocks)],
    segments=lambda g: [(g.tokenizers[0], 77), (g.tokenizers[2], g.max_sequence_length)],
    token_grid=lambda g: tuple(n // g.transformer.config.patch_size for n in _latent_hw(g)),
))
ATTENTION_MODELS.register("wan")(AttentionModel(  # cross-attention (attn2): keys = UMT5 prompt tokens
    modules=lambda g: [(f"cross.{i}", b.attn2, "cross") for i, b in enumerate(g.transformer.blocks)],
    segments=lambda g: [(g.tokenizers[0], g.max_sequence_length)],
    token_grid=lambda g: tuple(n // p for n, p in zip(g.latent_shape()[1:], g.transformer.config.patch_size)),
))


def check_config(cfg) -> None:
    """Config-time check for ``psm.source=attention`` (``vipo.config`` calls it)."""
    name = cfg.generator.name
    if name == "toy":
        raise ValueError("psm.source=attention: the toy generator has no prompt tokens to attend to (a "
                         "class-conditional UNet whose label enters through the timestep embedding); use "
                         "psm.source=saliency or backbone in the toy world")
    if name not in ATTENTION_MODELS:
        raise ValueError(f"psm.source=attention: generator {name!r} has no attention capture; "
                         f"generators with one: {', '.join(ATTENTION_MODELS.names())}")


def attention_capture(generator, cfg, prompts: Sequence[str], num_steps: int, name: str) -> AttentionCapture:
    """A capture for registered generator ``name`` (``cfg``: the map config holding ``attention``)."""
    if getattr(generator, "transformer_2", None) is not None:  # hooks sit on `transformer` only
        raise ValueError("psm.source=attention does not capture Wan2.2 A14B's second (low-noise) expert yet; "
                         "use psm.source=backbone or saliency with two experts (TI2V-5B works)")
    return AttentionCapture(generator, ATTENTION_MODELS.get(name), cfg.attention, prompts, num_steps)


def attention_maps(images: Tensor, grid: tuple[int, ...], cfg: PSMConfig, *,
                   captured: Optional[AttentionCapture] = None, **_) -> Tensor:
    """Map source: the maps of a capture that ran during this rollout."""
    if captured is None:
        raise ValueError("psm.source=attention needs the attention captured during the rollout")
    return captured.maps(grid, cfg).to(images.device)  # [B, *grid]
