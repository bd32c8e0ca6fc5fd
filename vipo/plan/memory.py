"""Memory of a training step, accounted on the meta device.

Activations: one forward with autograd on the meta device, with ``torch.autograd.graph.saved_tensors_hooks``
recording every tensor autograd keeps for the backward (deduplicated by storage; parameters and their views
excluded), split by transformer block (each entry of the model's top-level ``ModuleList``s, the unit that
gradient checkpointing and FSDP wrap):

- without gradient checkpointing the forward keeps everything: ``saved``;
- with gradient checkpointing a block keeps only its inputs, and during the backward one block is recomputed:
  ``outside + block_inputs + max_block``.
Attention is accounted as a fused kernel keeps it (``flash_like_attention``). On a tiny FLUX this predicts the
CPU's measured activation peak within 6% and the whole step's peak within 2% (tests/test_plan_memory.py).

States: parameters in their dtype, gradients like the trained parameters, AdamW's two moments like the
trained parameters (``torch.optim.AdamW`` allocates them with ``zeros_like``), each divided by the FSDP degree
for the sharded network, plus two gathered blocks (the one running and the prefetched one) under FSDP.
``tests/test_plan_memory.py`` checks this accounting against a real forward/backward/step on the CPU.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, List

import torch
from torch import nn
from torch.nn import functional as F

GiB = 1024 ** 3


class _FlashLikeSDPA(torch.autograd.Function):
    """Attention that keeps what a fused kernel keeps for the backward: q, k, v, the output and the row
    log-sum-exp ``[B, H, S]`` (never the ``S x S`` probabilities the math fallback of the meta device saves)."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])  # [B, H, S, d_v]
        lse = q.new_empty(*q.shape[:-1], dtype=torch.float32)  # [B, H, S]
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)


@contextmanager
def flash_like_attention():
    """Within: ``F.scaled_dot_product_attention`` keeps a fused kernel's saved tensors (for accounting only:
    its output values are not attention)."""
    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, *args, **kwargs):
        return _FlashLikeSDPA.apply(query, key, value)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def blocks_of(model: nn.Module) -> List[nn.Module]:
    """The repeated blocks: every entry of the model's top-level ModuleLists."""
    return [b for child in model.children() if isinstance(child, nn.ModuleList) for b in child]


def _key(t: torch.Tensor):
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return id(t)


def _nbytes(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size()


@dataclass
class Activations:
    saved: int  # bytes autograd keeps for the backward, whole forward
    outside: int  # of which outside the blocks
    max_block: int  # the largest block's share
    block_inputs: int  # bytes of the blocks' tensor inputs (what checkpointing keeps)

    def peak(self, checkpointing: bool) -> int:
        if checkpointing:
            return self.outside + self.block_inputs + self.max_block
        return self.saved

    def scaled(self, k: float) -> "Activations":
        return Activations(*(int(v * k) for v in asdict(self).values()))


def activations(model: nn.Module, run: Callable[[], object]) -> Activations:
    """Account what autograd saves while ``run()`` does one forward of ``model`` (meta or real tensors)."""
    params = {_key(p) for p in model.parameters()} | {_key(b) for b in model.buffers()}
    seen: dict = {}
    where = {"block": None}
    per_block: dict = {}
    inputs: dict = {}

    def pack(t):
        k = _key(t)
        if k not in params and k not in seen:
            seen[k] = _nbytes(t)
            if where["block"] is not None:
                per_block[where["block"]] = per_block.get(where["block"], 0) + seen[k]
        return t

    def pre(i):
        def hook(module, args, kwargs):
            where["block"] = i
            for a in list(args) + list(kwargs.values()):
                for t in a if isinstance(a, (tuple, list)) else [a]:
                    if isinstance(t, torch.Tensor) and _key(t) not in params:
                        inputs.setdefault(_key(t), _nbytes(t))
        return hook

    def post(module, args, out):
        where["block"] = None

    with ExitStack() as stack:
        for i, b in enumerate(blocks_of(model)):
            h1 = b.register_forward_pre_hook(pre(i), with_kwargs=True)
            h2 = b.register_forward_hook(post)
            stack.callback(h1.remove)
            stack.callback(h2.remove)
        stack.enter_context(flash_like_attention())
        stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
        run()
    total = sum(seen.values())
    inside = sum(per_block.values())
    return Activations(saved=total, outside=total - inside, max_block=max(per_block.values(), default=0),
                       block_inputs=sum(inputs.values()))


def param_bytes(params: Iterable[torch.Tensor]) -> int:
    return sum(p.numel() * p.element_size() for p in params)


@dataclass
class StateBytes:
    weights: int  # the trained network's parameters (sharded share under FSDP)
    grads: int
    optimizer: int  # AdamW: two moments per trained element + one fp32 step counter per trained tensor

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer


def state_bytes(model: nn.Module, fsdp: int = 1, optimizer_states: int = 2) -> StateBytes:
    """Weights, gradients and AdamW moments of ``model`` as configured (``requires_grad`` marks what trains)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    weights = param_bytes(model.parameters())
    grads = param_bytes(trained)
    optimizer = optimizer_states * grads + (4 * len(trained) if optimizer_states else 0)
    if fsdp > 1:
        gathered = 2 * max((param_bytes(b.parameters()) for b in blocks_of(model)), default=0)
        return StateBytes(weights=weights // fsdp + gathered, grads=grads // fsdp, optimizer=optimizer // fsdp)
    return StateBytes(weights=weights, grads=grads, optimizer=optimizer)
