"""Command line of ``train.py``: Hydra-style overrides in, a run folder out.

    python train.py                                   # ViPO on the toy world, redness reward
    python train.py experiment=toy_redness_grpo train.iterations=30
    python train.py resume=results/runs/<run_id>      # continue from the last checkpoint
    python train.py --cfg                             # print the composed config and exit
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from vipo.config import ConfigError, dotlist, load, read_yaml, validate


def load_for_resume(run_dir: str, overrides: Sequence[str]):
    from omegaconf import OmegaConf

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"config error: resume={run_dir}: no config.yaml there (is it a run folder?)")
    conf = read_yaml(path)
    extra = [o for o in overrides if not o.startswith("resume=")]
    if extra:
        conf = OmegaConf.merge(conf, dotlist(extra))
    raw = OmegaConf.to_container(conf, resolve=True)
    raw["resume"] = str(run_dir)
    return validate(raw), raw


def parse(argv: Sequence[str]):
    resume = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if resume and resume[0] not in ("", "null"):
        return load_for_resume(resume[0], argv)
    return load(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from vipo import stop

    stop.install()  # first: a cluster's time-limit signal must not kill the run before it can checkpoint
    show = "--cfg" in argv
    argv = [a for a in argv if a != "--cfg"]
    if "-h" in argv or "--help" in argv:
        from vipo.catalog import train_help

        print(__doc__.rstrip() + "\n\n" + train_help())
        return 0
    try:
        cfg, raw = parse(argv)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    if show:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(raw))
        return 0
    import signal

    from vipo.checkpoints import CheckpointError
    from vipo.lease import EXIT_EXISTS, EXIT_HELD, LeaseHeld, LeaseLost
    from vipo.records import DiskFull
    from vipo.train import RunExists, run
    from vipo.update import NonFiniteError

    # SIGTERM (a sweep parent that died, a scheduler's cancel) unwinds like Ctrl-C: the lease is released
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        run(cfg, raw)
    except stop.StopRequested as e:
        print(f"[vipo] {e}", flush=True)
        return stop.STOPPED
    except LeaseHeld as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_HELD
    except RunExists as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_EXISTS
    except (NonFiniteError, FileExistsError, FileNotFoundError, ValueError, LeaseLost, CheckpointError, DiskFull) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
