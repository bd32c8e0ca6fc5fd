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

    def __init__(self, workers: int = 1, threads: int = 1):
        self.workers = int(workers)  # runs at a time
        self.threads = int(threads)  # CPU threads per run (OMP_NUM_THREADS)

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
        """Run every job; returns the jobs that failed."""
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        queued = now_iso()
        for job in jobs:  # the whole queue is visible to `status` (pending) while this pool lives
            write_job(job.run_dir, launcher=self.name, job_id="", pool_pid=os.getpid(), submitted=queued,
                      run_dir=str(job.run_dir))
        running: list[tuple[Job, subprocess.Popen, Path]] = []
        failed: list[Job] = []
        queue = list(jobs)
        started = time.time()
        while queue or running:
            while queue and len(running) < self.workers:
                job = queue.pop(0)
                log = Path(job.run_dir) / "train.log"
                proc = subprocess.Popen(job.command(), cwd=ROOT, env=env, stdout=open(log, "a"),
                                        stderr=subprocess.STDOUT)
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
                ok = proc.returncode == 0 and (job.done() or job.done_file is None)
                done = len(jobs) - len(queue) - len(running)
                print(f"[sweep] {'done ' if ok else 'FAILED'} {Path(job.run_dir).name}"
                      + ("" if ok else f" (exit {proc.returncode}; see {log})")
                      + f"  [{done}/{len(jobs)}, {(time.time() - started) / 60:.1f} min]", flush=True)
                if not ok:
                    failed.append(job)
        if failed:
            print(f"[sweep] {len(failed)} run(s) failed; re-run the same command to retry them", flush=True)
        return failed
