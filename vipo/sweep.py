"""Ablation grids: ``python sweep.py ablation=<name> [seeds=N] [workers=N] [overrides...]``.

An ablation file (``experiments/ablation/<name>.yaml``) lists cells, either by name (``cells:``, each a list
of overrides) or as a product of axes (``axes:``, key -> values). Every (cell, seed) pair is one run folder
``results/sweeps/<ablation>/<experiment>/<cell>-s<seed>``. A finished cell (``summary.json`` exists) is skipped, a
started one (checkpoint, no summary) is resumed, so re-running the same command after a crash finishes
the grid. Cells run as subprocesses, ``workers`` at a time, one CPU thread each when several run at once. The
table ``sweep.py`` prints at the end comes from the summaries (``analysis.report.sweep_table``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from typing import Callable, Optional

from vipo.config import CONFIG_DIR, ConfigError, compose_dict, load, read_yaml, unknown_name
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
# the saliency cell selects HPSv2.1's differentiable path, reward.quantize=false). ``requires: {cell: [need, ...]}``:
# what the cell needs of the experiment (a name in REQUIREMENTS); a cell whose need is not met, after what it
# carries, is left out of that experiment's grid with the reason printed, and the other cells run.
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


def default_root(ablation: str, extra: Sequence[str] = ()) -> Path:
    """``results/sweeps/<ablation>/<experiment>``: the same ablation on another experiment gets its own folder."""
    spec = load_ablation(ablation)
    cfg, _ = load([*(spec.get("base") or []), *extra])
    return ROOT / "results" / "sweeps" / ablation / cfg.experiment


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


def _command(cell: Cell, ablation: str, extra: Sequence[str], runner: Sequence[str]) -> list[str]:
    return resume_or_start(cell, runner, cell_overrides(cell, ablation, cell.run_dir.parent, extra))


def run_sweep(ablation: str, seeds: Sequence[int], extra: Sequence[str] = (), workers: int = 1,
              root: Path | None = None, threads: int | None = None, runner: Sequence[str] | None = None) -> list[Cell]:
    """Run every unfinished cell; ``runner`` is the command line that trains one cell (default: train.py)."""
    runner = list(runner or [sys.executable, str(ROOT / "train.py")])
    cells = plan(ablation, seeds, extra, root)
    launch(cells, lambda c: _command(c, ablation, extra, runner), workers, threads, label=ablation)
    return cells


def _die_with_parent(parent: int):
    """``preexec_fn`` of a trainer: SIGTERM it when the sweep process dies, however it dies (Linux
    ``PR_SET_PDEATHSIG``; elsewhere a re-run adopts surviving trainers through their leases)."""

    def setup() -> None:
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def launch(cells: Sequence[Cell], command, workers: int = 1, threads: int | None = None,
           label: str = "sweep") -> list[Cell]:
    """Run ``command(cell)`` (an argv) for every cell without a ``summary.json``, ``workers`` at a time, each with
    ``threads`` CPU threads (default: one when several run at once, else what ``train.threads`` decides) and its
    output in ``<run_dir>/train.log``. Returns the cells that failed.

    A cell whose run folder is leased by a live process (another sweep, a trainer that outlived its sweep) is
    "running elsewhere": it is not started but waited for, and counted by how it ends (a summary: done;
    ``failed.json`` written meanwhile: failed; neither, its holder gone: resumed here). Trainers get SIGTERM
    when this process dies."""
    from vipo import lease

    if workers < 1:
        raise ConfigError(f"config error: workers={workers}: needs at least 1")
    threads = threads or (1 if workers > 1 else None)
    from vipo.records import read_summary

    todo = [c for c in cells if read_summary(c.run_dir) is None]  # an unreadable summary: the run is finished again
    print(f"[sweep] {label}: {len(cells)} runs, {len(cells) - len(todo)} done, {len(todo)} to run "
          f"({workers} at a time) -> {cells[0].run_dir.parent if cells else '-'}", flush=True)
    env = {**os.environ, "VIPO_PARALLEL_RUNS": str(workers)}  # train.threads=0 (auto) reads it
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    running: list[tuple[Cell, subprocess.Popen, Path]] = []
    elsewhere: dict[int, tuple[Cell, float]] = {}  # id(cell) -> (cell, when first seen held elsewhere)
    failed: list[Cell] = []
    finished = 0
    queue = list(todo)
    started = time.time()

    def held_elsewhere(cell: Cell) -> None:
        info = lease.holder(cell.run_dir) or {}
        elsewhere[id(cell)] = (cell, time.time())
        print(f"[sweep] running elsewhere: {cell.run_dir.name} (held by {lease.describe(info)}); waiting for it",
              flush=True)

    def progress() -> str:
        return f"  [{finished}/{len(todo)}, {(time.time() - started) / 60:.1f} min]"

    try:
        while queue or running or elsewhere:
            while queue and len(running) < workers:
                cell = queue.pop(0)
                if lease.is_live(cell.run_dir):
                    held_elsewhere(cell)
                    continue
                cell.run_dir.mkdir(parents=True, exist_ok=True)
                log = cell.run_dir / "train.log"
                with open(log, "a") as out:
                    proc = subprocess.Popen(command(cell), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            preexec_fn=_die_with_parent(os.getpid()))
                running.append((cell, proc, log))
                print(f"[sweep] start {cell.run_dir.name}  (log: {log})", flush=True)
            time.sleep(0.5)
            for item in list(running):
                cell, proc, log = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                if proc.returncode == lease.EXIT_HELD:  # another process took the folder first
                    held_elsewhere(cell)
                    continue
                if proc.returncode == lease.EXIT_EXISTS and not (cell.run_dir / "summary.json").exists():
                    queue.append(cell)  # another process checkpointed it meanwhile and stopped: resume it
                    continue
                finished += 1
                ok = proc.returncode in (0, lease.EXIT_EXISTS) and (cell.run_dir / "summary.json").exists()
                cell.status = "done" if ok else "failed"
                print(f"[sweep] {'done ' if ok else 'FAILED'} {cell.run_dir.name}"
                      + ("" if ok else f" (exit {proc.returncode}; see {log})") + progress(), flush=True)
                if not ok:
                    failed.append(cell)
            for key, (cell, since) in list(elsewhere.items()):
                if lease.is_live(cell.run_dir):
                    continue
                del elsewhere[key]
                fail = cell.run_dir / "failed.json"
                if (cell.run_dir / "summary.json").exists():
                    finished += 1
                    cell.status = "done"
                    print(f"[sweep] done  {cell.run_dir.name} (elsewhere)" + progress(), flush=True)
                elif fail.exists() and fail.stat().st_mtime >= since - 1:
                    finished += 1
                    failed.append(cell)
                    cell.status = "failed"
                    print(f"[sweep] FAILED {cell.run_dir.name} (elsewhere; see {fail})" + progress(), flush=True)
                else:  # its holder stopped without finishing: continue it here
                    print(f"[sweep] {cell.run_dir.name}: its holder stopped before finishing; continuing it here",
                          flush=True)
                    queue.append(cell)
    finally:
        for _, proc, _ in running:  # interrupted (Ctrl-C, an error): stop the trainers this sweep started
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if failed:
        print(f"[sweep] {len(failed)} run(s) failed; re-run the same command to retry them", flush=True)
    return failed
