"""One writer per run folder: the lease (vipo/lease.py), the trainer holding it, sweeps skipping a leased run."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_train import TINY
from vipo import lease

HERE = Path(__file__).parent
REPO = HERE.parent


def env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE}{os.pathsep}{REPO}",
            **{k: str(v) for k, v in extra.items()}}


def test_acquire_writes_the_holder_and_release_removes_it(tmp_path):
    with lease.acquire(tmp_path / "run", heartbeat_s=0.05) as held:
        info = lease.holder(tmp_path / "run")
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["token"] == held.token
        assert lease.is_live(tmp_path / "run")
        first = info["heartbeat"]
        time.sleep(0.3)
        assert lease.holder(tmp_path / "run")["heartbeat"] > first  # the heartbeat thread refreshes it
        assert oct((tmp_path / "run" / lease.LEASE).stat().st_mode & 0o777) == "0o644"
        with pytest.raises(lease.LeaseHeld, match=f"is being trained by pid {os.getpid()} on host "):
            lease.acquire(tmp_path / "run")  # a second writer, even in the same process
    assert lease.holder(tmp_path / "run") is None and not lease.is_live(tmp_path / "run")


HOLD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from vipo import lease
    run, go, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.001)
    try:
        held = lease.acquire(run)
    except lease.LeaseHeld as e:
        print(e)
        sys.exit(lease.EXIT_HELD)
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    held.release()
""")


def test_two_processes_started_together_get_one_writer(tmp_path):
    """Two real processes released by the same file appearing race for one folder, three times over."""
    for round_ in range(3):
        run, go, log = tmp_path / f"run{round_}", tmp_path / f"r{round_}/go", tmp_path / f"log{round_}"
        go.parent.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(go), str(log)], env=env(),
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        assert _wait_for(lambda: len(list(go.parent.glob("ready-*"))) == 2, timeout=60)  # both polling for the go
        go.touch()
        outs = [(p.wait(timeout=60), p.stdout.read()) for p in procs]
        winners = log.read_text().split()
        assert len(winners) == 1, outs
        codes = sorted(code for code, _ in outs)
        assert codes == [0, lease.EXIT_HELD], outs
        refused = [out for code, out in outs if code == lease.EXIT_HELD][0]
        assert refused.count("\n") == 1 and f"is being trained by pid {winners[0]} on host" in refused
        assert lease.holder(run) is None  # the winner released it


def test_a_dead_holder_on_this_host_is_taken_over_with_a_message(tmp_path, capsys):
    p = subprocess.run([sys.executable, "-c", "import os, sys; from vipo import lease; "
                        "lease.acquire(sys.argv[1]); print(os.getpid(), flush=True); os._exit(0)", str(tmp_path)],
                       env=env(), capture_output=True, text=True, timeout=60)
    dead = int(p.stdout)
    assert lease.holder(tmp_path)["pid"] == dead and not lease.is_live(tmp_path)
    held = lease.acquire(tmp_path)
    assert f"took over the stale lease of {tmp_path}: its holder pid {dead} on this host is gone" in capsys.readouterr().out
    assert lease.holder(tmp_path)["pid"] == os.getpid()
    held.release()


def _foreign(tmp_path, age):
    now = time.time()
    (tmp_path / lease.LEASE).write_text(json.dumps({"host": "node-17", "pid": 4242, "started": now - age - 5,
                                                    "heartbeat": now - age, "token": "x" * 32}))


def test_a_live_holder_on_another_host_is_respected(tmp_path):
    _foreign(tmp_path, age=5)  # pid 4242 does not exist here, but it lives on node-17: only the heartbeat counts
    assert lease.is_live(tmp_path)
    with pytest.raises(lease.LeaseHeld, match="pid 4242 on host node-17 .*heartbeat 5 s ago"):
        lease.acquire(tmp_path)


def test_a_silent_holder_on_another_host_is_taken_over(tmp_path, capsys):
    _foreign(tmp_path, age=lease.STALE_S + 30)
    assert not lease.is_live(tmp_path)
    held = lease.acquire(tmp_path)
    assert f"no heartbeat for {lease.STALE_S + 30:.0f} s" in capsys.readouterr().out
    held.release()


def test_a_holder_whose_lease_was_taken_stops(tmp_path):
    held = lease.acquire(tmp_path, heartbeat_s=60)
    _foreign(tmp_path, age=0)  # another process took it over while this one stalled
    with pytest.raises(lease.LeaseLost, match="taken over by pid 4242 on host node-17"):
        held.check()
    held.release()
    assert lease.holder(tmp_path)["pid"] == 4242  # release leaves the new holder's lease alone


def tiny_args(tmp_path, run_id, *extra):
    p = tmp_path / "prompts.txt"
    p.write_text("a red square\na blue circle\na green star\na white line\n")
    return [*TINY, "reward.name=kill_switch", f"train.prompts={p}", f"results_root={tmp_path}", f"run_id={run_id}",
            "eval.every=0", *extra]


