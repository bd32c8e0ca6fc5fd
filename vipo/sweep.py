"""Ablation grids: ``python sweep.py ablation=<name> [seeds=N] [workers=N] [overrides...]``.

An ablation file (``experiments/ablation/<name>.yaml``) lists cells, either by name (``cells:``, each a list
of overrides) or as a product of axes (``axes:``, key -> values). Every (cell, seed) pair is one run folder
``results/sweeps/<ablation>/<experiment>/<cell>-s<seed>``. A finished cell (``summary.json`` exists) is skipped, a
started one (checkpoint, no summary) is resumed, so re-running the same command after a crash finishes
the grid. Cells run through a launcher (``vipo.launchers``): subprocesses, ``workers`` at a time, one CPU thread
each when several run at once (``local``), or one SLURM array job (``slurm``). The table ``sweep.py`` prints at
the end comes from the summaries (``analysis.report.sweep_table``).
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from vipo.config import CONFIG_DIR, ConfigError, compose_dict, load, read_yaml, unknown_name
from vipo.records import read_summary
from vipo.registry import Registry

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cell:
    name: str  # cell label, part of the run folder name
    overrides: list[str]  # Hydra overrides of this cell
    seed: int  # train.seed
    run_dir: Path = field(default=Path())
    raw: dict = field(default_factory=dict)  # the resolved config the cell will run with
    status: str = ""  # after ``launch``: done | failed (this or another process ran it) | "" (not run)


def _fmt(value) -> str:
    return str(value).replace("/", "_").replace(" ", "")


def load_ablation(name: str) -> dict:
    from omegaconf import OmegaConf

    path = CONFIG_DIR / "ablation" / f"{name}.yaml"
    if not path.exists():
        raise unknown_name("ablation", name, [p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")])
    spec = OmegaConf.to_container(read_yaml(path), resolve=True)
    allowed = {"name", "table", "cells", "axes", "base", "seeds", "metrics", "reference", "per_reward", "requires"}
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigError(f"config error: unknown key(s) {sorted(unknown)} in {path}; allowed: {sorted(allowed)}")
    if bool(spec.get("cells")) == bool(spec.get("axes")):
        raise ConfigError(f"config error: {path} needs exactly one of 'cells' or 'axes'")
    names = cell_names(spec)
    if spec.get("reference") is not None and spec["reference"] not in names:
        raise ConfigError(f"config error: reference {spec['reference']!r} in {path} is not a cell; cells: {names}")
    _check_adaptations(spec, path, names)
    return spec


# -- cells that need something of the experiment ---------------------------------------------------------------
# ``per_reward: {cell: {reward name: [overrides]}}``: settings a cell carries on an experiment with that reward (e.g.
# more SmoothGrad copies for a saliency cell on HPSv2.1: hps: [psm.saliency.smooth_n=8]). ``requires: {cell:
# [need, ...]}``: what the cell needs of the experiment (a name in REQUIREMENTS); a cell whose need is not met, after
# what it carries, is left out of that experiment's grid with the reason printed, and the other cells run.
REQUIREMENTS: Registry[Callable[[dict], Optional[str]]] = Registry("cell requirement")


@REQUIREMENTS.register("differentiable_reward")
def _differentiable_reward(raw: dict) -> Optional[str]:
    """None when the composed config's reward has a usable input gradient (vipo.saliency), else why not."""
    from vipo.saliency import why_not_differentiable

    reward = dict(raw.get("reward") or {})
    return why_not_differentiable(reward.pop("name", None), reward)


def _check_adaptations(spec: dict, path: Path, names: list[str]) -> None:
    for key in ("per_reward", "requires"):
        given = spec.get(key) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"config error: {key} in {path} must map cell names to settings, got {given!r}")
        unknown = [c for c in given if c not in names]
        if unknown:
            raise ConfigError(f"config error: {key} in {path} names cell(s) {unknown} that are not cells; cells: {names}")
    for cell, by_reward in (spec.get("per_reward") or {}).items():
        if not isinstance(by_reward, dict) or not all(isinstance(v, list) for v in by_reward.values()):
            raise ConfigError(f"config error: per_reward.{cell} in {path} must map reward names to override lists, "
                              f"got {by_reward!r}")
    for cell, needs in (spec.get("requires") or {}).items():
        bad = [n for n in (needs or []) if n not in REQUIREMENTS]
        if bad or not isinstance(needs, list):
            raise ConfigError(f"config error: requires.{cell} in {path}: unknown requirement(s) {bad or needs!r}; "
                              f"known: {', '.join(REQUIREMENTS.names())}")


