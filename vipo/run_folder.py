"""A run folder's own files, handled by the process that holds its lease (``vipo.lease``).

``new_run_dir`` names a new run's folder and refuses one that already holds a run (``RunExists``); ``prepare``
cleans what an interrupted process left (temporary files of a write cut short) and sets aside an attempt that
stopped before its first checkpoint (``metrics.<n>.jsonl``, ``config.<n>.yaml``), so a restart from scratch never
appends to old rows; ``write_config`` writes ``config.yaml`` once: a resume that changes keys records them in
``config_changes.jsonl`` and leaves ``config.yaml`` as the run started.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from vipo import checkpoints as ckpts
from vipo.config import Config
from vipo.records import append_jsonl, atomic_write_text, clean_temporary, set_aside_attempt

CHANGES = "config_changes.jsonl"


class RunExists(FileExistsError):
    """A new run was asked for in a folder that already holds one (train.py exits with ``lease.EXIT_EXISTS``)."""


def new_run_dir(cfg: Config, check: bool = True) -> Path:
    run_id = cfg.run_id or f"{cfg.experiment}-{datetime.now():%Y%m%d-%H%M%S}-s{cfg.train.seed}"
    run_dir = Path(cfg.results_root) / run_id
    if check:
        check_new(run_dir)
    return run_dir


def check_new(run_dir: Path) -> None:
    if ckpts.exists(run_dir) or (run_dir / "summary.json").exists():
        raise RunExists(f"run folder {run_dir} already holds a run; continue it with resume={run_dir} "
                        "or choose another run_id")


def prepare(run_dir: Path, resume: bool) -> None:
    """Clean up after an interrupted process; for a start from scratch, set an earlier attempt's files aside."""
    removed = clean_temporary(run_dir)
    if removed:
        print(f"[vipo] removed {len(removed)} temporary file(s) an interrupted write left: "
              + ", ".join(str(p.relative_to(run_dir)) for p in removed), flush=True)
    if not resume:
        n = set_aside_attempt(run_dir)
        if n is not None:
            print(f"[vipo] {run_dir} holds an attempt that stopped before its first checkpoint: starting over; its "
                  f"metrics.jsonl and config.yaml are kept as metrics.{n}.jsonl and config.{n}.yaml", flush=True)


def write_config(run_dir: Path, raw: dict, resume: bool, start: int) -> dict:
    """Write ``config.yaml`` for a new run. On resume it is never rewritten: the keys the resume changes (``resume=<run>
    train.lr=1e-5``) are appended to ``config_changes.jsonl`` with the iteration they apply from. Returns the
    changes (key -> {"from", "to"})."""
    import yaml
    from omegaconf import OmegaConf

    from vipo.results import flatten

    path = run_dir / "config.yaml"
    if not resume or not path.exists():
        atomic_write_text(path, OmegaConf.to_yaml(raw))
        return {}
    old = flatten(yaml.safe_load(path.read_text()) or {})
    new = flatten(json.loads(json.dumps(raw, default=str)))
    changed = {k: {"from": old.get(k), "to": new.get(k)} for k in sorted(set(old) | set(new))
               if k != "resume" and old.get(k) != new.get(k)}
    if changed:
        append_jsonl(run_dir / CHANGES, {"iteration": start, "time": datetime.now().isoformat(timespec="seconds"),
                                         "changes": changed})
        shown = ", ".join(f"{k}: {v['from']!r} -> {v['to']!r}" for k, v in changed.items())
        print(f"[vipo] this resume changes {shown} from iteration {start}; config.yaml keeps the run's original "
              f"config, the change is recorded in {run_dir / CHANGES}", flush=True)
    return changed
