"""Stop on request: a signal (SIGUSR2, what SLURM sends before a time limit or a preemption through submitit)
asks a run to finish its current iteration, save a checkpoint and exit with ``STOPPED`` (3); resuming the run
then repeats exactly what the uninterrupted run would have done (``vipo.train``).

In a multi-process run the signal may reach one rank only (the cluster launcher forwards it to rank 0), so
``requested`` is a collective: every rank stops after the same iteration.
"""

from __future__ import annotations

import os
import signal

STOPPED = 3  # exit status of a run that stopped on request after saving a checkpoint
_requested = False


class StopRequested(Exception):
    """Raised by the trainer after it saved a checkpoint because a stop was requested."""


def _handler(signum, frame) -> None:
    global _requested
    _requested = True


def signal_name() -> str:
    return os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # submitit's variable for the same choice


def install() -> None:
    """Catch the stop signal in this (main-thread) process; call before anything slow."""
    signal.signal(getattr(signal, "SIG" + signal_name()), _handler)


def request() -> None:
    _handler(None, None)


def requested(device=None) -> bool:
    """True when this process (or, in a process group, any rank) has been asked to stop."""
    from vipo import dist

    if dist.world_size() == 1:
        return _requested
    import torch
    import torch.distributed as tdist

    flag = torch.tensor([1.0 if _requested else 0.0], device=device)  # [1]
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    return bool(flag.item())
