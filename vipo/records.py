"""Run folders and crash-safe file writes.

Every run owns ``<results_root>/<run_id>/`` holding ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``checkpoints/`` and ``images/``. Whole-file writes go through a temporary file and ``os.replace`` so a
crash leaves either the old or the new file, never half of one. ``metrics.jsonl`` is appended line by
line (flushed and fsynced) and truncated back to the last checkpoint on resume.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch


def _atomic(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no NaN/inf; keep them visible as strings
    if isinstance(x, torch.Tensor):
        return _jsonable(x.item() if x.numel() == 1 else x.tolist())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a metrics file, ignoring a torn last line left by a crash mid-write."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def truncate_jsonl(path: str | Path, keep: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in keep))


def append_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> None:
    """Append ``records`` to a JSON-lines file shared by several writers: under an exclusive lock on
    ``<path>.lock``, the file is rewritten whole through ``atomic_write_text`` (no torn or lost lines)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            old = path.read_text(encoding="utf-8") if path.exists() else ""
            if old and not old.endswith("\n"):
                old += "\n"
            new = "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in records)
            atomic_write_text(path, old + new)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
