"""Studies: several ablation files, rewards and seed counts as one resumable command.

    python sweep.py study=toy [workers=2] [overrides...]     # run (or finish) every run of the study
    python sweep.py study=toy table                          # only print its tables

A study file (``experiments/study/<name>.yaml``) names the world every run starts from (``world``: overrides),
the rewards (``rewards``: name -> overrides), and its ``parts``: an ablation file, its seeds, the rewards it runs
on and optionally a subset of its cells. Cells of different ablation files that resolve to the same config (the
default ViPO cell is in most of them) are run once and shared: every run is keyed by its resolved config and
seed. Run folders live in ``<root>/<reward>/<ablation>.<cell>-s<seed>`` (named after the first part that needs
them) and ``<root>/index.json`` maps every (reward, ablation, cell, seed) of the study to its folder, so tables
are rebuilt from committed files alone. Runs are ordered seed by seed (all arms with seed 0 first), so a study
cut short by a crash or the end of a session is balanced across arms; re-running the command resumes it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vipo.config import CONFIG_DIR, ConfigError, load, read_yaml, unknown_name
from vipo.sweep import ROOT, Cell, _check_same_config, _fmt, adapt, default_runner, expand_cells, launch, load_ablation

STUDY_KEYS = {"name", "title", "root", "world", "rewards", "parts", "analysis", "claims", "confirmatory"}
PART_KEYS = {"ablation", "seeds", "rewards", "cells"}
IGNORED = ("run_id", "results_root", "resume", "tags", "logger")  # fields that do not make two runs different


@dataclass
class StudyRun:
    cell: Cell  # the unique run: overrides (world + reward + ablation cell), seed, run_dir, resolved config
    reward: str  # reward name of the study
    members: list[tuple[str, str]] = field(default_factory=list)  # (ablation, cell) pairs this run serves


def load_study(name: str | Path) -> dict:
    """``experiments/study/<name>.yaml``, or a path to a study file."""
    from omegaconf import OmegaConf

    path = Path(name) if str(name).endswith(".yaml") else CONFIG_DIR / "study" / f"{name}.yaml"
    if not path.exists():
        raise unknown_name("study", name, [p.stem for p in (CONFIG_DIR / "study").glob("*.yaml")])
    spec = OmegaConf.to_container(read_yaml(path), resolve=True)
    unknown = set(spec) - STUDY_KEYS
    if unknown:
        raise ConfigError(f"config error: unknown key(s) {sorted(unknown)} in {path}; allowed: {sorted(STUDY_KEYS)}")
    for key in ("rewards", "parts"):
        if not spec.get(key):
            raise ConfigError(f"config error: {path} needs '{key}'")
    for i, part in enumerate(spec["parts"]):
        bad = set(part) - PART_KEYS
        if bad or "ablation" not in part:
            raise ConfigError(f"config error: part {i} of {path}: needs 'ablation', allowed keys {sorted(PART_KEYS)}"
                              + (f", got unknown {sorted(bad)}" if bad else ""))
        for r in part.get("rewards") or []:
            if r not in spec["rewards"]:
                raise ConfigError(f"config error: part {part['ablation']} of {path} names reward {r!r}; "
                                  f"the study's rewards are {sorted(spec['rewards'])}")
    if spec.get("confirmatory") is not None:  # pre-registered claims (vipo/confirm.py)
        from vipo.confirm import check_block

        check_block(spec, path, load_study)
    return spec


def study_of_root(root: Path) -> str | None:
    """The name of the study file in ``experiments/study/`` whose results folder is ``root`` (None if none)."""
    root = Path(root).resolve()
    for path in sorted((CONFIG_DIR / "study").glob("*.yaml")):
        try:
            spec = load_study(path)
        except ConfigError:
            continue
        if study_root(spec).resolve() == root:
            return path.stem
    return None


def _seeds(value) -> list[int]:
    return list(range(value)) if isinstance(value, int) else [int(s) for s in value]


def _key(raw: dict) -> str:
    kept = {k: v for k, v in raw.items() if k not in IGNORED}
    return hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def study_root(spec: dict, root: Path | None = None, results: Path | None = None) -> Path:
    """``root`` if given; else the study file's ``root`` (default ``results/studies/<name>``), under ``results``
    instead of the project's ``results/`` folder when ``results_root=`` names one."""
    if root:
        return Path(root)
    rel = Path(spec.get("root", f"results/studies/{spec['name']}"))
    if results is None:
        return ROOT / rel
    return Path(results) / (rel.relative_to("results") if rel.parts[:1] == ("results",) else rel.name)


