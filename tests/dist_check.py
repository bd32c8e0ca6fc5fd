"""Run under `accelerate launch --config_file experiments/accelerate/cpu2.yaml tests/dist_check.py OUT_DIR`:
trains the tiny generator for 2 iterations with 2 processes and dumps, per rank, what group statistics saw
and the final trained weights, for tests/test_distributed.py to check."""

import sys
from pathlib import Path

import torch

import tiny  # noqa: F401
import vipo.train as train_mod
from test_train import TINY
from vipo import dist
from vipo.config import load

out = Path(sys.argv[1])
extra = sys.argv[2:]  # e.g. train.fsdp=true
seen = []
_redistribute = train_mod.redistribute


def recording(mode, rewards, group_ids, maps, **kw):
    adv = _redistribute(mode, rewards, group_ids, maps, **kw)
    seen.append({"rewards": rewards.clone(), "group_ids": group_ids.clone(), "maps": maps.clone(), "adv": adv.clone(),
                 "kw": kw, "mode": mode})
    return adv


train_mod.redistribute = recording
prompts = out / "prompts.txt"
run_id = "fsdp" if "train.fsdp=true" in extra else "ddp"
cfg, raw = load([*TINY, "backbone.name=tiny_test", "train.iterations=2", "advantage.std_mode=global",
                 "eval.every=0", f"train.prompts={prompts}", f"results_root={out}", f"run_id={run_id}",
                 "train.lr=1e-2", "train.ema_decay=0.5", *extra])
trainer = train_mod.Trainer(cfg, raw)
trainer.run()
trainable = {k: dist.full(p.detach()).clone() for k, p in trainer.named.items()}
torch.save({"seen": seen, "trainable": trainable, "world": dist.world_size(), "fsdp": trainer.fsdp,
            "sharded": [k for k, p in trainer.named.items() if dist.is_sharded(p)]},
           out / f"{run_id}_rank{dist.rank()}.pt")
dist.barrier()
