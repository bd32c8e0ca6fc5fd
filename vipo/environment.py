"""What produced a run's numbers: the versions of the packages that can change them, Python, the accelerator, and
the project's git commit (with whether the tree had uncommitted changes).

``record(run_dir, iteration)`` writes ``<run_dir>/env.json`` when a run starts and, when a run is resumed, keeps
the original and appends the resume (with the fields that differ, printing a note when any do). ``row(run_dir)``
flattens the record into ``env.*`` columns for ``vipo.results``; ``analysis.environments`` says when the runs of one
table came from different environments. A record looks like::

    {"python": "3.11.7", "packages": {"torch": "2.13.0+cpu", "diffusers": "0.42.1", ...},
     "torch_cuda": null, "accelerator": "cpu",
     "git": {"commit": "2e1b271...", "dirty": false, "diff_sha1": null},
     "recorded_at": "2026-12-05T02:10:00+00:00",
     "resumes": [{"iteration": 5, "recorded_at": "...", "differs": {"packages.torch": ["2.13.0+cpu", "2.14.1"]}}]}
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

FILE = "env.json"
# distributions whose version can change a run's numbers (kernels, schedulers, model code, tokenizers, RNG, maths)
PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "tokenizers", "numpy", "safetensors")
# the fields two runs are compared on (the git commit and tree state are compared separately: code, not environment)
COMPARED = ("python", *PACKAGES, "torch_cuda", "accelerator")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(args: list[str], cwd: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(root: Path = PROJECT_ROOT) -> dict:
    """``commit`` (HEAD of the checkout holding ``vipo``; None outside a git checkout), ``dirty`` (tracked files differ
    from HEAD; untracked files do not count) and ``diff_sha1`` (SHA-1 of ``git diff HEAD`` when dirty, so two dirty
    runs can be told apart)."""
    commit = _git(["rev-parse", "HEAD"], root)
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha1": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    dirty = None if status is None else bool(status.strip())
    diff = _git(["diff", "HEAD"], root) if dirty else None
    return {"commit": commit.strip(), "dirty": dirty,
            "diff_sha1": hashlib.sha1(diff.encode()).hexdigest() if diff is not None else None}


def _accelerator() -> tuple[Optional[str], str]:
    try:
        import torch
    except ImportError:
        return None, "none"
    if torch.cuda.is_available():
        return torch.version.cuda, torch.cuda.get_device_name(0)
    return torch.version.cuda, "cpu"


def snapshot(root: Path = PROJECT_ROOT) -> dict:
    """The environment of this process now (see the module docstring for the fields)."""
    cuda, accelerator = _accelerator()
    return {"python": platform.python_version(), "packages": {p: _version(p) for p in PACKAGES},
            "torch_cuda": cuda, "accelerator": accelerator, "git": git_state(root),
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def compared_fields(env: dict) -> dict:
    """``COMPARED`` fields of a record (packages as their names), plus ``git_commit``/``git_dirty``/``git_diff``."""
    pkgs = env.get("packages") or {}
    git = env.get("git") or {}
    out = {k: (pkgs.get(k) if k in PACKAGES else env.get(k)) for k in COMPARED}
    out.update(git_commit=git.get("commit"), git_dirty=git.get("dirty"), git_diff=git.get("diff_sha1"))
    return out


def differences(old: dict, new: dict) -> dict:
    """Fields whose value differs between two records: ``{field: [old, new]}`` (git fields included)."""
    a, b = compared_fields(old), compared_fields(new)
    return {k: [a[k], b[k]] for k in a if a[k] != b[k]}


def read(run_dir: str | Path) -> Optional[dict]:
    """A run's record, or None when it has none (runs from before versions were recorded) or it is unreadable."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    try:
        env = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"[vipo] warning: {path} is unreadable ({e}); its environment is treated as unrecorded", flush=True)
        return None
    return env if isinstance(env, dict) else None


def record(run_dir: str | Path, iteration: int = 0, now: Optional[dict] = None) -> dict:
    """Write ``env.json`` for a run starting (no record yet) or resumed at ``iteration`` (the record kept, the resume
    appended with ``differs``). Returns the differences from the original record ({} on a fresh start)."""
    from vipo.records import atomic_write_json

    path = Path(run_dir) / FILE
    now = now or snapshot()
    env = read(run_dir)
    if env is None:
        atomic_write_json(path, {**now, "resumes": []} if iteration == 0 else
                          {**now, "resumes": [], "note": f"first recorded on resuming at iteration {iteration}"})
        return {}
    diff = differences(env, now)
    env.setdefault("resumes", []).append({"iteration": iteration, "recorded_at": now["recorded_at"],
                                          "differs": diff})
    atomic_write_json(path, env)
    if diff:
        shown = "; ".join(f"{k} {a} -> {b}" for k, a, b in ((k, *v) for k, v in diff.items()))
        print(f"[vipo] note: {Path(run_dir)} resumed at iteration {iteration} in another environment than it started "
              f"in: {shown} (kept in {path})", flush=True)
    return diff


def row(run_dir: str | Path) -> dict:
    """``env.<field>`` columns for ``vipo.results`` (empty when the run records no environment), and
    ``env.resumed_differs``: the fields that changed on any resume, comma-separated ("" when none)."""
    env = read(run_dir)
    if env is None:
        return {}
    out = {f"env.{k}": v for k, v in compared_fields(env).items()}
    changed = dict.fromkeys(k for r in env.get("resumes") or [] for k in (r.get("differs") or {}))
    out["env.resumed_differs"] = ",".join(changed)
    return out