def plan_study(name: str | Path, extra: Sequence[str] = (), root: Path | None = None,
               seeds_cap: int | None = None) -> tuple[list[StudyRun], list[dict]]:
    """Every unique run of the study in running order, and the index rows (reward, ablation, cell, seed, run).

    Every config is composed and validated here, so a bad cell stops the study before anything runs."""
    spec = load_study(name)
    root = study_root(spec, root)
    world = list(spec.get("world") or [])
    by_key: dict[tuple[str, str], StudyRun] = {}
    order: list[tuple[int, int, str]] = []
    index: list[dict] = []
    for p, part in enumerate(spec["parts"]):
        abl = load_ablation(part["ablation"])
        seeds = _seeds(part.get("seeds", abl.get("seeds") or [0]))[:seeds_cap]
        cells = {c.name: c for c in expand_cells(abl, [0])}
        wanted = part.get("cells") or list(cells)
        missing = [c for c in wanted if c not in cells]
        if missing:
            raise ConfigError(f"config error: study {name}: ablation {part['ablation']} has no cell(s) {missing}; "
                              f"its cells: {list(cells)}")
        for reward in part.get("rewards") or list(spec["rewards"]):
            for cell_name in wanted:
                where = f"study {name}, reward {reward}, ablation {part['ablation']}, cell {cell_name}"
                carried, why = adapt(abl, cell_name, [*world, *spec["rewards"][reward], *cells[cell_name].overrides,
                                                      *extra])  # the ablation file's per_reward / requires
                if why:
                    print(f"[study] {where} left out: {why}", flush=True)
                    continue
                base = ["logger=none", *world, *spec["rewards"][reward], *cells[cell_name].overrides, *carried,
                        *extra]  # logger=none first: the user's logger=... wins
                try:
                    _, raw0 = load(base)  # composed once; the seed only sets train.seed
                except ConfigError as e:
                    raise ConfigError(f"{e} ({where})") from None
                for seed in seeds:
                    raw = copy.deepcopy(raw0)
                    raw["train"]["seed"] = seed
                    key = (reward, _key(raw))
                    if key not in by_key:
                        run_id = f"{part['ablation']}.{_fmt(cell_name)}-s{seed}"
                        cell = Cell(cell_name, [*base], seed, root / reward / run_id, raw)
                        by_key[key] = StudyRun(cell, reward)
                        order.append((seeds.index(seed), p, key))
                    run = by_key[key]
                    run.members.append((part["ablation"], cell_name))
                    index.append({"reward": reward, "ablation": part["ablation"], "cell": cell_name,
                                  "seed": seed, "run": f"{reward}/{run.cell.run_dir.name}"})
    runs = [by_key[k] for _, _, k in sorted(order, key=lambda t: (t[0], t[1]))]
    for run in runs:
        _check_same_config(_with_run_fields(run, spec["name"]))
    return runs, index


def freeze_study(name: str | Path, root: Path | None = None) -> Path:
    """``python sweep.py study=<name> freeze``: write the plan of the study's confirmatory claims
    (``vipo.confirm.freeze``) into its root, before any of its runs has finished."""
    from vipo.confirm import freeze, study_path

    spec = load_study(name)
    root = study_root(spec, root)
    if not spec.get("confirmatory"):
        raise ConfigError(f"config error: {study_path(name)} has no 'confirmatory:' block; nothing to freeze")
    _, index = plan_study(name, root=root)
    return freeze(spec, study_path(name), root, index)


def _results_root(run_dir: Path) -> str:
    """The run's parent folder, relative to the project root when inside it (runs start there), so committed
    config files do not depend on where the project was cloned."""
    parent = run_dir.parent.resolve()
    return str(parent.relative_to(ROOT)) if parent.is_relative_to(ROOT) else str(parent)


def _run_fields(run: StudyRun, study: str) -> dict:
    """What a study adds to a run's config besides its overrides: where it lives and its tags."""
    ablation, cell = run.members[0]
    return {"run_id": run.cell.run_dir.name, "results_root": _results_root(run.cell.run_dir),
            "tags": {"study": study, "reward": run.reward, "ablation": ablation, "cell": cell}}


def _run_args(run: StudyRun, study: str) -> list[str]:
    fields = _run_fields(run, study)
    return [f"train.seed={run.cell.seed}", f"results_root={fields['results_root']}", f"run_id={fields['run_id']}",
            *(f"+tags.{k}={v}" for k, v in fields["tags"].items())]


def _with_run_fields(run: StudyRun, study: str) -> Cell:
    """The cell as it will be written to config.yaml (run fields included), for the same-config check."""
    cell = run.cell
    return Cell(cell.name, cell.overrides, cell.seed, cell.run_dir, {**cell.raw, **_run_fields(run, study)})


def write_index(root: Path, index: list[dict]) -> Path:
    path = root / "index.json"
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(index, indent=1) + "\n"
    if not path.exists() or path.read_text(errors="replace") != text:
        from vipo.records import atomic_write_text

        atomic_write_text(path, text)
    return path


