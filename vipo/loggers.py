"""Experiment trackers. The run folder's files are always written; a tracker is an extra copy.

A run of a sweep, study or search carries its place in ``tags`` (ablation, cell, study, reward, search, trial);
``tracking_fields`` turns those into W&B's group (the sweep or study part, e.g. ``toy_study/redness/main``), job
type (the cell) and tags (seed, reward, ablation, experiment, method), so runs group and compare the way they were
launched. ``logger.group`` / ``logger.job_type`` set them by hand.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

from vipo.registry import Registry

LOGGERS: Registry = Registry("logger")
ID_FILE = "tracker.json"  # in the run folder: the W&B run id, written at the first start and reused on resume


@LOGGERS.register("none")
class NoLogger:
    def __init__(self, **_):
        pass

    def log(self, metrics: dict, step: int) -> None:
        pass

    def log_images(self, images: dict, step: int) -> None:
        pass

    def finish(self, summary: dict | None = None) -> None:
        pass


def method_of(advantage_mode: str) -> str:
    """The method name a reader expects: GRPO for scalar advantages, ViPO for the map-times-advantage form."""
    return {"scalar": "grpo", "map_x_advantage": "vipo"}.get(advantage_mode, advantage_mode)


def tracking_fields(cfg) -> dict:
    """Group, job type, display name and tags of a run from its config (``cfg``: ``vipo.config.Config``)."""
    tags = cfg.tags or {}
    if tags.get("study") and tags.get("trial") is None:  # a study run: study / reward / ablation part
        group = "/".join(str(tags[k]) for k in ("study", "reward", "ablation") if tags.get(k))
    elif tags.get("search") or tags.get("trial") is not None:  # an Optuna trial
        group = f"search/{tags.get('search') or tags.get('study')}"
    elif tags.get("ablation"):  # a sweep: ablation / experiment (its results folder)
        group = f"{tags['ablation']}/{cfg.experiment}"
    else:
        group = cfg.experiment
    job_type = (f"trial_{tags['trial']}" if tags.get("trial") is not None
                else str(tags.get("cell") or method_of(cfg.advantage.mode)))
    labels = {"seed": cfg.train.seed, "reward": tags.get("reward") or cfg.reward.name,
              "ablation": tags.get("ablation"), "experiment": cfg.experiment,
              "method": method_of(cfg.advantage.mode), "cell": tags.get("cell"), "study": tags.get("study"),
              "search": tags.get("search"), "trial": tags.get("trial")}
    out_tags = [f"{k}:{v}"[:64] for k, v in labels.items() if v is not None and v != ""]
    return {"group": cfg.logger.group or group, "job_type": cfg.logger.job_type or job_type,
            "tags": out_tags + list(cfg.logger.tags or [])}


def run_id_for(run_dir: Path, name: str) -> str:
    """The W&B id of the run in ``run_dir``: read from ``tracker.json`` when the run started before (a resume
    continues the same W&B run), else ``<name>-<8 random hex>`` (unique across sweeps, studies and re-runs of
    the same folder name) written there."""
    path = Path(run_dir) / ID_FILE
    if path.exists():
        return json.loads(path.read_text())["wandb_id"]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:54]
    run_id = f"{slug}-{secrets.token_hex(4)}"
    from vipo.records import atomic_write_json

    atomic_write_json(path, {"wandb_id": run_id})
    return run_id


@LOGGERS.register("wandb")
class WandbLogger:
    """wandb, offline by default; its files go inside the run folder (``<run>/wandb``). Every row is logged with
    its ``iteration`` as the x axis (the numbering of metrics.jsonl, -1 = before training)."""

    def __init__(self, run_dir: Path, run_id: str, config: dict, project: str = "vipo", mode: str = "offline",
                 group: str | None = None, job_type: str | None = None, tags: list | None = None, **_):
        import wandb

        self._wandb = wandb
        self._run = wandb.init(project=project, name=run_id, id=run_id_for(run_dir, run_id), dir=str(run_dir),
                               config=config, mode=mode, resume="allow", group=group, job_type=job_type,
                               tags=tags, settings=wandb.Settings(silent=True, console="off"))
        self._run.define_metric("iteration")
        self._run.define_metric("*", step_metric="iteration")
        where = f"; upload: wandb sync {Path(self._run.dir).parent}" if mode == "offline" else ""
        print(f"[vipo] W&B {mode} run {self._run.id} (group {group}, job type {job_type}){where}", flush=True)

    def log(self, metrics: dict, step: int) -> None:
        row = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._run.log({**row, "iteration": step})

    def log_images(self, images: dict, step: int) -> None:
        """``images``: key -> (PNG path, caption); files that do not exist are skipped."""
        row = {k: self._wandb.Image(str(p), caption=c) for k, (p, c) in images.items() if Path(p).exists()}
        if row:
            self._run.log({**row, "iteration": step})

    def finish(self, summary: dict | None = None) -> None:
        if summary:
            self._run.summary.update({k: v for k, v in summary.items()
                                      if isinstance(v, (int, float, str)) and not isinstance(v, bool)})
        self._run.finish()