def adapt(spec: dict, cell: str, overrides: Sequence[str]) -> tuple[list[str], Optional[str]]:
    """What ``cell`` carries on the experiment its ``overrides`` compose (``per_reward`` of the reward there) and
    why it cannot run there (``requires``; None when it can)."""
    by_reward = (spec.get("per_reward") or {}).get(cell) or {}
    needs = (spec.get("requires") or {}).get(cell) or []
    if not by_reward and not needs:
        return [], None
    raw = compose_dict(overrides)
    carried = [str(o) for o in by_reward.get((raw.get("reward") or {}).get("name"), [])]
    if carried and needs:
        raw = compose_dict([*overrides, *carried])
    for need in needs:
        why = REQUIREMENTS.get(need)(raw)
        if why:
            return carried, f"needs {need}: {why}"
    return carried, None


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
    """``logger=none`` comes before the user's overrides: a sweep logs to W&B when asked (``logger=wandb``)."""
    return ["logger=none", *cell.overrides, *extra, f"train.seed={cell.seed}", f"results_root={root}",
            f"run_id={cell.name}-s{cell.seed}", f"+tags.ablation={ablation}", f"+tags.cell={cell.name}"]


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
    cells, adapted = [], {}
    for cell in expand_cells(spec, seeds):
        if cell.name not in adapted:
            adapted[cell.name] = adapt(spec, cell.name, [*cell.overrides, *extra])
            carried, why = adapted[cell.name]
            if why or carried:
                experiment = compose_dict([*(spec.get("base") or []), *extra]).get("experiment")
                where = f"[sweep] {ablation} on {experiment}: cell {cell.name}"
            if why:
                print(f"{where} left out: {why}", flush=True)
            elif carried:
                print(f"{where} carries {' '.join(carried)} (per_reward in the ablation file)", flush=True)
        carried, why = adapted[cell.name]
        if not why:
            cell.overrides = [*cell.overrides, *carried]
            cells.append(cell)
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
    diff = sorted(k for k in set(old) | set(new)
                  if k != "resume" and not k.startswith("logger.") and old.get(k) != new.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
        raise ConfigError(f"config error: {cell.run_dir} already holds a run with a different config ({shown}); "
                          "re-run with the same overrides, or move that folder away")


def resume_or_start(cell: Cell, runner: Sequence[str], args: Sequence[str]) -> list[str]:
    """The command that trains ``cell``: resume from its checkpoint when one exists, else start with ``args``."""
    if (cell.run_dir / "checkpoints" / "last.pt").exists():
        return [*runner, f"resume={cell.run_dir}", *logger_args(cell.raw)]
    return [*runner, *args]


def logger_args(raw: dict) -> list[str]:
    """The tracker of this invocation as dotted overrides, for a resumed run (whose other fields come from its
    config.yaml): a run started without W&B and resumed with ``logger=wandb`` logs its remaining iterations."""
    def fmt(v):
        return "null" if v is None else "[" + ",".join(map(str, v)) + "]" if isinstance(v, list) else str(v)

    return [f"logger.{k}={fmt(v)}" for k, v in (raw.get("logger") or {}).items()]


def cell_jobs(cells: Sequence[Cell], args_of, runner: Sequence[str]) -> list:
    """One launcher ``Job`` per cell: ``runner`` with the cell's overrides (``args_of(cell)``), or
    ``resume=<run_dir>`` (and this invocation's tracker) once the run folder holds a checkpoint."""
    from vipo.launchers import Job

    return [Job(c.run_dir, list(runner), list(args_of(c)), resume_args=logger_args(c.raw)) for c in cells]


def launch(cells: Sequence[Cell], args_of, runner: Sequence[str], launcher=None, workers: int = 1,
           threads: int | None = None, label: str = "sweep", root: Path | None = None) -> list:
    """Hand every cell without a ``summary.json`` that is not pending or running elsewhere to ``launcher`` (default:
    the local pool, ``workers`` at a time, ``threads`` CPU threads each, output in ``<run_dir>/train.log``). The local
    pool returns the jobs that failed, the SLURM launcher the jobs it submitted (with wait=true: those that ended
    without finishing). Each cell's ``status`` is set to done / failed when the launcher waited (the local pool,
    SLURM with wait=true), so the command exits 1 when a run failed."""
    from vipo.launchers import dispatch
    from vipo.launchers.local import LocalLauncher

    launcher = launcher or LocalLauncher(workers, threads)
    root = root or (cells[0].run_dir.parent if cells else Path("."))
    out = dispatch(cell_jobs(cells, args_of, runner), launcher, label, root)
    if getattr(launcher, "wait", False):  # it returned the runs that ended unfinished
        bad = {str(j.run_dir) for j in out}
        for c in cells:
            c.status = "failed" if str(c.run_dir) in bad else "done" if read_summary(c.run_dir, quiet=True) is not None else ""
    return out


def default_runner() -> list[str]:
    return [sys.executable, str(ROOT / "train.py")]


def sweep_jobs(ablation: str, seeds: Sequence[int], extra: Sequence[str] = (), root: Path | None = None,
               runner: Sequence[str] | None = None) -> list:
    cells = plan(ablation, seeds, extra, root)
    return cell_jobs(cells, lambda c: cell_overrides(c, ablation, c.run_dir.parent, extra), runner or default_runner())


def run_sweep(ablation: str, seeds: Sequence[int], extra: Sequence[str] = (), workers: int = 1,
              root: Path | None = None, threads: int | None = None, runner: Sequence[str] | None = None,
              launcher=None) -> list[Cell]:
    """Run every unfinished cell; ``runner`` is the command line that trains one cell (default: train.py)."""
    runner = list(runner or default_runner())
    cells = plan(ablation, seeds, extra, root)
    launch(cells, lambda c: cell_overrides(c, ablation, c.run_dir.parent, extra), runner, launcher, workers, threads,
           label=ablation, root=Path(root or default_root(ablation, extra)))
    return cells
