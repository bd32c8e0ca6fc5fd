"""Run folders and crash-safe file writes.

Every run owns ``<results_root>/<run_id>/`` holding ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``checkpoints/`` and ``images/``. Whole-file writes go through a temporary file and ``os.replace`` so a
crash leaves either the old or the new file, never half of one. ``metrics.jsonl`` is appended line by
line (flushed and fsynced) and truncated back to the last checkpoint on resume.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional


_UMASK = os.umask(0o022)
os.umask(_UMASK)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write failed because the file system is full (or over quota); the message says so and names the file."""


def _no_space(exc: BaseException, folder: Path) -> bool:
    """Did ``exc`` come from a full disk? An ``OSError`` with ENOSPC/EDQUOT anywhere in its chain, or (torch's
    writer raises a bare ``RuntimeError``) less than 1 MiB left on the file system."""
    e: Optional[BaseException] = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return True
        e = e.__cause__ or e.__context__
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            return False
    return False


def _atomic(path: str | Path, write, before_replace=None) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``
    (calling ``before_replace()`` just before). Files are created readable by the group (0644 under the usual
    umask). A full disk raises ``DiskFull`` naming the file; the temporary file is removed in every case."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as e:
        full = isinstance(e, Exception) and _no_space(e, path.parent)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise DiskFull(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing {path.name}"
                           f" ({shutil.disk_usage(path.parent).free // 1024} KiB free after removing the partial "
                           "file); free some space, then resume the run") from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)  # JSON has no NaN/inf; keep them visible as strings
    torch = sys.modules.get("torch")  # only a tensor needs it, and then it is imported already
    if torch is not None and isinstance(x, torch.Tensor):
        return _jsonable(x.item() if x.numel() == 1 else x.tolist())
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: str | Path, obj: Any, before_replace=None) -> None:
    import torch

    _atomic(path, lambda tmp: torch.save(obj, tmp), before_replace)


def append_jsonl(path: str | Path, record: dict) -> None:
    path = Path(path)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno in NO_SPACE:
            raise DiskFull(e.errno, f"no space left on the device holding {path.parent} while appending to "
                           f"{path.name}; free some space, then resume the run") from e
        raise


def warn(message: str) -> None:
    """One line on stderr: a file that a reader skipped or repaired, named."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def read_jsonl(path: str | Path, quiet: bool = False) -> list[dict]:
    """Read a JSON-lines file (a run's ``metrics.jsonl``) row by row.

    A line that is not a JSON object (torn by a crash mid-write, garbage) is skipped with a warning naming the file
    and line number; the rows after it are kept. Rows keyed by ``iteration`` never repeat one: a row whose
    iteration is not above the previous row's starts a later attempt (a restart that appended instead of
    truncating), which supersedes the earlier attempt's rows from that iteration on (warned once per file)."""
    path = Path(path)
    if not path.exists():
        return []
    rows: list[dict] = []
    superseded = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError:
                if not quiet:
                    torn = "" if line.endswith("\n") else " (torn last line)"
                    warn(f"{path} line {n}: not a JSON object{torn}; skipped")
                continue
            it = row.get("iteration")
            if isinstance(it, (int, float)) and rows and isinstance(rows[-1].get("iteration"), (int, float)) \
                    and it <= rows[-1]["iteration"]:
                keep = [r for r in rows if not (isinstance(r.get("iteration"), (int, float)) and r["iteration"] >= it)]
                superseded += len(rows) - len(keep)
                rows = keep
            rows.append(row)
    if superseded and not quiet:
        warn(f"{path}: {superseded} row(s) of an earlier attempt superseded by rows written later for the same "
             "iterations (each iteration is read once)")
    return rows


def read_json(path: str | Path, quiet: bool = False) -> Any:
    """A JSON file's content; None when it is missing, and None with a warning naming the file when it cannot be
    read or parsed (truncated, garbage)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        if not quiet:
            warn(f"{path} is unreadable ({type(e).__name__}: {' '.join(str(e).split())[:100]}); skipped")
        return None


def read_summary(run_dir: str | Path, quiet: bool = False) -> Optional[dict]:
    """A run's ``summary.json`` when it is a readable JSON object, else None (a warning names a bad file)."""
    path = Path(run_dir) / "summary.json"
    out = read_json(path, quiet)
    if out is not None and not isinstance(out, dict):
        if not quiet:
            warn(f"{path} is not a JSON object; skipped")
        return None
    return out


def next_rotation(path: Path) -> Path:
    """``metrics.jsonl`` -> the first free ``metrics.<n>.jsonl`` (n = 1, 2, ...) beside it."""
    stem, suffix = path.name.split(".", 1)
    n = 1
    while (path.parent / f"{stem}.{n}.{suffix}").exists():
        n += 1
    return path.parent / f"{stem}.{n}.{suffix}"


def rotate(path: str | Path) -> Path | None:
    """Move ``path`` aside to ``<stem>.<n>.<suffix>`` (kept, never mixed with a new file); returns the new name."""
    path = Path(path)
    if not path.exists():
        return None
    dest = next_rotation(path)
    os.replace(path, dest)
    return dest


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


def clean_temporary(run_dir: str | Path) -> list[Path]:
    """Remove temporary files an interrupted write left in a run folder (``.<name>.*.tmp``, run folder and
    ``checkpoints/``); call it while holding the folder's lease. Returns what was removed."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        for p in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
            if p.name.startswith(".lease.json."):  # the lease's own heartbeat file
                continue
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def set_aside_attempt(run_dir: str | Path) -> Optional[int]:
    """A run started from scratch in a folder where an earlier attempt wrote metrics (it stopped before its first
    checkpoint): move ``metrics.jsonl`` to ``metrics.<n>.jsonl`` and ``config.yaml`` to ``config.<n>.yaml`` (n = 1, 2,
    ...), so the new attempt's rows are never mixed with the old ones. Returns n, or None if nothing was there."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return None
    dest = next_rotation(metrics)
    n = int(dest.name.split(".")[1])
    os.replace(metrics, dest)
    if (run_dir / "config.yaml").exists():
        os.replace(run_dir / "config.yaml", run_dir / f"config.{n}.yaml")
    return n
