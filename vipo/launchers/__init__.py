"""Launchers: where the runs of a sweep, study or search execute (``launcher=<name>`` on ``sweep.py``).

    local   subprocesses on this machine, ``workers`` at a time (the default; blocks until they finish)
    slurm   one SLURM job per run through submitit, a sweep or study = one array job; submits and returns

A launcher only starts commands (``Job``: the ``train.py`` command of one run folder); what a run is and whether
it still needs running is read from its folder: ``summary.json`` = done, ``job.json`` = which launcher started it,
the job id, when, and from where. Options live in ``experiments/launcher/<name>.yaml`` (the parameter names of
Hydra's ``submitit_slurm`` launcher) and every one is overridable on the command line (``launcher.partition=gpu``).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from vipo.registry import Registry

LAUNCHERS: Registry = Registry("launcher")
LAUNCHERS.register_lazy("local", "vipo.launchers.local:LocalLauncher")
LAUNCHERS.register_lazy("slurm", "vipo.launchers.slurm:SlurmLauncher")

CONFIG_DIR = Path(__file__).resolve().parents[2] / "experiments"  # as vipo.config's; not imported here: a job
# unpickles this module before submitit installs its signal handler, so it stays light (no torch, no Hydra)
JOB_FILE = "job.json"  # in the run folder: launcher, job id, submission time, host
LIVE = ("pending", "running")


@dataclass
class Job:
    """One command to run for one run folder."""

    run_dir: Path  # the run folder: train.log, job.json (and summary.json once done)
    runner: list[str]  # the program, e.g. [python, train.py]
    args: list[str] = field(default_factory=list)  # overrides of a fresh start
    resumable: bool = True  # a checkpoint in run_dir turns the command into ``resume=<run_dir>``
    done_file: str | None = "summary.json"  # the file whose presence means the job's work is done
    resume_args: list[str] = field(default_factory=list)  # added to ``resume=<run_dir>`` (e.g. this call's tracker)

    def command(self) -> list[str]:
        """Decided when the job starts (a requeued job resumes from the checkpoint its first part left)."""
        if self.resumable and (Path(self.run_dir) / "checkpoints" / "last.pt").exists():
            return [*self.runner, f"resume={self.run_dir}", *self.resume_args]
        return [*self.runner, *self.args]

    def done(self) -> bool:
        """The done file is there and, for ``summary.json``, readable (a bad one is named, and the run redone)."""
        if self.done_file is None:
            return False
        if self.done_file == "summary.json":
            from vipo.records import read_summary

            return read_summary(self.run_dir) is not None
        return (Path(self.run_dir) / self.done_file).exists()


def launcher_file(name: str) -> Path:
    return CONFIG_DIR / "launcher" / f"{name}.yaml"


def load_options(name: str, overrides: Sequence[str] = ()) -> dict:
    """The options of ``experiments/launcher/<name>.yaml`` with ``launcher.<key>=<value>`` overrides applied."""
    from omegaconf import OmegaConf

    from vipo.config import ConfigError

    path = launcher_file(name)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise ConfigError(f"config error: unknown launcher {name!r}; known: {known}")
    opts = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    kind = opts.pop("launcher", name)  # a file such as slurm_gpu.yaml names the launcher it configures
    if kind not in LAUNCHERS:
        raise ConfigError(f"config error: {path}: launcher {kind!r} is not one of {LAUNCHERS.names()}")
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.removeprefix("launcher.")
        if key not in opts:
            raise ConfigError(f"config error: launcher.{key}: no such option of launcher {name!r} ({path}); "
                              f"options: {sorted(opts)}")
        opts[key] = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={value}"]))["v"]
    opts["launcher"] = kind
    return opts


def get_launcher(name: str = "local", overrides: Sequence[str] = (), **extra):
    """A launcher instance from its file, command-line overrides and keyword options (e.g. ``workers``)."""
    from vipo.config import ConfigError

    opts = load_options(name, overrides)
    kind = opts.pop("launcher")
    try:
        return LAUNCHERS.get(kind)(**{**opts, **extra})
    except TypeError as e:
        raise ConfigError(f"config error: launcher {name!r}: {e}") from None


# ----------------------------------------------------------------------------------------- run folder records
def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_job(folder: Path, **fields) -> dict:
    """Record who runs ``folder`` (launcher, job id, submission time, host) in ``folder/job.json``."""
    from vipo.records import atomic_write_json

    record = {"host": socket.gethostname(), **fields}
    atomic_write_json(Path(folder) / JOB_FILE, record)
    return record


def read_job(run_dir: Path) -> dict | None:
    path = Path(run_dir) / JOB_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def last_log_line(run_dir: Path, name: str = "train.log") -> str:
    path = Path(run_dir) / name
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return ""
    return lines[-1] if lines else ""


@dataclass
class RunState:
    run_dir: Path
    state: str  # done | running | pending | failed | not started
    job_id: str = ""  # the launcher's job id ("pid 1234" for the local pool)
    submitted: str = ""  # ISO time of submission
    launcher: str = ""
    note: str = ""  # the last log line of a failed run
    live: str | None = None  # what the launcher says of the job now: pending, running, unknown or None (gone)
    leased: bool = False  # running because a live process holds the run folder's lease (vipo.lease)


def run_state(job: Job, rec: dict | None, live: str | None) -> RunState:
    """The state of one run from its folder, its job record and what its launcher says of that job now."""
    rec = rec or {}
    common = dict(job_id=str(rec.get("job_id", "")), submitted=rec.get("submitted", ""),
                  launcher=rec.get("launcher", ""), live=live)
    if job.done():
        return RunState(job.run_dir, "done", **common)
    if not rec:
        held = _lease_holder(job.run_dir)
        if held:
            return RunState(job.run_dir, "running", note=held, leased=True, live=live)
        return RunState(job.run_dir, "not started", live=live)
    if live in LIVE:
        return RunState(job.run_dir, live, **common)
    held = _lease_holder(job.run_dir)
    if held:  # trained right now by a process that did not go through this launcher's queue
        return RunState(job.run_dir, "running", note=held, leased=True, **common)
    if job.done_file is None:  # a worker (e.g. of an Optuna search): its work is judged elsewhere
        return RunState(job.run_dir, "ended", note=last_log_line(job.run_dir), **common)
    if live == "unknown":
        return RunState(job.run_dir, "unknown", note=rec.get("unknown", "its launcher cannot tell from here"),
                        **common)
    return RunState(job.run_dir, "failed", note=last_log_line(job.run_dir) or "(no train.log)", **common)


def _lease_holder(run_dir: Path) -> str:
    """``pid .. on host ..`` of the live process holding the run folder's lease, or ''."""
    from vipo import lease

    if not lease.is_live(run_dir):
        return ""
    return "leased by " + lease.describe(lease.holder(run_dir) or {})


