"""Optuna: concurrent workers on one SQLite study, resume after SIGKILL, pruning reports, best trial saved;
PostgreSQL storage in a slow test when a server can be started here."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tiny  # noqa: F401
from test_train import TINY
from vipo.hpo import StudySpec, build_study, finished, load_spec, objective_value

HERE = Path(__file__).parent


def write_spec(tmp_path: Path, n_trials: int, storage: str | None = None) -> Path:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue circle\na green star\na white line\n")
    base = [*TINY, "train.iterations=3", "eval.every=1", f"train.prompts={prompts}"]
    spec = {"name": "tiny", "metric": "eval/reward", "direction": "maximize", "n_trials": n_trials, "base": base,
            "space": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                      "psm.k": {"type": "int", "low": 1, "high": 3}},
            "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "median", "n_startup_trials": 2,
                                                               "n_warmup_steps": 0},
            "storage": storage, "heartbeat_seconds": 1}
    path = tmp_path / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def worker(spec: Path, root: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    return subprocess.Popen([sys.executable, str(HERE / "run_tiny.py"), "search", str(spec), str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_objective_value_weighted_sum():
    m = {"eval/reward": 0.5, "eval/shape_acc": 0.25}
    assert objective_value(m, "eval/reward") == 0.5
    assert objective_value(m, {"eval/reward": 1.0, "eval/shape_acc": 2.0}) == 1.0
    with pytest.raises(KeyError, match="eval/fd"):
        objective_value(m, "eval/fd")


def test_shipped_toy_study_spec_is_valid():
    from vipo.config import load

    spec = load_spec("toy")
    assert set(spec.space) == {"train.lr", "train.clip_range", "psm.k"}
    load(spec.base)


def test_two_workers_share_one_sqlite_study_and_resume_after_kill(tmp_path):
    spec_path, root = write_spec(tmp_path, n_trials=6), tmp_path / "optuna"
    a, b = worker(spec_path, root), worker(spec_path, root)
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = b.communicate(timeout=300)
    assert a.returncode == 0 and b.returncode == 0, out_a + out_b
    spec = load_spec(str(spec_path))
    study = build_study(spec, root)
    import optuna

    trials = study.get_trials(deepcopy=False)
    assert finished(study) >= 6
    assert not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(len(t.intermediate_values) >= 1 for t in complete)  # evaluations were reported
    best = json.loads((root / "tiny_best.json").read_text())
    assert best["value"] == max(t.value for t in complete)
    assert any(o.startswith("train.lr=") for o in best["overrides"])
    # kill a worker in the middle of a longer study, then start it again: the study continues to 9
    spec_path = write_spec(tmp_path, n_trials=9)
    c = worker(spec_path, root)
    deadline = time.time() + 120
    while finished(build_study(load_spec(str(spec_path)), root)) < 7 and time.time() < deadline:
        time.sleep(0.2)
    c.send_signal(signal.SIGKILL)
    c.wait()
    time.sleep(2.5)  # past the heartbeat grace period: the killed trial counts as failed and is retried
    d = worker(spec_path, root)
    out, _ = d.communicate(timeout=300)
    assert d.returncode == 0, out
    assert finished(build_study(load_spec(str(spec_path)), root)) >= 9
    assert "trials finished" in out


@pytest.mark.slow
def test_postgresql_storage(tmp_path):
    from slurm_env import postgres_server

    with postgres_server() as url:
        spec_path, root = write_spec(tmp_path, n_trials=4, storage=url), tmp_path / "optuna"
        a, b = worker(spec_path, root), worker(spec_path, root)
        out_a, _ = a.communicate(timeout=600)
        out_b, _ = b.communicate(timeout=600)
        assert a.returncode == 0 and b.returncode == 0, out_a + out_b
        assert finished(build_study(StudySpec(**{**load_spec(str(spec_path)).__dict__}), root)) >= 4
