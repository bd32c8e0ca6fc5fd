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


def launch(tmp_path, *extra, port=29517):
    (tmp_path / "prompts.txt").write_text("\n".join(tiny.PROMPTS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "experiments/accelerate/cpu2.yaml"), "--main_process_port", str(port),
           str(HERE / "dist_check.py"), str(tmp_path), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = "fsdp" if extra else "ddp"
    return [torch.load(tmp_path / f"{name}_rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    return launch(tmp_path_factory.mktemp("ddp"))


def test_two_process_training_is_synchronised(ddp):
    r0, r1 = ddp
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


def test_fsdp_shards_and_matches_the_data_parallel_run(ddp, tmp_path):
    """FSDP2 over the same two processes: the weights are really sharded, and training gives the same
    weights as the data-parallel run (same rollouts, same averaged gradients) up to float round-off."""
    f0, f1 = launch(tmp_path, "train.fsdp=true", port=29518)
    # the tiny generator's network (net.*) is sharded; its prompt embedding lies outside it and stays replicated
    # (its gradients are averaged by hand), so both paths are exercised
    assert f0["fsdp"] and set(f0["sharded"]) == {k for k in f0["trainable"] if k.startswith("net.")}
    assert "embed.weight" in f0["trainable"] and "embed.weight" not in f0["sharded"]
    for k, v in ddp[0]["trainable"].items():
        torch.testing.assert_close(f0["trainable"][k], v, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(f1["trainable"][k], v, rtol=1e-4, atol=1e-6)
    ckpt = torch.load(tmp_path / "fsdp/checkpoints/last.pt", weights_only=False)
    assert ckpt["fsdp"] and ckpt["world_size"] == 2 and ckpt["optimizer"] is None
    assert (tmp_path / "fsdp/checkpoints/optim_rank0.pt").exists() and (tmp_path / "fsdp/checkpoints/optim_rank1.pt").exists()
    for k, v in ckpt["trainable"].items():  # the saved weights are whole tensors, not shards
        assert v.shape == f0["trainable"][k].shape
        torch.testing.assert_close(v, f0["trainable"][k])


@pytest.mark.slow  # two 2-process FSDP launches (~25 s on 2 shared cores)
def test_fsdp_run_resumes_with_the_same_launch_only(tmp_path):
    launch(tmp_path, "train.fsdp=true", port=29519)
    run_dir = tmp_path / "fsdp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    single = subprocess.run([sys.executable, str(HERE / "run_tiny.py"), f"resume={run_dir}", "train.iterations=3"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode != 0 and "sharded run on 2 processes" in single.stderr
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "experiments/accelerate/cpu2.yaml"), "--main_process_port", "29520",
           str(HERE / "run_tiny.py"), f"resume={run_dir}", "train.iterations=3"]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming" in again.stdout
    import json

    iters = [json.loads(line)["iteration"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert iters == [0, 1, 2]
    assert torch.load(run_dir / "checkpoints/optim_rank1.pt", weights_only=False)["iteration"] == 2
