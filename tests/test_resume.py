"""A run killed with SIGKILL and resumed gives the same metrics as an uninterrupted run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from test_train import TINY

HERE = Path(__file__).parent
VOLATILE = ("time_", "wall_seconds")


def train(tmp_path: Path, run_id: str, *extra: str, kill_at: int | None = None, resume: bool = False):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue circle\na green star\na white line\n")
    args = [f"resume={tmp_path / run_id}"] if resume else [
        *TINY, "reward.name=kill_switch", f"train.prompts={prompts}", f"results_root={tmp_path}", f"run_id={run_id}",
        "train.iterations=7", "train.checkpoint_every=2", "eval.every=3", "train.ema_decay=0.9", "train.kl_coef=0.1",
        "train.lr_schedule=cosine", "train.warmup_iters=2", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
    if kill_at is not None:
        env["VIPO_TEST_KILL_AT"] = str(kill_at)
    return subprocess.run([sys.executable, str(HERE / "run_tiny.py"), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def read(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    full = train(tmp_path, "full")
    assert full.returncode == 0, full.stderr
    # reward calls: 1 per iteration plus 1 per evaluation (iteration -1, 2, 5, 6); call 7 is iteration 4's
    # rollout, after the checkpoint of iteration 3 and before that of iteration 5
    killed = train(tmp_path, "cut", kill_at=7)
    assert killed.returncode == -9, killed.stderr
    ckpt = torch.load(tmp_path / "cut/checkpoints/last.pt", weights_only=False)
    assert ckpt["iteration"] == 3
    assert not (tmp_path / "cut/summary.json").exists()
    resumed = train(tmp_path, "cut", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    a, b = read(tmp_path / "full/metrics.jsonl"), read(tmp_path / "cut/metrics.jsonl")
    assert [r["iteration"] for r in b] == [-1, 0, 1, 2, 3, 4, 5, 6]
    assert stable(a) == stable(b)
    sa = json.loads((tmp_path / "full/summary.json").read_text())
    sb = json.loads((tmp_path / "cut/summary.json").read_text())
    assert {k: v for k, v in sa.items() if k not in ("run_id", "wall_seconds_this_session", "seconds_per_iteration")} \
        == {k: v for k, v in sb.items() if k not in ("run_id", "wall_seconds_this_session", "seconds_per_iteration")}


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    assert train(tmp_path, "done", "train.iterations=2").returncode == 0
    before = (tmp_path / "done/metrics.jsonl").read_text()
    again = train(tmp_path, "done", resume=True)
    assert again.returncode == 0
    assert (tmp_path / "done/metrics.jsonl").read_text() == before
