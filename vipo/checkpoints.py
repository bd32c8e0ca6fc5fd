"""Checkpoints that survive one bad file, and the rule for a good one.

A run keeps two checkpoints: ``checkpoints/last.pt`` and the one before it, ``checkpoints/prev.pt``. A save
writes a temporary file, fsyncs it, moves ``last.pt`` to ``prev.pt`` and the temporary file to ``last.pt``
(each move atomic), so a crash at any point leaves at least one complete checkpoint. On resume, ``last.pt`` is
used if it is readable and good, else ``prev.pt`` with a message naming the bad file and why.

**A good checkpoint** (``problem`` returns None):
1. every tensor it holds (trained weights, EMA, reference weights, optimizer state) is finite;
2. the training record of the iteration it saves is finite (``reward_mean``, ``reward_std``, ``grad_norm``; a NaN
   reward, loss or gradient already stops the iteration before its record is written);
3. its weights did not diverge: the largest absolute trained weight is at most ``DIVERGED_FACTOR`` (100) times
   the larger of 1 and the largest absolute trained weight at the start of the run (``start_max_abs``, saved in
   every checkpoint).
The trainer checks the rule before every save: a checkpoint that breaks it is not written (``last.pt`` stays the
last good one) and the run stops with ``DivergedError`` (``failed.json`` names the iteration and the reason).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import torch

from vipo.records import atomic_torch_save
from vipo.update import NonFiniteError

CHECKPOINT = "checkpoints/last.pt"
PREVIOUS = "checkpoints/prev.pt"
DIVERGED_FACTOR = 100.0
RECORD_KEYS = ("reward_mean", "reward_std", "grad_norm")  # the same on every process of a run


class DivergedError(NonFiniteError):
    """A checkpoint would break the good-checkpoint rule: the run stops and keeps its last good checkpoint."""


class CheckpointError(RuntimeError):
    """No readable, good checkpoint to resume from (the message names every file tried and why)."""


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def max_abs(weights: dict) -> float:
    """The largest absolute value over a dict of tensors (0.0 when empty)."""
    return max((float(w.detach().abs().max()) for w in weights.values() if w.numel()), default=0.0)


def problem(state: dict, record: Optional[dict] = None) -> Optional[str]:
    """Why ``state`` is not a good checkpoint (a phrase), or None when it is (see the module docstring)."""
    for part in ("trainable", "ema", "reference", "optimizer"):
        for t in _tensors(state.get(part)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"its {part} tensors hold NaN or infinite values"
    for k in RECORD_KEYS:
        v = (record or {}).get(k)
        if isinstance(v, (int, float)) and not math.isfinite(v):
            return f"{k} of iteration {state.get('iteration')} is {v}"
    start = state.get("start_max_abs")
    if start is not None and state.get("trainable"):
        now, limit = max_abs(state["trainable"]), DIVERGED_FACTOR * max(1.0, float(start))
        if now > limit:
            return (f"the weights diverged: largest |w| = {now:.3g} > {DIVERGED_FACTOR:g} x max(1, {float(start):.3g})"
                    " at the start")
    return None


def save(run_dir: Path, state: dict, keep_iteration: bool = False) -> None:
    """Write ``last.pt`` (the previous one becomes ``prev.pt``); with ``keep_iteration`` also ``iter_<n>.pt``."""
    run_dir = Path(run_dir)
    last, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    atomic_torch_save(last, state, before_replace=lambda: os.replace(last, prev) if last.exists() else None)
    if keep_iteration:
        atomic_torch_save(run_dir / f"checkpoints/iter_{state['iteration']:05d}.pt", state)


def exists(run_dir: Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).exists() or (Path(run_dir) / PREVIOUS).exists()


def load_good(run_dir: Path, quiet: bool = False) -> tuple[dict, Path]:
    """The newest readable, good checkpoint of ``run_dir`` (``last.pt``, else ``prev.pt``) and its path.

    Falling back prints one line naming the bad file; ``CheckpointError`` when none is usable."""
    run_dir = Path(run_dir)
    bad: list[str] = []
    for path in (run_dir / CHECKPOINT, run_dir / PREVIOUS):
        if not path.exists():
            if path.name == "last.pt":
                bad.append(f"{path} is missing")
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "trainable" not in state or "iteration" not in state:
                raise ValueError("not a vipo checkpoint")
        except Exception as e:  # truncated zip, garbage bytes, a pickle of something else
            bad.append(f"{path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
            continue
        why = problem(state)
        if why:
            bad.append(f"{path} is not a good checkpoint ({why})")
            continue
        if bad and not quiet:
            print(f"[vipo] {'; '.join(bad)}; using {path} (iteration {state['iteration']})", flush=True)
        return state, path
    raise CheckpointError(f"cannot resume {run_dir}: no usable checkpoint ({'; '.join(bad)})")
