"""Run records -> one table. ``collect(root)`` reads every ``summary.json`` below ``root`` (with the run's
``config.yaml``) into a pandas DataFrame, one row per run: summary fields as they are, config fields
flattened as ``cfg.<section>.<key>``, the run's environment (``env.json``: package versions, git commit) as
``env.<field>``, and the latest value of each metric that ``python -m vipo.eval`` appended to the run's
``eval/summary.jsonl`` (as ``eval/<metric>``; the run's own summary wins on a shared name). The table is cached
as ``<root>/index.parquet`` and rebuilt when a summary, environment or evaluation record is newer than the
cache. ``python -m vipo.results [root]`` prints it; statistics over runs (means, intervals, paired differences)
are built by ``analysis.tables`` (``python -m analysis.tables root --by COLUMN``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import pandas as pd

CACHE = "index.parquet"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


EVAL_RECORDS = "eval/summary.jsonl"  # rows appended by python -m vipo.eval (post-hoc metrics, VBench)


def eval_records(run_dir: Path) -> dict:
    """``{"eval/<metric>": value}``: the latest numeric value of each metric in ``<run>/eval/summary.jsonl``
    (``python -m vipo.eval`` after training: VBench dimensions and totals, HPS, ...). A line that is not a
    record is skipped with a warning naming the file."""
    import math
    import warnings

    path = run_dir / EVAL_RECORDS
    out: dict = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            name, value = rec["metric"], rec["value"]
        except (json.JSONDecodeError, KeyError, TypeError):
            warnings.warn(f"{path}:{n} is not an evaluation record; skipped", stacklevel=2)
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[f"eval/{name}"] = float(value)
    return out


def read_run(run_dir: Path) -> dict | None:
    """One row: the run's summary and its config (``cfg.*``); None, with a warning naming the file, when
    ``summary.json`` or ``config.yaml`` cannot be read."""
    import yaml

    from vipo.records import read_summary, warn

    summary = read_summary(run_dir)
    if summary is None:
        return None
    row = flatten(summary)
    for key, value in eval_records(Path(run_dir)).items():  # the training run's own summary wins on a shared name
        row.setdefault(key, value)
    cfg_path = Path(run_dir) / "config.yaml"
    if cfg_path.exists():
        try:
            cfg = yaml.safe_load(cfg_path.read_text())
        except (yaml.YAMLError, OSError) as e:
            warn(f"{cfg_path} is unreadable ({type(e).__name__}); run skipped")
            return None
        row.update(flatten(cfg if isinstance(cfg, dict) else {}, "cfg."))
    from vipo.environment import row as env_row

    row.update(env_row(run_dir))  # env.torch, env.git_commit, ...: what produced the numbers (env.json)
    row["run_dir"] = str(run_dir)
    return row


def failed_runs(root: str | Path) -> list[tuple[Path, str]]:
    """Run folders under ``root`` whose last attempt failed (``failed.json``, no ``summary.json``), with the error."""
    from vipo.lease import run_state

    out = []
    for path in sorted(Path(root).rglob("failed.json")):
        state, detail = run_state(path.parent)
        if state == "failed":
            out.append((path.parent, detail))
    return out


def run_summaries(root: Path) -> list[Path]:
    """The ``summary.json`` files of runs under ``root``: a summary inside another run's folder (the
    ``<run>/eval/<set>/summary.json`` that ``python -m vipo.eval --run`` writes) belongs to that run's evaluation,
    whose metrics reach the table through ``eval/summary.jsonl``, and is not a run of its own."""
    found = sorted(root.rglob("summary.json"))
    run_dirs = {p.parent for p in found} | {p.parent for p in root.rglob("config.yaml")}
    return [p for p in found if not any(parent in run_dirs for parent in p.parent.parents)]


def collect(root: str | Path = "results", cache: bool = True) -> pd.DataFrame:
    """One row per run with a readable ``summary.json`` under ``root`` (unreadable ones are skipped with a warning;
    evaluation summaries inside a run folder are not runs: ``run_summaries``)."""
    root = Path(root)
    summaries = run_summaries(root)
    cache_path = root / CACHE
    if cache and cache_path.exists() and summaries:
        envs = [p.parent / "env.json" for p in summaries]  # a resume appends to env.json after the summary
        records = [p.parent / EVAL_RECORDS for p in summaries]  # python -m vipo.eval appends after the run
        newest = max(p.stat().st_mtime for p in summaries + [e for e in envs + records if e.exists()])
        if cache_path.stat().st_mtime >= newest:
            cached = pd.read_parquet(cache_path)
            if len(cached) == len(summaries):
                return cached
    df = pd.DataFrame([r for r in (read_run(p.parent) for p in summaries) if r is not None])
    if cache and not df.empty:
        tmp = cache_path.with_suffix(".tmp.parquet")
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(tmp, index=False)
        tmp.replace(cache_path)
    return df


def print_failed(root: str | Path, prefix: str = "") -> int:
    """List the failed runs under ``root`` (one line each); returns how many."""
    failed = failed_runs(root)
    for run_dir, error in failed:
        print(f"{prefix}FAILED {run_dir}: {error}", flush=True)
    return len(failed)


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    ap = argparse.ArgumentParser(prog="python -m vipo.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="results", help="folder to search for summary.json files")
    args = ap.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: results root {args.root} does not exist", file=sys.stderr)
        return 2
    df = collect(args.root)
    print_failed(args.root)
    if df.empty:
        print(f"no runs with summary.json under {args.root}")
        return 0
    cols = ["run_id", "experiment", "advantage_mode", "seed", *[c for c in df.columns if c.startswith("eval/")]]
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(df[[c for c in cols if c in df.columns]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