def _wait_for(cond, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def iterations(path: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()]


def test_a_second_trainer_on_a_live_run_is_refused(tmp_path):
    """train.py started twice on one run folder (the same run_id, then resume=): one line naming the holder,
    exit status 75, the first run's files untouched; SIGTERM releases the lease and a resume finishes the run."""
    args = tiny_args(tmp_path, "r", "train.iterations=6", "train.checkpoint_every=1")
    first = subprocess.Popen([sys.executable, str(HERE / "run_tiny.py"), *args], env=env(VIPO_TEST_HANG_AT=4),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "r/metrics.jsonl"
    assert _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) == 3)  # hangs in iteration 3
    before = metrics.read_text()
    for second in (args, [f"resume={tmp_path / 'r'}"]):
        p = subprocess.run([sys.executable, str(HERE / "run_tiny.py"), *second], env=env(), capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == lease.EXIT_HELD, p.stderr
        assert p.stderr.count("\n") == 1 and f"is being trained by pid {first.pid} on host" in p.stderr
    assert metrics.read_text() == before
    first.terminate()
    assert first.wait(timeout=60) == 128 + signal.SIGTERM
    assert lease.holder(tmp_path / "r") is None
    p = subprocess.run([sys.executable, str(HERE / "run_tiny.py"), f"resume={tmp_path / 'r'}"], env=env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert iterations(metrics) == list(range(6))


@pytest.mark.slow  # two sweeps of real runs side by side (~17 s; test_launchers covers a run leased elsewhere)
def test_two_concurrent_sweeps_on_one_folder_train_each_run_once(tmp_path):
    """The same sweep command in two shells: the second waits for the run the first holds, no run is trained twice
    and no metrics row appears twice."""
    root, gate = tmp_path / "sweep", tmp_path / "gate"
    p = tmp_path / "prompts.txt"
    p.write_text("a red square\na blue circle\na green star\na white line\n")
    cmd = [sys.executable, str(HERE / "run_tiny.py"), "sweep", "psm_target", str(root), "0", "1",
           *TINY, "reward.name=kill_switch", "train.iterations=3", "eval.every=0", f"train.prompts={p}"]
    logs = [tmp_path / "a.out", tmp_path / "b.out"]
    a = subprocess.Popen(cmd, env=env(VIPO_TEST_GATE=gate), stdout=open(logs[0], "w"), stderr=subprocess.STDOUT)
    first = root / "map_x_advantage-s0"
    assert _wait_for(lambda: lease.is_live(first))  # the first sweep's first trainer holds its folder (and waits)
    b = subprocess.Popen(cmd, env=env(VIPO_TEST_GATE=gate), stdout=open(logs[1], "w"), stderr=subprocess.STDOUT)
    assert _wait_for(lambda: "running elsewhere: map_x_advantage-s0" in logs[1].read_text())
    gate.touch()
    assert a.wait(timeout=300) == 0 and b.wait(timeout=300) == 0, logs[0].read_text() + logs[1].read_text()
    out_a, out_b = logs[0].read_text(), logs[1].read_text()
    assert "[sweep] running elsewhere: map_x_advantage-s0 (held by pid" in out_b, out_b
    assert "[sweep] done  map_x_advantage-s0 (elsewhere)" in out_b, out_b
    for run in ("map_x_advantage-s0", "map_x_reward-s0"):
        assert iterations(root / run / "metrics.jsonl") == [0, 1, 2]
        assert (root / run / "summary.json").exists() and not (root / run / lease.LEASE).exists()
    starts = (out_a + out_b).count("[sweep] start ")
    refused = sum(line.startswith("error: run folder") for run in ("map_x_advantage-s0", "map_x_reward-s0")
                  for line in (root / run / "train.log").read_text().splitlines())
    assert starts - refused == 2  # every trainer that got past the lease trained a different run


def test_sweep_trainers_die_with_their_parent(tmp_path):
    """SIGKILL of a sweep process: its trainer gets SIGTERM from the kernel, releases the lease and exits."""
    root = tmp_path / "sweep"
    p = tmp_path / "prompts.txt"
    p.write_text("a red square\na blue circle\n")
    cmd = [sys.executable, str(HERE / "run_tiny.py"), "sweep", "psm_target", str(root), "0", "1",
           *TINY, "reward.name=kill_switch", "train.iterations=5", "eval.every=0", f"train.prompts={p}"]
    parent = subprocess.Popen(cmd, env=env(VIPO_TEST_HANG_AT=2), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = root / "map_x_advantage-s0"
    assert _wait_for(lambda: lease.is_live(run) and (run / "metrics.jsonl").exists())
    trainer = lease.holder(run)["pid"]
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    assert _wait_for(lambda: not Path(f"/proc/{trainer}").exists() or
                     Path(f"/proc/{trainer}/stat").read_text().split(") ")[1].startswith("Z"), timeout=30)
    assert lease.holder(run) is None  # SIGTERM unwound the trainer: the lease is released, not left stale
