"""One writer per run folder: a lease file ``<run_dir>/lease.json`` held by the process that trains the run.

    from vipo import lease

    with lease.acquire(run_dir) as held:     # raises LeaseHeld (one line naming the holder) if another writer is live
        ...                                  # held.lost turns True if a stale-lease takeover stole it meanwhile
    lease.holder(run_dir)                    # the lease's content (dict) or None when the folder is free
    lease.is_live(run_dir)                   # True while a live process holds it (what sweeps skip as "running elsewhere")

The lease holds ``host``, ``pid``, ``started`` and ``heartbeat`` (Unix seconds), a random ``token`` and the
holder's command line. It is written to a temporary file and hard-linked into place (``link`` fails when the name
exists, atomically, on local file systems and on NFS), so of two processes starting the same run folder exactly
one gets it, also when they run on different machines that share the file system. While held, a daemon thread rewrites ``heartbeat`` every ``HEARTBEAT_S`` seconds.

A lease is **stale**, and the next process takes it over with a message, when
- its holder ran on this host and its pid is gone (or now belongs to a process started later: pid reuse), or
- its heartbeat is older than ``STALE_S`` seconds (any host; the threshold is well above the heartbeat period
  and above the clock skew of machines that share a file system).
Takeovers are serialised by a second ``O_EXCL`` file (``.lease.takeover``), so two processes that both find a
lease stale cannot both take it. A holder whose lease was taken over (it stalled past ``STALE_S``, e.g. a
stopped process) sees ``lost`` turn True at its next heartbeat and must stop writing.

``VIPO_LEASE_HEARTBEAT`` and ``VIPO_LEASE_STALE`` (seconds) override the defaults.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

LEASE = "lease.json"
TAKEOVER = ".lease.takeover"
HEARTBEAT_S = float(os.environ.get("VIPO_LEASE_HEARTBEAT", "10"))
STALE_S = float(os.environ.get("VIPO_LEASE_STALE", "90"))
EXIT_HELD = 75  # exit status of train.py when the run folder is held by another live process (EX_TEMPFAIL)
EXIT_EXISTS = 73  # exit status of train.py asked to start a new run in a folder that already holds one


class LeaseHeld(RuntimeError):
    """The run folder is held by another live process; ``holder`` is its lease."""

    def __init__(self, run_dir: Path, info: dict):
        self.run_dir, self.holder = Path(run_dir), info
        super().__init__(f"run folder {run_dir} is being trained by {describe(info)}; "
                         f"not starting a second writer (wait for it, or stop that process)")


class LeaseLost(RuntimeError):
    """This process's lease was taken over by another process (it stalled past the stale time)."""


def describe(info: dict) -> str:
    """``pid 123 on host h (started 2026-12-05 02:10:00 UTC, heartbeat 3 s ago)``"""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info.get("started", 0))))
    age = time.time() - float(info.get("heartbeat", 0))
    return f"pid {info.get('pid')} on host {info.get('host')} (started {started}, heartbeat {age:.0f} s ago)"


def _path(run_dir: Path | str) -> Path:
    return Path(run_dir) / LEASE


