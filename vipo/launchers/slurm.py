"""The SLURM launcher (submitit): one run = one job, a sweep or study = one array job; submits and returns.

Options (``experiments/launcher/slurm.yaml``) carry the names of Hydra's ``submitit_slurm`` launcher. Each job
runs the same ``train.py`` command as the local launcher, with its output in ``<run_dir>/train.log``. A run with
several tasks (``tasks_per_node`` x ``nodes``; by default one task per GPU) gets ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the allocation, so ``vipo.dist`` joins the process
group as under ``torchrun``. Before the time limit (``signal_delay_s``) or on preemption SLURM sends SIGUSR2:
the job forwards it to the run, which saves a checkpoint after its current iteration and exits, and submitit
requeues the job, which resumes from that checkpoint (at most ``max_num_timeout`` times for time limits).
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

from vipo.launchers import Job, format_status, last_log_line, now_iso, states, write_job

ROOT = Path(__file__).resolve().parents[2]
BASE = {"timeout_min", "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "name"}  # submitit's own
SLURM_ONLY = {"partition", "account", "qos", "constraint", "array_parallelism", "signal_delay_s", "setup",
              "additional_parameters", "comment", "exclude", "gres", "srun_args"}
RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "RESIZING"}
PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}


def squeue() -> dict[str, str]:
    """This user's jobs that SLURM still lists, one entry per array task: job id -> state (PENDING, RUNNING...)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"squeue failed: {e}") from None
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
    return dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)


class SlurmLauncher:
    name = "slurm"

    def __init__(self, submitit_folder: str | None = None, wait: bool = False, poll_s: float = 10.0,
                 max_num_timeout: int = 10, stderr_to_stdout: bool = True, **options):
        unknown = set(options) - BASE - SLURM_ONLY
        if unknown:
            from vipo.config import ConfigError

            raise ConfigError(f"config error: unknown slurm launcher option(s) {sorted(unknown)}")
        self.folder = submitit_folder  # submitit's pickles and logs; default <results folder>/.submitit
        self.wait = bool(wait)  # follow the jobs until none is pending or running, printing progress
        self.poll_s = float(poll_s)
        self.max_num_timeout = int(max_num_timeout)  # requeues after a time limit (preemptions do not count)
        self.stderr_to_stdout = stderr_to_stdout
        self.options = options

    def describe(self) -> str:
        o = self.options
        where = ", ".join(f"{k} {o[k]}" for k in ("partition", "account", "qos") if o.get(k))
        return f"SLURM{' ' + where if where else ''}, at most {o.get('array_parallelism')} at a time"

    @staticmethod
    def live(records: Sequence[dict]) -> list[str | None]:
        try:
            queue = squeue()
        except RuntimeError as e:
            for r in records:
                r["unknown"] = str(e)
            return ["unknown"] * len(records)
        out = []
        for r in records:
            state = queue.get(str(r.get("job_id")), "")
            out.append("running" if state in RUNNING else "pending" if state in PENDING else None)
        return out

    # -------------------------------------------------------------------------------------------- submission
    def executor(self, folder: Path, tasks: int | None = None):
        import submitit

        o = {k: v for k, v in self.options.items() if v not in (None, [], {})}
        if not o.get("tasks_per_node"):  # one task per GPU
            o["tasks_per_node"] = o.get("gpus_per_node") or 1
        if tasks is not None:
            o["tasks_per_node"] = tasks
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=self.max_num_timeout)
        params = {(k if k in BASE else f"slurm_{k}"): v for k, v in o.items()}
        params["stderr_to_stdout"] = self.stderr_to_stdout
        ex.update_parameters(**params)
        return ex

    def submit(self, jobs: Sequence[Job], label: str = "sweep") -> list[Job]:
        """Submit the jobs as one array job and return them; with ``wait`` follow them until they end and
        return the ones that failed."""
        if not jobs:
            return []
        folder = Path(self.folder or Path(jobs[0].run_dir).parent / ".submitit")
        ex = self.executor(folder)
        cpus = int(self.options.get("cpus_per_task") or 1)
        stop_wait_s = max(10, int(self.options.get("signal_delay_s") or 90) - 5)  # the kill comes at the limit
        tic = time.perf_counter()
        with ex.batch():
            handles = [ex.submit(RunJob(job, cpus, stop_wait_s)) for job in jobs]
        seconds = time.perf_counter() - tic
        when = now_iso()
        for job, h in zip(jobs, handles):
            write_job(job.run_dir, launcher=self.name, job_id=h.job_id, submitted=when, run_dir=str(job.run_dir),
                      submitit_folder=str(folder))
        array = handles[0].job_id.split("_")[0]
        what = f"array job {array}" if len(jobs) > 1 else f"job {handles[0].job_id}"
        print(f"[slurm] {label}: submitted {len(jobs)} run(s) as {what} in {seconds:.2f} s "
              f"({seconds / len(jobs) * 1000:.0f} ms per run); logs: <run folder>/train.log, submitit: {folder}",
              flush=True)
        if not self.wait:
            print("[slurm] follow them with the same command and `status` (or wait=true)", flush=True)
            return list(jobs)
        return follow(jobs, label, self.poll_s)


