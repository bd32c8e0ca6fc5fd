"""Against a real single-node SLURM (`make test-slurm`; skipped elsewhere): a study part as one array job with
`status` while it runs and a re-run that submits nothing, a run requeued at its time limit that ends with the
metrics of an uninterrupted run, a 2-task job whose ranks train like `accelerate launch` with 2 processes, and an
Optuna search with 2 array workers on PostgreSQL."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slurm_env import postgres_server, queued, slurm_reason
from test_resume import read, stable
from test_study import _tiny_study
from test_train import TINY
from vipo.launchers import Job, format_status, get_launcher, read_job, states
from vipo.launchers.slurm import follow
from vipo.study import run_study, study_jobs

HERE = Path(__file__).parent
ROOT = HERE.parent
RUNNER = [sys.executable, str(HERE / "run_tiny.py")]
pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def _cluster(monkeypatch):
    reason = slurm_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_study_part_is_one_array_job_with_status_while_it_runs_and_no_duplicate(tmp_path, capsys):
    spec, root = _tiny_study(tmp_path), tmp_path / "study"
    slurm = get_launcher("slurm", ["poll_s=0.5"])
    runs = run_study(spec, root=root, launcher=slurm)
    out = capsys.readouterr().out
    assert "3 (reward, ablation, cell, seed) entries -> 2 unique runs" in out and "submitted 2 run(s) as array job" in out
    ids = [read_job(r.cell.run_dir)["job_id"] for r in runs]
    assert len({i.split("_")[0] for i in ids}) == 1  # one array job
    jobs, _ = study_jobs(spec, root=root)
    first = states(jobs)
    assert {s.state for s in first} <= {"pending", "running", "done"} and any(s.state != "done" for s in first)
    text = format_status(first, root, "study tiny")
    print(text)
    for s, i in zip(first, ids):
        assert f"slurm job {i}" in text and s.submitted in text
    # the same command again while they are queued or running: nothing new is submitted
    before = set(queued())
    run_study(spec, root=root, launcher=slurm)
    out = capsys.readouterr().out
    busy = sum(s.state in ("pending", "running") for s in first)
    assert "as array job" not in out and set(queued()) <= before
    assert f"0 to run, {busy} pending/running elsewhere" in out or "2 done, 0 to run" in out
    assert follow(jobs, "study tiny", poll_s=0.5) == []
    assert [s.state for s in states(jobs)] == ["done", "done"]
    assert [read_job(r.cell.run_dir)["job_id"] for r in runs] == ids  # still the first submission's jobs
    capsys.readouterr()
    run_study(spec, root=root, launcher=slurm)
    assert "2 runs, 2 done, 0 to run" in capsys.readouterr().out


def _long_run(tmp_path: Path, run_id: str) -> list[str]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue circle\na green star\na white line\n")
    return [*TINY, "reward.name=kill_switch", f"train.prompts={prompts}", f"results_root={tmp_path}", f"run_id={run_id}", "train.iterations=400",
            "sde.num_steps=6", "train.checkpoint_every=1000", "eval.every=100", "train.ema_decay=0.9", "train.lr_schedule=cosine"]


def test_a_run_cut_by_its_time_limit_checkpoints_requeues_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    """timeout_min=1, signal_delay_s=10: SLURM signals the job (SIGUSR2) 20-50 s after its start (it looks every 30 s
    and signals up to 30 s early); the run saves a checkpoint after its current iteration although its own schedule
    checkpoints only at the end, submitit requeues the job, and the run resumes from that checkpoint. The run takes
    longer than 50 s, so it is cut at least once. Once it has been cut, the test gives the requeued job a 10-minute
    limit, so that a loaded test machine (whose start-up can eat a 1-minute job) still finishes it. The
    uninterrupted run trains beside it on this machine. The job's reward (``kill_switch``: the redness score) sleeps
    0.2 s per call ($VIPO_TEST_SLEEP, exported to the job), so the run lasts > 80 s however idle the machine is; the
    reference runs without the sleep (the sleep changes no number)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.Popen([*RUNNER, *_long_run(tmp_path, "full")], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.STDOUT)
    monkeypatch.setenv("VIPO_TEST_SLEEP", "0.2")
    slurm = get_launcher("slurm", ["timeout_min=1", "signal_delay_s=10", "max_num_timeout=30", "poll_s=1"])
    job = Job(tmp_path / "cut", RUNNER, _long_run(tmp_path, "cut"))
    t0 = time.time()
    slurm.submit([job], "requeue")
    job_id = read_job(job.run_dir)["job_id"]
    log = tmp_path / "cut" / "train.log"
    while "(restart 1)" not in (log.read_text() if log.exists() else "") and time.time() - t0 < 600:
        assert not (tmp_path / "cut" / "summary.json").exists(), "the run finished before its time limit cut it"
        time.sleep(1)
    cut_after = time.time() - t0
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True)
    assert follow([job], "requeue", poll_s=1) == []
    print(f"requeued run: cut after {cut_after:.0f} s, done after {time.time() - t0:.0f} s")
    assert reference.wait(timeout=600) == 0
    text = log.read_text()
    assert "stop requested: checkpoint saved after iteration" in text and "resuming" in text, text[-3000:]
    cut_at = int(text.split("stop requested: checkpoint saved after iteration ")[1].split("/")[0])
    assert 0 < cut_at < 400
    assert f"resuming {tmp_path / 'cut'} at iteration {cut_at}" in text
    a, b = read(tmp_path / "full" / "metrics.jsonl"), read(tmp_path / "cut" / "metrics.jsonl")
    assert [r["iteration"] for r in b] == [r["iteration"] for r in a] == list(range(-1, 400))
    assert stable(b) == stable(a)
    sa, sb = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "cut"))
    drop = ("run_id", "wall_seconds_this_session", "seconds_per_iteration")
    assert {k: v for k, v in sa.items() if k not in drop} == {k: v for k, v in sb.items() if k not in drop}


