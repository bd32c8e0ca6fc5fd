"""The trainer's checkpoints: saving (``last.pt``, the one before as ``prev.pt``, optimizer shards when sharded),
reading the newest good one, restoring optimizer, scheduler, EMA and metrics on resume. A mixin of
``vipo.train.Trainer``, which provides ``named``, ``optimizer``, ``scheduler``, ``ema``, ``reference``, ``fsdp``,
``run_dir``, ``cfg``, ``start`` and ``start_max_abs``."""

from __future__ import annotations

import os
from typing import Optional

import torch

from vipo import checkpoints as ckpts
from vipo import dist
from vipo.components import load_trainable
from vipo.records import atomic_torch_save, read_jsonl, truncate_jsonl


class CheckpointMixin:
    def _save(self, iteration: int, record: Optional[dict] = None) -> None:
        """Collective when sharded (every rank gathers the whole weights); rank 0 writes ``last.pt`` (the one
        before becomes ``prev.pt``). A checkpoint that breaks the good-checkpoint rule (``vipo.checkpoints``) is
        not written: the run stops with ``DivergedError`` and keeps its last good checkpoint."""
        trainable = {k: dist.full(p.detach()).cpu() for k, p in self.named.items()}
        ema = self.ema.state_dict() if self.ema else None
        reference = self.reference.state_dict() if self.reference else None
        state = {"iteration": iteration, "trainable": trainable, "scheduler": self.scheduler.state_dict(),
                 "optimizer": None if self.fsdp else self.optimizer.state_dict(), "ema": ema,
                 "reference": reference, "world_size": dist.world_size(), "fsdp": self.fsdp,
                 "start_max_abs": self.start_max_abs}
        why = ckpts.problem(state, record)  # every rank holds the same weights and record: all decide alike
        if why:
            raise ckpts.DivergedError(f"not saving the checkpoint of iteration {iteration}: {why}; {self._ckpt_note()}")
        if self.fsdp:  # optimizer state stays sharded: one file per rank (and the one before), written before last.pt
            shard = self.run_dir / f"checkpoints/optim_rank{dist.rank()}.pt"
            before = shard.with_suffix(".prev.pt")
            atomic_torch_save(shard, {"iteration": iteration, "optimizer": self.optimizer.state_dict()},
                              before_replace=lambda: os.replace(shard, before) if shard.exists() else None)
            dist.barrier()
        if not dist.is_main():
            return
        ckpts.save(self.run_dir, state, keep_iteration=self.cfg.train.keep_checkpoints)

    def _read_checkpoint(self) -> dict:
        """The newest good checkpoint (``last.pt``, else ``prev.pt`` with a message): its weights loaded."""
        state, path = ckpts.load_good(self.run_dir, quiet=not dist.is_main())
        load_trainable(self.named, state["trainable"], path)
        return state

    def _restore(self, state: dict) -> None:
        if state.get("fsdp"):
            if state.get("world_size") != dist.world_size() or not self.fsdp:
                raise ValueError(f"{self.run_dir} was saved by a sharded run on {state.get('world_size')} processes; "
                                 "resume it with the same launch configuration")
            path = self.run_dir / f"checkpoints/optim_rank{dist.rank()}.pt"
            shard = torch.load(path, map_location="cpu", weights_only=False)
            if shard["iteration"] != state["iteration"] and path.with_suffix(".prev.pt").exists():
                shard = torch.load(path.with_suffix(".prev.pt"), map_location="cpu", weights_only=False)
            if shard["iteration"] != state["iteration"]:
                raise ValueError(f"{self.run_dir}: optimizer shard of rank {dist.rank()} is from iteration "
                                 f"{shard['iteration']}, the checkpoint from {state['iteration']}")
            self.optimizer.load_state_dict(shard["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        if self.reference and state["reference"]:
            self.reference.load_state_dict(state["reference"])
        self.start = state["iteration"] + 1
        if dist.is_main():
            rows = [r for r in read_jsonl(self.run_dir / "metrics.jsonl") if r["iteration"] <= state["iteration"]]
            truncate_jsonl(self.run_dir / "metrics.jsonl", rows)
            print(f"[vipo] resuming {self.run_dir} at iteration {self.start}", flush=True)

    def _ckpt_note(self) -> str:
        path = self.run_dir / ckpts.CHECKPOINT
        if path.exists():
            return f"the run stopped; last good checkpoint: {path} (a re-run resumes from it)"
        return "the run stopped before its first checkpoint (a re-run starts it over)"