def follow(jobs: Sequence[Job], label: str, poll_s: float = 10.0, root: Path | None = None,
           unreadable_s: float = 600.0) -> list[Job]:
    """Print progress until no job is pending or running; returns the jobs that ended without being done. When
    SLURM cannot be asked (squeue fails) for ``unreadable_s`` seconds in a row, it stops following, says so and
    returns the unfinished jobs (they may still run: ``status`` tells later)."""
    started, last, unreadable_since = time.time(), "", None
    while True:
        st = states(jobs)
        line = ", ".join(f"{sum(s.state == k for s in st)} {k}" for k in ("done", "running", "pending", "failed"))
        if line != last:
            print(f"[slurm] {label}: {line}  [{(time.time() - started) / 60:.1f} min]", flush=True)
            last = line
        if not any(s.state in ("running", "pending", "unknown") or s.live in ("running", "pending") for s in st):
            break  # every job has left the queue (a finished run's job may still be completing)
        unknown = [s for s in st if s.state == "unknown"]
        unreadable_since = (unreadable_since or time.time()) if unknown else None
        if unknown and time.time() - unreadable_since >= unreadable_s:
            span = f"{unreadable_s / 60:.0f} min" if unreadable_s >= 120 else f"{unreadable_s:.1f} s"
            print(f"[slurm] {label}: SLURM could not be asked for {span} ({unknown[0].note}); "
                  f"stopped following {len(unknown)} job(s), which may still run: the same command with `status` "
                  "tells later", flush=True)
            return [j for j, s in zip(jobs, st) if s.state != "done"]
        time.sleep(poll_s)
    failed = [j for j, s in zip(jobs, st) if s.state != "done" and j.done_file is not None]
    if failed:
        print(format_status([s for s in st if s.state != "done"], root or Path(jobs[0].run_dir).parent,
                            f"{label}: not done"), flush=True)
    return failed


# ------------------------------------------------------------------------------------------- inside the job
def _port(job_id: str) -> int:
    """A port every task of one job derives alike and two jobs on one node rarely share."""
    return 15000 + int("".join(c for c in job_id if c.isdigit()) or 0) % 20000


def _wait_until_caught(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Wait (up to ``timeout`` s) until ``proc`` has a handler for ``sig`` (Linux: the SigCgt mask of /proc)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            caught = next(int(line.split()[1], 16) for line in open(f"/proc/{proc.pid}/status")
                          if line.startswith("SigCgt:"))
        except (OSError, StopIteration, ValueError):
            return  # no /proc: send it now
        if caught >> (sig - 1) & 1:
            return
        time.sleep(0.1)


class RunJob:
    """What an array task executes: the run's command as a subprocess, with the distributed environment of the
    allocation; on SLURM's signal it makes the run checkpoint and asks submitit to requeue it."""

    def __init__(self, job: Job, cpus: int = 1, stop_wait_s: float = 60):
        self.job = job
        self.cpus = cpus  # CPU threads of the run
        self.stop_wait_s = stop_wait_s  # how long the run may take to checkpoint after the signal
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        return {**self.__dict__, "_proc": None}

    def environment(self) -> tuple[dict, int]:
        import submitit

        env = {**os.environ, "OMP_NUM_THREADS": str(self.cpus), "MKL_NUM_THREADS": str(self.cpus)}
        je = submitit.JobEnvironment()
        if je.num_tasks > 1:
            env.update(RANK=str(je.global_rank), LOCAL_RANK=str(je.local_rank), WORLD_SIZE=str(je.num_tasks),
                       LOCAL_WORLD_SIZE=str(je.num_tasks // je.num_nodes), NODE_RANK=str(je.node),
                       MASTER_ADDR=je.hostnames[0], MASTER_PORT=str(_port(je.raw_job_id)))
        return env, je.global_rank

    def __call__(self) -> int:
        from vipo.stop import STOPPED

        env, rank = self.environment()
        run_dir = Path(self.job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_name = "train.log" if rank == 0 else f"train.rank{rank}.log"
        with open(run_dir / log_name, "a") as log:
            log.write(f"[slurm] job {os.environ.get('SLURM_JOB_ID')} task {rank} on {os.uname().nodename} "
                      f"(restart {os.environ.get('SLURM_RESTART_COUNT', '0')}) at {now_iso()}\n")
            log.flush()
            # its own session: SLURM's signal reaches this process, which forwards it once the run can take it
            self._proc = subprocess.Popen(self.job.command(), cwd=ROOT, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
            rc = self._proc.wait()
        from vipo.lease import EXIT_EXISTS, EXIT_HELD

        if rc == STOPPED or (rc in (0, EXIT_EXISTS) and (self.job.done() or self.job.done_file is None)):
            return rc
        if rc == EXIT_HELD:  # another live process trains this run folder: never a second writer
            return rc
        raise RuntimeError(f"{run_dir}: exit {rc}; last log line: {last_log_line(run_dir, log_name)}")

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on rank 0 when SLURM signals a time limit or a preemption: the run saves a
        checkpoint after its current iteration and exits; the returned submission is requeued."""
        import submitit

        proc = self._proc
        if proc is not None and proc.poll() is None:
            _wait_until_caught(proc, signal.SIGUSR2, self.stop_wait_s)  # still starting: it would die of the signal
            proc.send_signal(signal.SIGUSR2)
            try:
                proc.wait(timeout=self.stop_wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.job.done():
            return None  # finished meanwhile: nothing to requeue
        return submitit.helpers.DelayedSubmission(RunJob(self.job, self.cpus, self.stop_wait_s))


