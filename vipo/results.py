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


def read_run(run_dir: Path) -> dict:
    import yaml

    row = flatten(json.loads((run_dir / "summary.json").read_text()))
    for key, value in eval_records(run_dir).items():  # the training run's own summary wins on a shared name
        row.setdefault(key, value)
    cfg_path = run_dir / "config.yaml"
    if cfg_path.exists():
        row.update(flatten(yaml.safe_load(cfg_path.read_text()) or {}, "cfg."))
    from vipo.environment import row as env_row

    row.update(env_row(run_dir))  # env.torch, env.git_commit, ...: what produced the numbers (env.json)
    row["run_dir"] = str(run_dir)
    return row


def collect(root: str | Path = "results", cache: bool = True) -> pd.DataFrame:
    root = Path(root)
    summaries = sorted(root.rglob("summary.json"))
    cache_path = root / CACHE
    if cache and cache_path.exists() and summaries:
        envs = [p.parent / "env.json" for p in summaries]  # a resume appends to env.json after the summary
        records = [p.parent / EVAL_RECORDS for p in summaries]  # python -m vipo.eval appends after the run
        newest = max(p.stat().st_mtime for p in summaries + [e for e in envs + records if e.exists()])
        if cache_path.stat().st_mtime >= newest:
            cached = pd.read_parquet(cache_path)
            if len(cached) == len(summaries):
                return cached
    df = pd.DataFrame([read_run(p.parent) for p in summaries])
    if cache and not df.empty:
        tmp = cache_path.with_suffix(".tmp.parquet")
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(tmp, index=False)
        tmp.replace(cache_path)
    return df


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vipo.results", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default="results", help="folder to search for summary.json files")
    args = ap.parse_args(argv)
    df = collect(args.root)
    if df.empty:
        print(f"no runs with summary.json under {args.root}")
        return
    cols = ["run_id", "experiment", "advantage_mode", "seed", *[c for c in df.columns if c.startswith("eval/")]]
    with pd.option_context("display.max_rows", 200, "display.width", 200):
        print(df[[c for c in cols if c in df.columns]].to_string(index=False))


if __name__ == "__main__":
    main()
