"""One behavioural suite for every launcher (local pool, SLURM): a 2-cell x 2-seed sweep runs, every run folder
records its job, `status` reads done / failed with the last log line, a re-run submits nothing new, a cut run is
resumed (same metrics as before it was cut), and a run busy elsewhere is never started twice. The SLURM variant
runs under `make test-slurm` against a real single-node SLURM; elsewhere it skips with one line."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from slurm_env import slurm_reason
from test_resume import read, stable
from test_sweep import tiny_extra
from vipo.config import ConfigError
from vipo.launchers import format_status, get_launcher, load_options, read_job, states, write_job
from vipo.sweep import run_sweep, sweep_jobs

HERE = Path(__file__).parent
RUNNER = [sys.executable, str(HERE / "run_tiny.py")]
LAUNCHER_FILES = sorted(p.stem for p in (HERE.parent / "experiments" / "launcher").glob("*.yaml"))


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def launcher(request):
    if request.param == "slurm":
        reason = slurm_reason()
        if reason:
            pytest.skip(reason)
        return get_launcher("slurm", ["wait=true", "poll_s=0.5"])
    return get_launcher("local", workers=2)


@pytest.fixture(autouse=True)
def _tiny_on_path(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")]))


def test_sweep_records_jobs_reports_status_and_never_runs_twice(launcher, tmp_path, capsys):
    root, extra = tmp_path / "sweep", [*tiny_extra(tmp_path), "train.iterations=4", "train.checkpoint_every=2",
                                     "train.keep_checkpoints=true", "eval.every=2"]
    cells = run_sweep("psm_target", [0, 1], extra, root=root, runner=RUNNER, launcher=launcher)
    assert len(cells) == 4 and all((c.run_dir / "summary.json").exists() for c in cells)
    for c in cells:  # every run folder says which launcher ran it, the job id and when it was submitted
        rec = read_job(c.run_dir)
        assert rec["launcher"] == launcher.name and rec["job_id"] and rec["host"]
        assert datetime.fromisoformat(rec["submitted"]).year >= 2024
    if launcher.name == "slurm":  # one array job: <array id>_<task>
        ids = [read_job(c.run_dir)["job_id"] for c in cells]
        assert len({i.split("_")[0] for i in ids}) == 1 and sorted(i.split("_")[1] for i in ids) == ["0", "1", "2", "3"]
    jobs = sweep_jobs("psm_target", [0, 1], extra, root, RUNNER)
    text = format_status(states(jobs), root, "psm_target")
    assert "4 runs: 4 done, 0 running, 0 pending, 0 failed" in text
    assert all(read_job(c.run_dir)["job_id"] in text for c in cells)

    if launcher.name == "local":  # progress: how many ended, minutes, and the time left at the rate so far
        done = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[sweep] done")]
        assert len(done) == 4 and all(" left]" in ln for ln in done[:3]) and "[4/4, " in done[3]
        assert " left" not in done[3]

    # a re-run submits nothing new
    capsys.readouterr()
    records = [read_job(c.run_dir) for c in cells]
    run_sweep("psm_target", [0, 1], extra, root=root, runner=RUNNER, launcher=launcher)
    assert "4 runs, 4 done, 0 to run" in capsys.readouterr().out
    assert [read_job(c.run_dir) for c in cells] == records

    # a run cut after its checkpoint is resumed, and ends with the metrics it had before it was cut
    cut, broken = cells[0].run_dir, cells[3].run_dir
    before = read(cut / "metrics.jsonl")
    (cut / "summary.json").unlink()  # as if killed during iteration 2: the last checkpoint is iteration 1's
    shutil.copy(cut / "checkpoints" / "iter_00001.pt", cut / "checkpoints" / "last.pt")
    (cut / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in before[:4]))
    # ... and a run whose checkpoints are all broken fails: status names it with the last line of its log
    (broken / "summary.json").unlink()
    for f in (broken / "checkpoints").glob("*.pt"):
        f.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    run_sweep("psm_target", [0, 1], extra, root=root, runner=RUNNER, launcher=launcher)
    assert "4 runs, 2 done, 2 to run" in capsys.readouterr().out
    assert "resuming" in (cut / "train.log").read_text()
    assert stable(read(cut / "metrics.jsonl")) == stable(before)
    st = {s.run_dir: s for s in states(jobs)}
    assert st[cut].state == "done" and st[broken].state == "failed"
    last = [ln for ln in (broken / "train.log").read_text().splitlines() if ln.strip()][-1].strip()
    assert st[broken].note == last and last
    text = format_status(states(jobs), root, "psm_target")
    assert "3 done, 0 running, 0 pending, 1 failed" in text and f"last log line: {last}" in text


def test_a_run_pending_or_running_elsewhere_is_not_started_again(launcher, tmp_path, capsys):
    """A run busy elsewhere is never started a second time. SLURM: a run whose recorded job SLURM still lists is not
    submitted again. Local: a run whose folder is leased by a live process is waited for, and trained here only
    once that process lets it go."""
    import threading

    from vipo import lease

    root, extra = tmp_path / "sweep", tiny_extra(tmp_path)
    jobs = sweep_jobs("psm_target", [0], extra, root, RUNNER)
    busy = jobs[0].run_dir
    if launcher.name == "local":
        held = lease.acquire(busy)
        assert [s.state for s in states(jobs)] == ["running", "not started"] and states(jobs)[0].leased
        released = []
        timer = threading.Timer(8.0, lambda: (released.append(time.time()), held.release()))
        timer.start()
        try:
            run_sweep("psm_target", [0], extra, root=root, runner=RUNNER, launcher=launcher)
        finally:
            timer.cancel()
            held.release()
        out = capsys.readouterr().out
        assert f"running elsewhere: {busy.name}" in out and "continuing it here" in out
        first_line = (busy / "train.log").read_text().splitlines()[0]
        assert (busy / "summary.json").exists() and released
        assert (busy / "train.log").stat().st_mtime > released[0]  # trained here only after the lease was let go
        assert "[vipo]" in first_line
        return
    out = subprocess.run(["sbatch", "--parsable", "--hold", "--wrap", "true"], capture_output=True, text=True)
    held = out.stdout.strip().split(";")[0]
    write_job(busy, launcher="slurm", job_id=held, submitted="x", run_dir=str(busy))
    try:
        assert [s.state for s in states(jobs)] == ["pending", "not started"]
        capsys.readouterr()
        run_sweep("psm_target", [0], extra, root=root, runner=RUNNER, launcher=launcher)
        out = capsys.readouterr().out
        assert "2 runs, 0 done, 1 to run, 1 pending/running elsewhere (not started again)" in out
        assert not (busy / "summary.json").exists() and (jobs[1].run_dir / "summary.json").exists()
    finally:
        subprocess.run(["scancel", held])


def test_follow_stops_when_slurm_cannot_be_asked(tmp_path, monkeypatch, capsys):
    """squeue failing for unreadable_s in a row: following stops with one line and returns the unfinished job."""
    import vipo.launchers.slurm as slurm
    from vipo.launchers import Job

    def down():
        raise RuntimeError("squeue failed: slurm_load_jobs error: Unable to contact slurm controller")

    monkeypatch.setattr(slurm, "squeue", down)
    job = Job(tmp_path / "r0", [sys.executable, "-c", "pass"], resumable=False, done_file="summary.json")
    write_job(job.run_dir, launcher="slurm", job_id="12_0", submitted="2026-12-05T05:00:00+00:00")
    t0 = time.time()
    assert slurm.follow([job], "x", poll_s=0.01, unreadable_s=0.2) == [job]
    assert 0.2 <= time.time() - t0 < 5
    out = capsys.readouterr().out
    assert "SLURM could not be asked for 0.2 s (squeue failed: slurm_load_jobs error" in out
    assert "stopped following 1 job(s), which may still run" in out


class Unfinished:
    """A launcher that, like SLURM with wait=true, reports every job it was given as ended without finishing."""

    name, waits_for_leased = "slurm", False

    def __init__(self, wait: bool):
        self.wait = wait

    def describe(self) -> str:
        return "fake"

    def submit(self, jobs, label):
        return list(jobs)


@pytest.mark.parametrize("wait, status", [(True, "failed"), (False, "")])
def test_runs_a_waiting_launcher_reports_unfinished_are_failed(wait, status, tmp_path):
    """With wait=true the sweep knows how its runs ended: unfinished ones are failed cells (the command exits 1);
    without waiting it only submitted them."""
    cells = run_sweep("psm_target", [0], tiny_extra(tmp_path), root=tmp_path / "s", runner=RUNNER,
                      launcher=Unfinished(wait))
    assert cells and [c.status for c in cells] == [status] * len(cells)


def test_eta_by_hand():
    from vipo.launchers.local import eta

    assert eta(600.0, 2, 10) == ", ~40 min left"  # 300 s per run, 8 to go
    assert eta(3600.0, 1, 3) == ", ~2.0 h left"  # 7200 s
    assert eta(100.0, 0, 3) == "" and eta(100.0, 3, 3) == ""


# ------------------------------------------------------------------------------------ launcher files and options
@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_every_launcher_file_composes(name):
    text = (HERE.parent / "experiments" / "launcher" / f"{name}.yaml").read_text().splitlines()
    assert text[0].startswith("#") and any(line.startswith("# Run:") for line in text[:4])
    opts = load_options(name)
    launcher = get_launcher(name)
    assert launcher.name == opts["launcher"]


def test_slurm_options_use_hydra_submitit_names_and_are_overridable(tmp_path):
    opts = load_options("slurm", ["launcher.partition=gpu", "launcher.timeout_min=240", "gpus_per_node=4",
                                  "launcher.setup=[module load cuda,echo hi]"])
    hydra = {"partition", "account", "qos", "constraint", "timeout_min", "nodes", "gpus_per_node", "tasks_per_node",
             "cpus_per_task", "mem_gb", "array_parallelism", "setup", "additional_parameters"}
    assert hydra <= set(opts)
    assert (opts["partition"], opts["timeout_min"], opts["gpus_per_node"]) == ("gpu", 240, 4)
    assert opts["setup"] == ["module load cuda", "echo hi"]
    with pytest.raises(ConfigError, match=r"launcher.partiton: no such option of launcher 'slurm'"):
        load_options("slurm", ["launcher.partiton=gpu"])
    with pytest.raises(ConfigError, match="unknown launcher 'slurmm'; known: local, slurm"):
        load_options("slurmm")
    # the sbatch script submitit would write: one task per GPU, the signal before the limit, the array throttle
    ex = get_launcher("slurm", ["partition=gpu", "gpus_per_node=4", "signal_delay_s=120",
                                "array_parallelism=3", "additional_parameters={exclusive: true}"]).executor(tmp_path)
    from submitit.slurm.slurm import _make_sbatch_string

    script = _make_sbatch_string(command="python x", folder=tmp_path, map_count=10,
                                 **ex._executor.parameters)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --signal=USR2@120", "#SBATCH --array=0-9%3", "#SBATCH --exclusive", "#SBATCH --time=60"):
        assert line in script, line


def test_results_root_moves_sweeps_studies_and_searches(tmp_path, capsys):
    """`results_root=` on sweep.py replaces the project's results/ folder (it used to be silently ignored)."""
    import sweep
    from vipo.study import load_study, study_root
    from vipo.sweep import ROOT, default_root

    assert default_root("psm_k", results=tmp_path) == tmp_path / "sweeps/psm_k/toy_redness"
    assert study_root(load_study("toy"), results=tmp_path) == tmp_path / "toy_study"  # root: results/toy_study
    assert study_root(load_study("toy")) == ROOT / "results/toy_study"
    assert sweep.main(["study=toy", "status", f"results_root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "[status] study toy: 90 runs: 0 done" in out and f"({tmp_path / 'toy_study'})" in out
    assert sweep.main(["ablation=psm_target", "status", "seeds=1", f"results_root={tmp_path}"]) == 0
    assert str(tmp_path / "sweeps/psm_target/toy_redness") in capsys.readouterr().out
    # a search on SLURM with the default (SQLite) storage is refused in one line, before anything is submitted
    assert sweep.main(["search=toy", "launcher=slurm", "workers=2", f"results_root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "storage sqlite (the default) is a file" in err[0] and "launcher=slurm" in err[0]
    assert not (tmp_path / "optuna").exists()
