"""Experiment trackers. The run folder's files are always written; a tracker is an extra copy."""

from __future__ import annotations

from pathlib import Path

from vipo.registry import Registry

LOGGERS: Registry = Registry("logger")


@LOGGERS.register("none")
class NoLogger:
    def __init__(self, **_):
        pass

    def log(self, metrics: dict, step: int) -> None:
        pass

    def finish(self) -> None:
        pass


@LOGGERS.register("wandb")
class WandbLogger:
    """wandb, offline by default; its files go inside the run folder (``<run>/wandb``)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict, project: str = "vipo", mode: str = "offline", **_):
        import wandb

        self._run = wandb.init(project=project, name=run_id, id=run_id.replace("/", "_"), dir=str(run_dir),
                               config=config, mode=mode, resume="allow")

    def log(self, metrics: dict, step: int) -> None:
        self._run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self) -> None:
        self._run.finish()