def _proc_start(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(run_dir: Path | str) -> Optional[dict]:
    """The lease of ``run_dir`` as a dict (live or stale), or None when there is none.

    A lease file that cannot be parsed (a holder killed while creating it) reads as ``{"unreadable": True}`` with
    the file's modification time as heartbeat, so it goes stale after ``STALE_S`` like any other."""
    path = _path(run_dir)
    try:
        text = path.read_text()
        mtime = path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise ValueError
        return info
    except ValueError:
        return {"unreadable": True, "heartbeat": mtime, "started": mtime, "host": "?", "pid": None}


def stale_reason(info: dict, stale_after: Optional[float] = None) -> Optional[str]:
    """Why the lease ``info`` is stale (a sentence), or None while its holder is live."""
    stale_after = STALE_S if stale_after is None else stale_after
    age = time.time() - float(info.get("heartbeat", 0))
    if info.get("host") == socket.gethostname() and info.get("pid"):
        pid = int(info["pid"])
        if not _pid_alive(pid):
            return f"its holder pid {pid} on this host is gone"
        start = _proc_start(pid)
        if start is not None and info.get("pid_start") is not None and start != info["pid_start"]:
            return f"its holder pid {pid} on this host is gone (the pid now belongs to another process)"
    if age > stale_after:
        return f"no heartbeat for {age:.0f} s (stale after {stale_after:.0f} s)"
    return None


def is_live(run_dir: Path | str, stale_after: Optional[float] = None) -> bool:
    """True while a live process (this one included) holds the run folder."""
    info = holder(run_dir)
    return info is not None and stale_reason(info, stale_after) is None


def _write_new(path: Path, info: dict) -> bool:
    """Create ``path`` holding ``info``, only if it does not exist; False if it does. The content is written to a
    private temporary file first and hard-linked into place (``link`` fails if the name exists, atomically, also
    on NFS), so no reader ever sees a lease half written."""
    tmp = path.with_name(f".{path.name}.{info['token'][:8]}.new")
    tmp.write_text(json.dumps(info, sort_keys=True) + "\n")
    os.chmod(tmp, 0o644)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create (readers may see it empty for a moment)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(tmp.read_text())
        return True
    finally:
        tmp.unlink(missing_ok=True)


class Lease:
    """A held lease; release it with ``release()`` or by leaving the ``with`` block."""

    def __init__(self, run_dir: Path, info: dict, heartbeat_s: float, took_over: Optional[str] = None):
        self.run_dir, self.path, self.info = Path(run_dir), _path(run_dir), info
        self.took_over = took_over  # the message printed when a stale lease was taken over, else None
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True,
                                        name=f"lease-heartbeat:{self.run_dir.name}")
        self._thread.start()

    @property
    def token(self) -> str:
        return self.info["token"]

    def _mine(self) -> bool:
        now = holder(self.run_dir)
        return now is not None and now.get("token") == self.token

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.beat()
            except OSError:  # a shared file system hiccup: try again at the next beat
                pass

    def beat(self) -> None:
        """Refresh the heartbeat (the thread does this every ``HEARTBEAT_S`` s)."""
        if self.lost:
            return
        if not self._mine():
            self.lost = True
            return
        self.info["heartbeat"] = time.time()
        tmp = self.path.with_name(f".{LEASE}.{self.token[:8]}.tmp")
        tmp.write_text(json.dumps(self.info, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def check(self) -> None:
        """Raise ``LeaseLost`` if another process took the lease over."""
        if self.lost or not self._mine():
            self.lost = True
            raise LeaseLost(f"the lease of {self.run_dir} was taken over by {describe(holder(self.run_dir) or {})}; "
                            "this process stops writing the run folder")

    def release(self) -> None:
        """Stop the heartbeat and remove the lease file (only if it is still this process's)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if not self.lost and self._mine():
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _takeover(run_dir: Path, seen: dict, info: dict) -> bool:
    """Replace the stale lease ``seen`` by ``info``, serialised by an exclusive takeover file. False if the lease
    changed meanwhile (someone else took it, or the holder came back)."""
    mutex = Path(run_dir) / TAKEOVER
    try:
        fd = os.open(mutex, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        try:  # a taker killed inside the few lines below leaves the mutex: expire it
            if time.time() - mutex.stat().st_mtime > max(30.0, 2 * HEARTBEAT_S):
                mutex.unlink()
        except FileNotFoundError:
            pass
        return False
    try:
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.close(fd)
        now = holder(run_dir)
        if now != seen:
            return False
        try:
            _path(run_dir).unlink()
        except FileNotFoundError:
            pass
        return _write_new(_path(run_dir), info)
    finally:
        try:
            mutex.unlink()
        except FileNotFoundError:
            pass


def acquire(run_dir: Path | str, *, heartbeat_s: Optional[float] = None, stale_after: Optional[float] = None,
            quiet: bool = False) -> Lease:
    """Hold ``run_dir`` (created if missing) for this process, or raise ``LeaseHeld`` naming the live holder.

    A stale lease is taken over, printing one line that says whose and why (unless ``quiet``)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    now = time.time()
    info = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _proc_start(os.getpid()),
            "started": now, "heartbeat": now, "token": uuid.uuid4().hex, "argv": sys.argv[:8]}
    for _ in range(50):
        if _write_new(_path(run_dir), info):
            return Lease(run_dir, info, heartbeat_s)
        seen = holder(run_dir)
        if seen is None:  # released between our attempt and the read: try again
            continue
        reason = stale_reason(seen, stale_after)
        if reason is None:
            raise LeaseHeld(run_dir, seen)
        info["heartbeat"] = time.time()
        if _takeover(run_dir, seen, info):
            msg = f"[vipo] took over the stale lease of {run_dir}: {reason} (was {describe(seen)})"
            if not quiet:
                print(msg, flush=True)
            return Lease(run_dir, info, heartbeat_s, took_over=msg)
        time.sleep(0.05 + 0.1 * (uuid.uuid4().int % 10) / 10)
    seen = holder(run_dir) or {}
    raise LeaseHeld(run_dir, seen)


def run_state(run_dir: Path | str) -> tuple[str, str]:
    """What a run folder holds, for status listings and launchers: ``(state, detail)`` with state one of
    ``done`` (``summary.json``), ``running`` (a live lease; detail names the holder), ``failed`` (``failed.json``,
    no summary; detail is its error), ``stopped`` (a checkpoint, no summary, no live holder: a re-run resumes it),
    ``new`` (nothing to resume). Unreadable files do not raise: the detail says which file."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        return "done", ""
    info = holder(run_dir)
    if info is not None and stale_reason(info) is None:
        return "running", describe(info)
    failed = run_dir / "failed.json"
    if failed.exists():
        try:
            return "failed", str(json.loads(failed.read_text()).get("error", ""))
        except (ValueError, AttributeError, OSError):
            return "failed", f"{failed} is unreadable"
    ckpt = run_dir / "checkpoints"
    if (ckpt / "last.pt").exists() or (ckpt / "prev.pt").exists():
        return "stopped", "" if info is None else f"stale lease: {stale_reason(info)}"
    return "new", ""
