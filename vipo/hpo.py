"""Optuna searches driven through the config composer (not hydra-optuna-sweeper, see docs/DESIGN.md §5).

A study spec (``sweeps/<name>.yaml``) names the search space (config key -> distribution), the metric
(one ``eval/*`` key, or a weighted sum of several), its direction, the number of trials, the sampler, the
pruner and the storage (default ``sqlite:///results/optuna/<name>.db``; any SQLAlchemy URL such as
PostgreSQL serves many workers). Each trial is one training run in this process under
``results/optuna/<name>/trial_<n>``; every evaluation is reported to the pruner. Killing a worker and
starting it again resumes the study: finished trials stay, a trial whose worker is gone (its trial folder's lease,
``vipo.lease``: a dead pid on this host or a silent heartbeat) is marked FAIL at once and retried, and the loop
stops once ``n_trials`` trials have finished (complete or pruned). A study remembers its fixed overrides (the
spec's ``base`` and the command line's); continuing it with others is refused, naming the keys.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from vipo.config import ConfigError, load, read_yaml, unknown_name
from vipo.records import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
SPEC_DIR = ROOT / "sweeps"


@dataclass
class StudySpec:
    name: str  # study name (also the default SQLite file name)
    metric: Any  # "eval/reward" or {"eval/reward": 1.0, "eval/shape_acc": 1.0} (weighted sum)
    direction: str = "maximize"  # maximize | minimize
    n_trials: int = 20  # finished trials (complete + pruned) the study aims for
    space: dict = field(default_factory=dict)  # key -> {type: float|int|categorical, low, high, log, choices}
    base: list = field(default_factory=list)  # overrides applied to every trial
    sampler: dict = field(default_factory=lambda: {"name": "tpe", "seed": 0})  # tpe | random, seed
    pruner: dict = field(default_factory=lambda: {"name": "median", "n_startup_trials": 4, "n_warmup_steps": 1})
    storage: Optional[str] = None  # SQLAlchemy URL; default sqlite:///results/optuna/<name>.db
    heartbeat_seconds: int = 60  # a RUNNING trial silent for 2x this is failed and retried


def load_spec(name_or_path: str) -> StudySpec:
    from omegaconf import OmegaConf

    path = Path(name_or_path)
    if not path.suffix:
        path = SPEC_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise unknown_name("search", name_or_path, [p.stem for p in SPEC_DIR.glob("*.yaml")])
    raw = OmegaConf.to_container(read_yaml(path), resolve=True)
    try:
        spec = StudySpec(**raw)
    except TypeError as e:
        raise ConfigError(f"config error in {path}: {e}") from None
    for key, dist in spec.space.items():
        if dist.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(f"config error in {path}: space.{key}.type must be float, int or categorical")
    if spec.direction not in ("maximize", "minimize"):
        raise ConfigError(f"config error in {path}: direction must be maximize or minimize")
    return spec


def objective_value(metrics: dict, metric: Any) -> float:
    if isinstance(metric, str):
        if metric not in metrics:
            raise KeyError(f"metric {metric!r} not among the evaluation results: {sorted(metrics)}")
        return float(metrics[metric])
    return float(sum(w * float(metrics[k]) for k, w in metric.items()))


def suggest(trial, space: dict) -> list[str]:
    out = []
    for key, d in space.items():
        if d["type"] == "float":
            v = trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log", False)))
        elif d["type"] == "int":
            v = trial.suggest_int(key, int(d["low"]), int(d["high"]), log=bool(d.get("log", False)))
        else:
            v = trial.suggest_categorical(key, list(d["choices"]))
        out.append(f"{key}={v}")
    return out


def storage_url(spec: StudySpec, root: Path) -> str:
    """The study's SQLAlchemy URL: ``spec.storage``, or the SQLite file ``<root>/<name>.db``."""
    return spec.storage or f"sqlite:///{(Path(root) / f'{spec.name}.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL with any password masked, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def dedupe_overrides(overrides: Sequence[str]) -> list[str]:
    """One override per key, the last one given (what Hydra applies), in the order of those last ones:
    ``[a=1, b=2, a=3] -> [b=2, a=3]``. A leading ``+`` does not make another key (``+tags.x`` = ``tags.x``)."""
    last = {o.split("=", 1)[0].lstrip("+"): i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[o.split("=", 1)[0].lstrip("+")] == i]


def make_storage(spec: StudySpec, root: Path):
    """An RDB storage with heartbeats (a killed worker's trial is failed and retried). The heartbeat API is marked
    experimental by optuna and its retry callback was renamed in 4.9 (``failed_trial_callback`` ->
    ``heartbeat_stale_trial_callback``): the name this optuna takes is used and the experimental notice, which
    concerns the feature this module chose knowingly, is silenced here and only here."""
    import inspect
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    try:  # renamed in optuna 5
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback as Retry

    url = storage_url(spec, root)
    if spec.storage is None:
        root.mkdir(parents=True, exist_ok=True)
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    params = inspect.signature(RDBStorage).parameters
    callback = "heartbeat_stale_trial_callback"
    callback = callback if callback in params else "failed_trial_callback"
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=spec.heartbeat_seconds,
                                  grace_period=2 * spec.heartbeat_seconds,
                                  **{callback: Retry(max_retry=2)}), optuna
        except Exception as e:  # workers that start together race to create the schema: wait and retry
            race = ("already exists", "duplicate key", "UNIQUE constraint failed")  # PostgreSQL / SQLite wording
            if attempt == 5 or not any(r in str(e) for r in race):
                raise
            time.sleep(0.5 + random.random())


