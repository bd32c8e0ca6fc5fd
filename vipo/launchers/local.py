"""The local launcher: the runs as subprocesses of this command, ``workers`` at a time, one CPU thread each
(``threads``), each with its output in ``<run_dir>/train.log``. Blocks until every run has finished."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

from vipo.launchers import Job, now_iso, read_job, write_job

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid, needle: str | None = None) -> bool:
    """Process ``pid`` exists (and its command line mentions ``needle``: a recycled pid does not count)."""
    try:
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError, TypeError):
        return False
    return needle is None or needle in cmd


class LocalLauncher:
    name = "local"
    waits_for_leased = True  # a run leased by another live process is waited for, then counted or continued
    wait = True  # submit() returns when every run has ended, with the ones that failed (as slurm with wait=true)

    def __init__(self, workers: int = 1, threads: int | None = None):
        if int(workers) < 1:
            from vipo.config import ConfigError

            raise ConfigError(f"config error: workers={workers}: needs at least 1")
        self.workers = int(workers)  # runs at a time
        # CPU threads per run (OMP_NUM_THREADS); default one when several run at once, else train.threads decides
        self.threads = int(threads) if threads else (1 if self.workers > 1 else None)

    def describe(self) -> str:
        return f"{self.workers} at a time"

    @staticmethod
    def live(records: Sequence[dict]) -> list[str | None]:
        """running: its process is alive here; pending: queued by a pool that is still alive here."""
        here = socket.gethostname()
        out: list[str | None] = []
        for r in records:
            if r.get("host") != here:
                r["unknown"] = f"started on host {r.get('host')}, this is {here}"
                out.append("unknown")
            elif r.get("pid"):
                out.append("running" if _alive(r["pid"], Path(r.get("run_dir", "")).name) else None)
            else:
                out.append("pending" if _alive(r.get("pool_pid"), None) else None)
        return out

    def submit(self, jobs: Sequence[Job], label: str = "sweep") -> list[Job]:
        """Run every job; returns the jobs that failed.

        A job whose run folder is leased by a live process (another sweep, a trainer that outlived its sweep) is
        "running elsewhere": it is not started but waited for, and counted by how it ends (a summary: done;
        ``failed.json`` written meanwhile: failed; neither, its holder gone: resumed here). Trainers get SIGTERM
        when this process dies."""
        from vipo import lease

        env = {**os.environ, "VIPO_PARALLEL_RUNS": str(self.workers)}  # train.threads=0 (auto) reads it
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        queued = now_iso()
        for job in jobs:  # the whole queue is visible to `status` (pending) while this pool lives
            write_job(job.run_dir, launcher=self.name, job_id="", pool_pid=os.getpid(), submitted=queued,
                      run_dir=str(job.run_dir))
        running: list[tuple[Job, subprocess.Popen, Path]] = []
        elsewhere: dict[int, tuple[Job, float]] = {}  # id(job) -> (job, when first seen held elsewhere)
        failed: list[Job] = []
        finished = 0
        queue = list(jobs)
        started = time.time()

        def held_elsewhere(job: Job) -> None:
            info = lease.holder(job.run_dir) or {}
            elsewhere[id(job)] = (job, time.time())
            print(f"[sweep] running elsewhere: {Path(job.run_dir).name} (held by {lease.describe(info)}); "
                  "waiting for it", flush=True)

        def progress() -> str:
            elapsed = time.time() - started
            return f"  [{finished}/{len(jobs)}, {elapsed / 60:.1f} min{eta(elapsed, finished, len(jobs))}]"

        try:
            while queue or running or elsewhere:
                while queue and len(running) < self.workers:
                    job = queue.pop(0)
                    if lease.is_live(job.run_dir):
                        held_elsewhere(job)
                        continue
                    log = Path(job.run_dir) / "train.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    with open(log, "a") as out:
                        proc = subprocess.Popen(job.command(), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                preexec_fn=_die_with_parent(os.getpid()))
                    rec = read_job(job.run_dir) or {}
                    write_job(job.run_dir, **{**rec, "launcher": self.name, "job_id": str(proc.pid), "pid": proc.pid,
                                              "started": now_iso()})
                    running.append((job, proc, log))
                    print(f"[sweep] start {Path(job.run_dir).name}  (log: {log})", flush=True)
                time.sleep(0.5)
                for item in list(running):
                    job, proc, log = item
                    if proc.poll() is None:
                        continue
                    running.remove(item)
                    if proc.returncode == lease.EXIT_HELD:  # another process took the folder first
                        held_elsewhere(job)
                        continue
                    if proc.returncode == lease.EXIT_EXISTS and not job.done():
                        queue.append(job)  # another process checkpointed it meanwhile and stopped: resume it
                        continue
                    finished += 1
                    ok = proc.returncode in (0, lease.EXIT_EXISTS) and (job.done() or job.done_file is None)
                    print(f"[sweep] {'done ' if ok else 'FAILED'} {Path(job.run_dir).name}"
                          + ("" if ok else f" (exit {proc.returncode}; see {log})") + progress(), flush=True)
                    if not ok:
                        failed.append(job)
                for key, (job, since) in list(elsewhere.items()):
                    if lease.is_live(job.run_dir):
                        continue
                    del elsewhere[key]
                    fail = Path(job.run_dir) / "failed.json"
                    if job.done():
                        finished += 1
                        print(f"[sweep] done  {Path(job.run_dir).name} (elsewhere)" + progress(), flush=True)
                    elif fail.exists() and fail.stat().st_mtime >= since - 1:
                        finished += 1
                        failed.append(job)
                        print(f"[sweep] FAILED {Path(job.run_dir).name} (elsewhere; see {fail})" + progress(),
                              flush=True)
                    else:  # its holder stopped without finishing: continue it here
                        print(f"[sweep] {Path(job.run_dir).name}: its holder stopped before finishing; "
                              "continuing it here", flush=True)
                        queue.append(job)
        finally:
            for _, proc, _ in running:  # interrupted (Ctrl-C, an error): stop the trainers this pool started
                if proc.poll() is None:
                    proc.terminate()
            for _, proc, _ in running:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if failed:
            print(f"[sweep] {len(failed)} run(s) failed; re-run the same command to retry them", flush=True)
        return failed


def eta(elapsed: float, finished: int, total: int) -> str:
    """``", ~T left"``: the runs still to end at the rate of those ended so far in this invocation (elapsed seconds
    / finished, which already counts the workers running side by side); empty before the first or after the last."""
    if finished <= 0 or finished >= total:
        return ""
    left = elapsed / finished * (total - finished)  # seconds
    return f", ~{left / 3600:.1f} h left" if left >= 5400 else f", ~{left / 60:.0f} min left"


def _die_with_parent(parent: int):
    """``preexec_fn`` of a trainer: SIGTERM it when the sweep process dies, however it dies (Linux
    ``PR_SET_PDEATHSIG``; elsewhere a re-run adopts surviving trainers through their leases)."""

    def setup() -> None:
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup
