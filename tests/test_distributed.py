"""Two CPU processes (gloo) through `accelerate launch`: rewards are gathered for group statistics, the
advantages equal the single-process result on the gathered batch, and gradients are synchronised."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tiny
from vipo.advantage import redistribute

HERE = Path(__file__).parent
ROOT = HERE.parent


def test_two_process_training_is_synchronised(tmp_path):
    (tmp_path / "prompts.txt").write_text("\n".join(tiny.PROMPTS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "experiments/accelerate/cpu2.yaml"), "--main_process_port", "29517",
           str(HERE / "dist_check.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == 2 and r1["world"] == 2
    for it in range(2):
        a, b = r0["seen"][it], r1["seen"][it]
        # both ranks saw the whole gathered batch: 2 ranks x 2 prompts x 4 samples, 4 distinct groups
        assert a["rewards"].shape == (16,) and torch.equal(a["rewards"], b["rewards"])
        assert torch.equal(a["group_ids"], b["group_ids"]) and a["group_ids"].unique().numel() == 4
        # ... and the advantages are what one process computes on that batch
        single = redistribute(a["mode"], a["rewards"], a["group_ids"], a["maps"], **a["kw"])
        torch.testing.assert_close(a["adv"], single, rtol=0, atol=0)
        torch.testing.assert_close(b["adv"], single, rtol=0, atol=0)
        # the global std mixes both ranks' rewards: it differs from the std of rank 0's half alone
        assert float(a["rewards"].std(unbiased=False)) != pytest.approx(float(a["rewards"][:8].std(unbiased=False)), rel=1e-3)
    # gradients were averaged: the replicas stay identical after two optimizer steps per iteration
    for k, v in r0["trainable"].items():
        torch.testing.assert_close(v, r1["trainable"][k], rtol=0, atol=0)
    start = tiny.TinyGenerator()
    moved = sum(float((r0["trainable"][k] - p).abs().sum()) for k, p in start.named_parameters())
    assert moved > 0