def build_study(spec: StudySpec, root: Path):
    storage, optuna = make_storage(spec, root)
    s = spec.sampler
    sampler = (optuna.samplers.RandomSampler(seed=s.get("seed")) if s.get("name") == "random"
               else optuna.samplers.TPESampler(seed=s.get("seed")))
    p = spec.pruner
    pruner = (optuna.pruners.NopPruner() if p.get("name") == "none" else
              optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 4),
                                          n_warmup_steps=p.get("n_warmup_steps", 1)))
    return optuna.create_study(study_name=spec.name, storage=storage, sampler=sampler, pruner=pruner,
                               direction=spec.direction, load_if_exists=True)


GRACE_S = 30.0  # a RUNNING trial without a lease on its folder is left alone this long (its worker is starting)


def _overrides(items: Sequence[str]) -> dict:
    return {o.lstrip("+~").split("=", 1)[0]: (o.split("=", 1)[1] if "=" in o else None) for o in items}


def check_fixed(study, fixed: Sequence[str]) -> None:
    """A study remembers the overrides every trial shares (the spec's ``base`` and the command line's); continuing it
    with others would mix trials of two settings (and a best file from either), so it is refused, naming the keys."""
    old = study.user_attrs.get("fixed_overrides")
    if old is None:
        study.set_user_attr("fixed_overrides", list(fixed))
        return
    a, b = _overrides(old), _overrides(fixed)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:6])
        raise ConfigError(f"config error: study {study.study_name} was run with other fixed overrides ({shown}); "
                          "continue it with the same ones, or give this search another study name or storage")


def fail_abandoned(study, folder: Path, grace_s: float = GRACE_S) -> list[int]:
    """Mark FAIL every RUNNING trial whose worker is gone: its trial folder has no live lease (``vipo.lease``; a dead
    pid on this host, or no heartbeat for ``lease.STALE_S`` seconds anywhere) and it started more than ``grace_s``
    seconds ago. Its parameters are queued once more (a trial that is itself a retry is not). Returns the numbers."""
    import datetime as dt

    import optuna

    from vipo import lease

    now = dt.datetime.now()
    out = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        run_dir = folder / f"trial_{t.number:04d}"
        info = lease.holder(run_dir)
        if info is not None and lease.stale_reason(info) is None:
            continue  # a live worker, here or on another machine
        if info is None and t.datetime_start is not None and (now - t.datetime_start).total_seconds() < grace_s:
            continue
        why = lease.stale_reason(info) if info is not None else "no lease on its folder"
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)  # public API: a trial by number
        if "retry_of" not in t.user_attrs:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        print(f"[search] trial {t.number} was left RUNNING by a worker that is gone ({why}); marked FAIL"
              + ("" if "retry_of" in t.user_attrs else " and queued again"), flush=True)
        out.append(t.number)
    return out


def finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def run_search(name: str, extra: Sequence[str] = (), root: Path | None = None, n_trials: Optional[int] = None,
               storage: Optional[str] = None) -> dict:
    """Run (or resume) a study in this process until it has ``n_trials`` finished trials; returns the best.
    ``storage`` (a SQLAlchemy URL) replaces the spec's."""
    import optuna

    from vipo import lease, stop
    from vipo.train import Trainer

    stop.install()  # a cluster's time-limit signal ends the current trial's run cleanly (the trial is retried)
    spec = load_spec(name)
    if n_trials is not None:
        spec.n_trials = n_trials
    if storage:
        spec.storage = storage
    root = Path(root or ROOT / "results" / "optuna")
    load([*spec.base, *extra])  # fail fast on a bad base config, before any trial starts
    study = build_study(spec, root)
    check_fixed(study, [*spec.base, *extra])
    fail_abandoned(study, root / spec.name)

    def objective(trial) -> float:
        overrides = dedupe_overrides([*spec.base, *suggest(trial, spec.space), *extra])
        run_dir = root / spec.name / f"trial_{trial.number:04d}"
        held = lease.acquire(run_dir)  # first of all: from now on a restarted worker sees this trial as live
        try:
            cfg, raw = load(["logger=none", *overrides, f"results_root={run_dir.parent}", f"run_id={run_dir.name}",
                             f"+tags.search={spec.name}", f"+tags.trial={trial.number}"])
        except BaseException:
            held.release()
            raise
        raw["tags"]["params"] = cfg.tags["params"] = dict(trial.params)  # the trial's parameters, in W&B's config
        trial.set_user_attr("overrides", overrides)

        def report(iteration: int, metrics: dict) -> None:
            if iteration < 0:
                return
            trial.report(objective_value(metrics, spec.metric), step=iteration)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at iteration {iteration}")

        try:
            summary = Trainer(cfg, raw, on_eval=report, held=held).run()
        finally:
            held.release()  # (run releases it too; a trainer that fails to build does not get that far)
        return objective_value(summary, spec.metric)

    def stop_when_done(study, trial) -> None:
        if finished(study) >= spec.n_trials:
            study.stop()

    print(f"[search] {spec.name}: {finished(study)}/{spec.n_trials} trials finished; storage "
          f"{shown_url(storage_url(spec, root))}", flush=True)
    while finished(study) < spec.n_trials:
        study.optimize(objective, n_trials=1, callbacks=[stop_when_done], catch=(ValueError, RuntimeError))
    return save_best(study, spec, root)


