"""Run records -> one table. ``collect(root)`` reads every ``summary.json`` below ``root`` (with the run's
``config.yaml``) into a pandas DataFrame, one row per run: summary fields as they are, config fields
flattened as ``cfg.<section>.<key>``, the run's environment (``env.json``: package versions, git commit) as
``env.<field>``. The table is cached as ``<root>/index.parquet`` and rebuilt when a summary is newer than the
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


def read_run(run_dir: Path) -> dict:
    import yaml

    row = flatten(json.loads((run_dir / "summary.json").read_text()))
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
        newest = max(p.stat().st_mtime for p in summaries + [e for e in envs if e.exists()])
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