def select_parts(spec: dict, runs: list[StudyRun], only_parts: Sequence[str] | None) -> list[StudyRun]:
    if not only_parts:
        return runs
    known = [p["ablation"] for p in spec["parts"]]
    unknown = [p for p in only_parts if p not in known]
    if unknown:
        raise ConfigError(f"config error: study {spec['name']} has no part(s) {unknown}; its parts: {known}")
    return [r for r in runs if any(abl in only_parts for abl, _ in r.members)]


def study_jobs(name: str | Path, extra: Sequence[str] = (), root: Path | None = None,
               runner: Sequence[str] | None = None, seeds_cap: int | None = None,
               only_parts: Sequence[str] | None = None) -> tuple[list, list[StudyRun]]:
    """The launcher jobs of the study's runs (``vipo.launchers.Job``), in running order, and the runs."""
    from vipo.sweep import cell_jobs

    spec = load_study(name)
    runs, _ = plan_study(name, extra, study_root(spec, root), seeds_cap)
    runs = select_parts(spec, runs, only_parts)
    by_cell = {id(r.cell): r for r in runs}
    return cell_jobs([r.cell for r in runs], lambda c: [*c.overrides, *_run_args(by_cell[id(c)], spec["name"])],
                     runner or default_runner()), runs


def run_study(name: str | Path, extra: Sequence[str] = (), workers: int = 1, root: Path | None = None,
              threads: int | None = None, runner: Sequence[str] | None = None, seeds_cap: int | None = None,
              only_parts: Sequence[str] | None = None, launcher=None) -> list[StudyRun]:
    """Run every unfinished run of the study (resuming started ones) through ``launcher`` (default: the local
    pool with ``workers``); returns the runs launched.

    ``only_parts`` (ablation names) runs just the runs those parts need (a run shared with another part counts);
    the index still lists the whole study, so tables show what is missing."""
    runner = list(runner or default_runner())
    spec = load_study(name)
    root = study_root(spec, root)
    if spec.get("confirmatory"):  # pre-registered: runs only against the frozen plan (vipo/confirm.py)
        from vipo.confirm import check_plan, study_path

        check_plan(spec, study_path(name), root)
    runs, index = plan_study(name, extra, root, seeds_cap)
    write_index(root, index)
    shared = len(index) - len(runs)
    print(f"[study] {spec['name']}: {len(index)} (reward, ablation, cell, seed) entries -> {len(runs)} unique runs "
          f"({shared} shared between ablation files) under {root}", flush=True)
    if only_parts:
        runs = select_parts(spec, runs, only_parts)
        print(f"[study] parts {list(only_parts)}: {len(runs)} of those runs", flush=True)
    by_cell = {id(r.cell): r for r in runs}
    launch([r.cell for r in runs], lambda c: [*c.overrides, *_run_args(by_cell[id(c)], spec["name"])], runner,
           launcher, workers, threads, label=f"study {spec['name']}", root=root)
    return runs


def read_index(root: Path) -> list[dict]:
    """``<root>/index.json``. One that cannot be read (truncated, garbage) is rebuilt from the study file whose
    results folder ``root`` is (``plan_study``: the same rows, nothing runs) with a warning naming it; when no study
    file owns ``root``, ``FileNotFoundError`` says so in one line."""
    from vipo.records import read_json, warn

    path = Path(root) / "index.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the study (python sweep.py study=...) to create it")
    index = read_json(path, quiet=True)
    if isinstance(index, list) and all(isinstance(e, dict) and {"reward", "ablation", "cell", "seed", "run"} <= set(e)
                                       for e in index):
        return index
    name = study_of_root(Path(root))
    if name is None:
        raise FileNotFoundError(f"{path} is unreadable and no study file in {CONFIG_DIR / 'study'} has {root} as its "
                                "results folder to rebuild it from; re-run the study command to rewrite it")
    _, index = plan_study(name, root=Path(root))
    write_index(Path(root), index)
    warn(f"{path} was unreadable; rebuilt it from experiments/study/{name}.yaml ({len(index)} entries)")
    return index


def study_frame(root: Path, reward: str, ablation: str):
    """One row per finished run of (reward, ablation), with ``tags.cell`` set to the ablation's own cell name
    (a shared run appears under each ablation that uses it). Empty if none finished."""
    import pandas as pd

    from vipo.results import read_run

    root = Path(root)
    rows = []
    for entry in read_index(root):
        if entry["reward"] != reward or entry["ablation"] != ablation:
            continue
        run_dir = root / entry["run"]
        if not (run_dir / "summary.json").exists():
            continue
        row = read_run(run_dir)  # None (warned, naming the file) for an unreadable summary
        if row is None:
            continue
        row.update({"tags.cell": entry["cell"], "tags.ablation": ablation, "tags.reward": reward,
                    "seed": entry["seed"]})
        rows.append(row)
    return pd.DataFrame(rows)
