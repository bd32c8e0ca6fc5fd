"""Ablation grids: ``python sweep.py ablation=<name> [seeds=N] [workers=N] [overrides...]``.

An ablation file (``experiments/ablation/<name>.yaml``) lists cells, either by name (``cells:``, each a list
of overrides) or as a product of axes (``axes:``, key -> values). Every (cell, seed) pair is one run folder
``results/sweeps/<ablation>/<experiment>/<cell>-s<seed>``. A finished cell (``summary.json`` exists) is skipped, a
started one (checkpoint, no summary) is resumed, so re-running the same command after a crash finishes
the grid. Cells run through a launcher (``vipo.launchers``): subprocesses, ``workers`` at a time, one CPU thread
each (``local``), or one SLURM array job (``slurm``). The table ``sweep.py`` prints at the end comes from the
summaries (``analysis.report.sweep_table``).
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vipo.config import CONFIG_DIR, ConfigError, load

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cell:
    name: str  # cell label, part of the run folder name
    overrides: list[str]  # Hydra overrides of this cell
    seed: int  # train.seed
    run_dir: Path = field(default=Path())
    raw: dict = field(default_factory=dict)  # the resolved config the cell will run with


def _fmt(value) -> str:
    return str(value).replace("/", "_").replace(" ", "")


def load_ablation(name: str) -> dict:
    from omegaconf import OmegaConf

    path = CONFIG_DIR / "ablation" / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")))
        raise ConfigError(f"config error: unknown ablation {name!r}; known: {known}")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    allowed = {"name", "table", "cells", "axes", "base", "seeds", "metrics", "reference"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"config error: unknown key(s) {sorted(unknown)} in {path}; allowed: {sorted(allowed)}")
    if bool(spec.get("cells")) == bool(spec.get("axes")):
        raise ConfigError(f"config error: {path} needs exactly one of 'cells' or 'axes'")
    names = cell_names(spec)
    if spec.get("reference") is not None and spec["reference"] not in names:
        raise ConfigError(f"config error: reference {spec['reference']!r} in {path} is not a cell; cells: {names}")
    return spec


def cell_names(spec: dict) -> list[str]:
    """The cells of an ablation in file order (the rows of its table)."""
    return list(dict.fromkeys(c.name for c in expand_cells(spec, [0])))


def expand_cells(spec: dict, seeds: Sequence[int]) -> list[Cell]:
    base = list(spec.get("base") or [])
    if spec.get("cells"):
        named = [(k, list(v or [])) for k, v in spec["cells"].items()]
    else:
        keys = list(spec["axes"])
        named = []
        for values in itertools.product(*(spec["axes"][k] for k in keys)):
            label = "_".join(f"{k.split('.')[-1]}-{_fmt(v)}" for k, v in zip(keys, values))
            named.append((label, [f"{k}={v if v is not None else 'null'}" for k, v in zip(keys, values)]))
    return [Cell(name, base + ov, seed) for name, ov in named for seed in seeds]


def cell_overrides(cell: Cell, ablation: str, root: Path, extra: Sequence[str]) -> list[str]:
    return [*cell.overrides, *extra, f"train.seed={cell.seed}", f"results_root={root}",
            f"run_id={cell.name}-s{cell.seed}", "logger=none",
            f"+tags.ablation={ablation}", f"+tags.cell={cell.name}"]


def default_root(ablation: str, extra: Sequence[str] = (), results: Path | None = None) -> Path:
    """``<results>/sweeps/<ablation>/<experiment>`` (``results/`` of the project unless ``results_root=`` names
    another folder): the same ablation on another experiment gets its own folder."""
    spec = load_ablation(ablation)
    cfg, _ = load([*(spec.get("base") or []), *extra])
    return Path(results or ROOT / "results") / "sweeps" / ablation / cfg.experiment


def plan(ablation: str, seeds: Sequence[int], extra: Sequence[str], root: Path | None = None) -> list[Cell]:
    """Expand the grid and validate every cell's config before anything runs."""
    spec = load_ablation(ablation)
    root = Path(root or default_root(ablation, extra))
    cells = expand_cells(spec, seeds)
    for cell in cells:
        cell.run_dir = root / f"{cell.name}-s{cell.seed}"
        try:
            _, cell.raw = load(cell_overrides(cell, ablation, root, extra))
        except ConfigError as e:
            raise ConfigError(f"{e} (ablation {ablation}, cell {cell.name})") from None
        _check_same_config(cell)
    return cells


def _check_same_config(cell: Cell) -> None:
    """A run folder that already exists must hold the same config, or skipping/resuming it would mix runs."""
    import yaml

    from vipo.results import flatten

    path = cell.run_dir / "config.yaml"
    if not path.exists():
        return
    old = flatten(yaml.safe_load(path.read_text()) or {})
    new = flatten(json.loads(json.dumps(cell.raw)))
    diff = sorted(k for k in set(old) | set(new) if k != "resume" and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
        raise ConfigError(f"config error: {cell.run_dir} already holds a run with a different config ({shown}); "
                          "re-run with the same overrides, or move that folder away")


def cell_jobs(cells: Sequence[Cell], args_of, runner: Sequence[str]) -> list:
    """One launcher ``Job`` per cell: ``runner`` with the cell's overrides (``args_of(cell)``), or
    ``resume=<run_dir>`` once the run folder holds a checkpoint."""
    from vipo.launchers import Job

    return [Job(c.run_dir, list(runner), list(args_of(c))) for c in cells]


def launch(cells: Sequence[Cell], args_of, runner: Sequence[str], launcher=None, workers: int = 1, threads: int = 1,
           label: str = "sweep", root: Path | None = None) -> list:
    """Hand every cell without a ``summary.json`` that is not pending or running elsewhere to ``launcher`` (default:
    the local pool, ``workers`` at a time, ``threads`` CPU threads each, output in ``<run_dir>/train.log``). The local
    pool returns the jobs that failed, the SLURM launcher the jobs it submitted (those that failed with wait=true)."""
    from vipo.launchers import dispatch
    from vipo.launchers.local import LocalLauncher

    launcher = launcher or LocalLauncher(workers, threads)
    root = root or (cells[0].run_dir.parent if cells else Path("."))
    return dispatch(cell_jobs(cells, args_of, runner), launcher, label, root)


def default_runner() -> list[str]:
    return [sys.executable, str(ROOT / "train.py")]


def sweep_jobs(ablation: str, seeds: Sequence[int], extra: Sequence[str] = (), root: Path | None = None,
               runner: Sequence[str] | None = None) -> list:
    cells = plan(ablation, seeds, extra, root)
    return cell_jobs(cells, lambda c: cell_overrides(c, ablation, c.run_dir.parent, extra), runner or default_runner())


def run_sweep(ablation: str, seeds: Sequence[int], extra: Sequence[str] = (), workers: int = 1,
              root: Path | None = None, threads: int = 1, runner: Sequence[str] | None = None,
              launcher=None) -> list[Cell]:
    """Run every unfinished cell; ``runner`` is the command line that trains one cell (default: train.py)."""
    runner = list(runner or default_runner())
    cells = plan(ablation, seeds, extra, root)
    launch(cells, lambda c: cell_overrides(c, ablation, c.run_dir.parent, extra), runner, launcher, workers, threads,
           label=ablation, root=Path(root or default_root(ablation, extra)))
    return cells
