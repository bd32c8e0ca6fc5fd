"""Helpers of the SLURM tests: whether a SLURM cluster answers here, a launcher bound to it, a PostgreSQL server.

The SLURM tests run under ``make test-slurm`` (which starts a single-node cluster with checks/slurm_cluster.sh and
sets ``VIPO_TEST_SLURM=1``); elsewhere they skip with one line."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def slurm_reason() -> str | None:
    """None when the SLURM tests can run, else why not."""
    if os.environ.get("VIPO_TEST_SLURM") != "1":
        return "SLURM tests run under `make test-slurm` (VIPO_TEST_SLURM=1 with a cluster up)"
    if shutil.which("sbatch") is None:
        return "no SLURM client (sbatch) on this machine"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed: {e}"
    if out.returncode or not {"idle", "mixed", "allocated"} & set(out.stdout.split()):
        return f"no SLURM node is up (sinfo: {out.stdout.strip() or out.stderr.strip()})"
    return None


def queued() -> list[str]:
    """Job ids SLURM lists for this user (one per array task)."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=20)
    return out.stdout.split()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server():
    """Start a throw-away PostgreSQL server; yields a SQLAlchemy URL of an empty database, or a reason string
    (str, not a URL) when no server can be started here."""
    import pytest

    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 is not installed (pip install psycopg2-binary)")
    bindir = Path(initdb).resolve().parent
    pg_root = Path(tempfile.mkdtemp(prefix="vipo-pg-"))  # under /tmp: reachable by the postgres user
    data, port = pg_root / "data", _free_port()
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a 'postgres' user to start the server")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(pg_root, 0o777)
    init = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "vipo"],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", f"-p {port} -k {pg_root}",
                            "-l", str(pg_root / "pg.log"), "-w", "start"], capture_output=True, text=True)
    assert start.returncode == 0, start.stderr + start.stdout
    try:
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "vipo", "optuna"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://vipo@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(pg_root, ignore_errors=True)
