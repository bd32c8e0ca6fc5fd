"""Launcher overhead: N trivial runs (``python -c pass``), 2 at a time, through the local pool and through SLURM.

    SLURM_CONF=/tmp/vipo-slurm/slurm.conf python bench/bench_launchers.py [N]   # with checks/slurm_cluster.sh up

Prints, per launcher, the time to hand the N runs over (submission) and the wall time until all N have ended, per
run, and the SLURM / local ratio of the latter. Without a SLURM cluster it prints one line and measures only the pool.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vipo.launchers import Job, get_launcher  # noqa: E402
from vipo.launchers.slurm import squeue  # noqa: E402


def jobs(root: Path, n: int) -> list[Job]:
    return [Job(root / f"r{i}", [sys.executable, "-c", "pass"], resumable=False, done_file=None) for i in range(n)]


def local(root: Path, n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    get_launcher("local", workers=2).submit(jobs(root / "local", n), "bench")
    wall = time.perf_counter() - t0
    return float("nan"), wall


def slurm(root: Path, n: int) -> tuple[float, float]:
    launcher = get_launcher("slurm", ["array_parallelism=2", "cpus_per_task=1"])
    js = jobs(root / "slurm", n)
    t0 = time.perf_counter()
    launcher.submit(js, "bench")
    submitted = time.perf_counter() - t0
    ids = {str((Path(j.run_dir) / "job.json").read_text()).split('"job_id": "')[1].split('"')[0] for j in js}
    while ids & set(squeue()):
        time.sleep(0.1)
    return submitted, time.perf_counter() - t0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    root = Path(tempfile.mkdtemp(prefix="vipo-bench-launchers-"))
    _, lw = local(root, n)
    print(f"local pool: {n} trivial runs, 2 at a time: {lw:.2f} s wall, {lw / n * 1000:.0f} ms per run")
    try:
        subprocess.run(["sinfo"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        print("no SLURM cluster answers here (start one: bash checks/slurm_cluster.sh start); SLURM not measured")
        return
    sub, sw = slurm(root, n)
    print(f"slurm: submission of {n} runs (one array job) {sub:.3f} s ({sub / n * 1000:.0f} ms per run); "
          f"{sw:.2f} s wall until all left the queue, {sw / n * 1000:.0f} ms per run")
    print(f"slurm / local wall per trivial run: {sw / lw:.1f}x")


if __name__ == "__main__":
    main()
