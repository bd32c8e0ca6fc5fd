"""The core install alone (``pip install .``, no dev extra) runs the documented commands: help, a training run
with the default tracker (W&B offline, no account), and `make tables`' builder with its intervals (scipy)."""

import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _sh(cmd, cwd, env, timeout=3600):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_core_dependencies_alone_run_the_documented_commands(tmp_path):
    # a copy of the tracked files (pip builds in the source folder; the checkout stays clean)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    src = tmp_path / "src"
    with tarfile.open(tmp_path / "src.tar", "w") as tar:
        for f in filter(None, files):
            if (ROOT / f.decode()).is_file():
                tar.add(ROOT / f.decode(), arcname=f.decode())
    with tarfile.open(tmp_path / "src.tar") as tar:
        tar.extractall(src)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # HOME stays: pip's cache of wheels lives there (a cold cache downloads ~1 GB; a warm one installs in minutes)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", WANDB_CONFIG_DIR=str(tmp_path / "wb"),
               WANDB_CACHE_DIR=str(tmp_path / "wbcache"))
    env.pop("WANDB_API_KEY", None)
    _sh([py, "-m", "pip", "install", "-q", "torch==2.13.0"], src, env)  # the Makefile's pin (CPU wheel)
    _sh([py, "-m", "pip", "install", "-q", "."], src, env)
    installed = {line.split("==")[0].lower() for line in _sh([py, "-m", "pip", "freeze"], src, env).splitlines()}
    assert "pytest" not in installed and "scikit-learn" not in installed  # the dev extra is not there
    assert "scipy" in installed

    run_dir = tmp_path / "cwd"  # anywhere but the source folder: the installed package is what runs
    run_dir.mkdir()
    help_text = _sh([py, str(src / "train.py"), "--help"], run_dir, env)
    assert "Experiments (experiment=<name>):" in help_text and "toy_redness" in help_text
    assert "cells: k-1, k-2, k-3, k-4, k-5, k-8" in _sh([py, str(src / "sweep.py"), "--help"], run_dir, env)
    # the default tracker is W&B, offline: a run needs no account
    out = _sh([py, str(src / "train.py"), "experiment=toy_demo", "train.iterations=1", "eval.every=0",
               "eval.num_samples=8", f"results_root={tmp_path / 'runs'}", "run_id=r"], src, env)
    assert "[vipo] done" in out and list((tmp_path / "runs/r/wandb").glob("offline-run-*"))
    # `make tables` on the committed study, and the t interval (scipy) by hand: mean 2.5, s = 1.2910,
    # t_{0.975, 3} = 3.18245 -> half width 3.18245 * 1.2910 / 2 = 2.0543
    _sh([py, "-m", "analysis.tables", str(src / "results/toy_study"), "--out", str(tmp_path / "tables")], src, env)
    assert list((tmp_path / "tables").rglob("*.md"))
    est = json.loads(_sh([py, "-c", "import json; from analysis.stats import t_interval; "
                                    "print(json.dumps(t_interval([1, 2, 3, 4])))"], run_dir, env))
    assert est[0] == 2.5 and math.isclose(est[2] - 2.5, 3.182446 * math.sqrt(5 / 3) / 2, rel_tol=1e-5)
