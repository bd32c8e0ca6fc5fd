"""CPU threads of a run, chosen by the program (not the Makefile): ``train.threads``, else by the launcher's
count of runs at once, else ``OMP_NUM_THREADS``, else the machine's cores. The trainer applies it at start and
prints it in the run header."""

from __future__ import annotations

import os


def resolve_threads(setting: int, env: dict | None = None, cores: int | None = None) -> tuple[int, str]:
    """CPU threads of this run and why: ``train.threads`` when > 0; else one per run when the launcher runs several
    at once (``VIPO_PARALLEL_RUNS`` > 1), else ``OMP_NUM_THREADS`` when set, else the cores this process may use."""
    env = os.environ if env is None else env
    if setting > 0:
        return setting, f"train.threads={setting}"
    parallel = int(env.get("VIPO_PARALLEL_RUNS") or 1)
    if parallel > 1:
        return 1, f"auto: 1 per run, {parallel} runs at once"
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"]), "auto: OMP_NUM_THREADS"
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, "auto: the cores of this machine"