def test_two_task_job_forms_a_gloo_group_and_trains_like_accelerate_launch(tmp_path):
    """tasks_per_node=2: each task gets RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from the allocation and
    vipo.dist joins the group unchanged; one iteration gives the weights `accelerate launch` (2 CPU processes) gives."""
    outs = {k: tmp_path / k for k in ("slurm", "accelerate")}
    for out in outs.values():
        out.mkdir()
        (out / "prompts.txt").write_text("a red square\na blue circle\na green star\na white line\n")
    check = [sys.executable, str(HERE / "dist_check.py")]
    slurm = get_launcher("slurm", ["tasks_per_node=2", "cpus_per_task=1", "poll_s=1"])
    job = Job(outs["slurm"], check, [str(outs["slurm"]), "train.iterations=1"], resumable=False, done_file=None)
    slurm.submit([job], "dist")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "experiments/accelerate/cpu2.yaml"), "--main_process_port", "29531",
           str(HERE / "dist_check.py"), str(outs["accelerate"]), "train.iterations=1"]
    acc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert acc.returncode == 0, acc.stdout[-2000:] + acc.stderr[-2000:]
    follow([job], "dist", poll_s=1)
    log = (outs["slurm"] / "train.log").read_text()
    assert (outs["slurm"] / "ddp_rank1.pt").exists(), log[-3000:] + (outs["slurm"] / "train.rank1.log").read_text()
    got = [torch.load(outs["slurm"] / f"ddp_rank{r}.pt", weights_only=False) for r in (0, 1)]
    ref = [torch.load(outs["accelerate"] / f"ddp_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [g["world"] for g in got] == [2, 2]
    assert "task 0" in log and "task 1" in (outs["slurm"] / "train.rank1.log").read_text()
    for r in (0, 1):
        torch.testing.assert_close(got[r]["seen"][0]["rewards"], ref[r]["seen"][0]["rewards"], rtol=0, atol=0)
        for k, v in ref[r]["trainable"].items():
            torch.testing.assert_close(got[r]["trainable"][k], v, rtol=0, atol=0)
    # the update moved the weights (the comparison is not between two untouched copies)
    import tiny

    start = dict(tiny.TinyGenerator().named_parameters())
    assert sum(float((got[0]["trainable"][k] - p.detach()).abs().sum()) for k, p in start.items()) > 0


def test_optuna_search_with_two_array_workers_on_postgresql(tmp_path, capsys):
    from test_hpo import write_spec
    from vipo.hpo import build_study, finished, load_spec, submit_search

    with postgres_server() as url:
        spec_path, root = write_spec(tmp_path, n_trials=6, storage=url), tmp_path / "optuna"
        slurm = get_launcher("slurm", ["poll_s=1", "wait=true"])
        submit_search(str(spec_path), [], root, workers=2, launcher=slurm, runner=[*RUNNER, "search"])
        out = capsys.readouterr().out
        assert "submitted 2 run(s) as array job" in out
        study = build_study(load_spec(str(spec_path)), root)
        import optuna

        trials = study.get_trials(deepcopy=False)
        assert finished(study) >= 6 and not [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
        logs = [(root / "tiny_workers" / f"w{i}" / "train.log").read_text() for i in (0, 1)]
        assert all("[search] tiny:" in log and "storage postgresql" in log for log in logs), logs
        ids = [read_job(root / "tiny_workers" / f"w{i}")["job_id"] for i in (0, 1)]
        assert ids[0].split("_")[0] == ids[1].split("_")[0] and {i.split("_")[1] for i in ids} == {"0", "1"}
        best = json.loads((root / "tiny_best.json").read_text())
        assert best["value"] == max(t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