def save_best(study, spec: StudySpec, root: Path) -> dict:
    best = study.best_trial
    out = {"study": spec.name, "metric": spec.metric, "direction": spec.direction, "value": best.value,
           "trial": best.number, "params": best.params, "overrides": best.user_attrs.get("overrides", []),
           "finished_trials": finished(study)}
    atomic_write_json(root / f"{spec.name}_best.json", out)
    print(f"[search] best trial {best.number}: {spec.metric} = {best.value:.4f}", flush=True)
    print("[search] overrides: " + " ".join(out["overrides"]), flush=True)
    print(f"[search] saved {root / f'{spec.name}_best.json'}", flush=True)
    return out


def trials_table(name: str, root: Path | None = None):
    """One row per trial of a search (number, state, value, parameters, minutes, run folder) from its storage;
    ``None`` when the search has not started (no SQLite file yet)."""
    import pandas as pd

    import optuna

    spec = load_spec(name)
    root = Path(root or ROOT / "results" / "optuna")
    url = storage_url(spec, root)
    if spec.storage is None and not (root / f"{spec.name}.db").exists():
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Using an existing study" line above the table
    study = build_study(spec, root)
    rows = []
    for t in study.get_trials(deepcopy=False):
        minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60 if t.datetime_complete else None
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value, **t.params,
                     "minutes": minutes, "run": str(root / spec.name / f"trial_{t.number:04d}")})
    df = pd.DataFrame(rows)
    df.attrs["storage"] = shown_url(url)
    return df


def print_trials(name: str, root: Path | None = None) -> None:
    df = trials_table(name, root)
    spec = load_spec(name)
    if df is None:
        where = storage_url(spec, Path(root or ROOT / "results" / "optuna"))
        print(f"[search] {spec.name}: no trials yet (no storage at {where}); start it: python sweep.py search={name}")
        return
    print(f"[search] {spec.name}: {len(df)} trials, metric {spec.metric} ({spec.direction}); "
          f"storage {df.attrs['storage']}")
    if not df.empty:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"[search] browse them: optuna-dashboard {df.attrs['storage']}   (pip install -e '.[dashboard]')")


def submit_search(name: str, extra: Sequence[str] = (), root: Path | None = None, workers: int = 1, launcher=None,
                  n_trials: Optional[int] = None, storage: Optional[str] = None,
                  runner: Optional[Sequence[str]] = None) -> list:
    """Start ``workers`` search workers through a launcher (on SLURM: one array job of ``workers`` tasks), all on
    the spec's RDB storage; each runs trials until the study has ``n_trials`` finished ones. Worker logs and job
    records live in ``<root>/<name>_workers/w<i>/``. Returns what the launcher returns."""
    import sys

    from vipo.launchers import Job, dispatch
    from vipo.launchers.local import LocalLauncher

    launcher = launcher or LocalLauncher(workers=workers)
    spec = load_spec(name)
    url = storage or spec.storage
    if getattr(launcher, "name", "local") != "local" and (url is None or url.startswith("sqlite")):
        raise ConfigError(f"config error: search {spec.name}: storage {url or 'sqlite (the default)'} is a file that "
                          f"workers on other nodes cannot share; launcher={launcher.name} needs a database server, "
                          "e.g. storage=postgresql://user@host/db")
    load([*spec.base, *extra])  # fail fast on a bad base config, before any job is submitted
    root = Path(root or ROOT / "results" / "optuna")
    runner = list(runner or [sys.executable, "-m", "vipo.hpo"])
    args = [str(name), str(root), *(["--storage", url] if url else []),
            *(["--trials", str(n_trials)] if n_trials else []), *extra]
    jobs = [Job(root / f"{spec.name}_workers" / f"w{i}", runner, args, resumable=False, done_file=None)
            for i in range(workers)]
    return dispatch(jobs, launcher, f"search {spec.name} ({workers} workers)", root)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m vipo.hpo <spec> <root> [--storage URL] [--trials N] [overrides]``: one search worker."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    spec, root, *rest = argv
    opts = {}
    while rest[:1] and rest[0] in ("--storage", "--trials"):
        opts[rest[0][2:]] = rest[1]
        rest = rest[2:]
    try:
        run_search(spec, rest, root=Path(root), n_trials=int(opts["trials"]) if "trials" in opts else None,
                   storage=opts.get("storage"))
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