def states(jobs: Sequence[Job]) -> list[RunState]:
    """Every job's state; each launcher named in the jobs' records is asked once which of its jobs are live."""
    recs = [read_job(j.run_dir) for j in jobs]
    live: list[str | None] = [None] * len(jobs)
    for name in sorted({r.get("launcher", "") for r in recs if r}):
        idx = [i for i, r in enumerate(recs) if r and r.get("launcher") == name]
        if name not in LAUNCHERS:
            continue
        for i, state in zip(idx, LAUNCHERS.get(name).live([recs[i] for i in idx])):
            live[i] = state
    return [run_state(j, r, s) for j, r, s in zip(jobs, recs, live)]


def to_submit(jobs: Sequence[Job], all_unfinished: bool = False) -> tuple[list[Job], list[RunState]]:
    """The jobs that are neither done nor pending/running anywhere (never a duplicate), and every job's state.
    ``all_unfinished`` keeps every unfinished job: the local pool itself waits for runs leased by a live process
    and shares the rest with any other pool through the leases."""
    st = states(jobs)
    keep = [s.state != "done" if all_unfinished else s.state not in ("done", *LIVE, "unknown") for s in st]
    return [j for j, k in zip(jobs, keep) if k], st


def dispatch(jobs: Sequence[Job], launcher, label: str, root: Path) -> list[Job]:
    """Hand every job that still needs running to ``launcher``; returns what ``launcher.submit`` returns."""
    waits = getattr(launcher, "waits_for_leased", False)
    todo, st = to_submit(jobs, waits)
    done = sum(s.state == "done" for s in st)
    busy = [] if waits else [s for s in st if s.state in (*LIVE, "unknown")]
    print(f"[sweep] {label}: {len(jobs)} runs, {done} done, {len(todo)} to run"
          + (f", {len(busy)} pending/running elsewhere (not started again)" if busy else "")
          + f" ({launcher.describe()}) -> {root}", flush=True)
    return launcher.submit(todo, label) if todo else []


def counts(st: Sequence[RunState]) -> str:
    order = ["done", "running", "pending", "failed", "ended", "not started", "unknown"]
    n = {k: sum(s.state == k for s in st) for k in order}
    return ", ".join(f"{n[k]} {k}" for k in order if n[k] or k in ("done", "running", "pending", "failed"))


def format_status(st: Sequence[RunState], root: Path, label: str) -> str:
    """One line per run: state, run folder (relative to ``root``), job id, submission time, last log line if failed."""
    lines = [f"[status] {label}: {len(st)} runs: {counts(st)}  ({root})"]
    width = max([len(_rel(s.run_dir, root)) for s in st] + [4])
    for s in st:
        job = f"{s.launcher} job {s.job_id}" if s.job_id else ""
        when = f"submitted {s.submitted}" if s.submitted else ""
        line = f"  {s.state:<11} {_rel(s.run_dir, root):<{width}}  {job:<22} {when}".rstrip()
        if s.state in ("failed", "unknown") and s.note:
            line += f"\n  {'':<11} last log line: {s.note}"
        elif s.leased:
            line += f"  ({s.note})"
        lines.append(line)
    return "\n".join(lines)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
