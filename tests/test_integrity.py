"""Run folders that survive faults (docs/run-integrity.md): metrics keyed by iteration, a restart from scratch
that never appends, checkpoints that survive one bad file, the good-checkpoint rule, NaN before and after the
first checkpoint, resume= with changed keys, leftover temporary files, file modes and a full disk."""

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tiny  # noqa: F401  (registers tiny_test and nan_after)
from test_train import tiny_cfg
from vipo import checkpoints as ckpts
from vipo.cli import load_for_resume
from vipo.records import DiskFull, atomic_torch_save, read_jsonl
from vipo.train import run
from vipo.update import NonFiniteError

VOLATILE = ("time_", "wall_seconds")
HERE = Path(__file__).parent


def stable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def run_id(tmp_path, name, *extra):
    cfg, raw = tiny_cfg(tmp_path, f"run_id={name}", "train.iterations=6", "train.checkpoint_every=2", "eval.every=3",
                        *extra)
    return run(cfg, raw)


def resume(tmp_path, name, *extra):
    cfg, raw = load_for_resume(str(tmp_path / name), [f"resume={tmp_path / name}", *extra])
    return run(cfg, raw)


@pytest.fixture
def full(tmp_path):
    """An uninterrupted run: the reference every repaired run must equal."""
    run_id(tmp_path, "full")
    return lines(tmp_path / "full/metrics.jsonl")


# -- metrics keyed by iteration -------------------------------------------------------------------------------

def test_a_torn_line_mid_file_is_reported_and_the_rows_after_it_kept(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    rows = [{"iteration": i, "reward_mean": i / 10} for i in range(-1, 5)]
    text = [json.dumps(r) for r in rows]
    text[2] = text[2][:9]  # torn: a crash mid-write, then a later process appended after it
    path.write_text("\n".join(text) + "\n")
    got = read_jsonl(path)
    assert [r["iteration"] for r in got] == [-1, 0, 2, 3, 4]
    assert f"warning: {path} line 3: not a JSON object; skipped" in capsys.readouterr().err


def test_readers_never_return_an_iteration_twice(tmp_path, capsys):
    """The old failure: a run restarted before its first checkpoint appended -1,0,1,2,-1,0,1,... to one file."""
    path = tmp_path / "metrics.jsonl"
    old = [{"iteration": i, "attempt": 1} for i in (-1, 0, 1, 2)]
    new = [{"iteration": i, "attempt": 2} for i in (-1, 0, 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in old + new))
    got = read_jsonl(path)
    assert [(r["iteration"], r["attempt"]) for r in got] == [(-1, 2), (0, 2), (1, 2)]
    assert "4 row(s) of an earlier attempt superseded" in capsys.readouterr().err


def test_nan_before_the_first_checkpoint_restarts_cleanly(tmp_path, full, capsys):
    """A NaN at iteration 1 (first checkpoint due after iteration 1... of 2): failed.json, nothing to resume; the
    re-run starts over in a new metrics file (the old one kept as metrics.1.jsonl), equals an uninterrupted run,
    and removes failed.json."""
    with pytest.raises(NonFiniteError, match="before its first checkpoint"):
        run_id(tmp_path, "cut", "reward.name=nan_after", "+reward.after=2")  # calls: baseline eval, it 0, it 1 NaN
    d = tmp_path / "cut"
    assert json.loads((d / "failed.json").read_text())["last_good_checkpoint"] is None
    assert [r["iteration"] for r in lines(d / "metrics.jsonl")] == [-1, 0]
    capsys.readouterr()
    run_id(tmp_path, "cut")
    assert "its metrics.jsonl and config.yaml are kept as metrics.1.jsonl and config.1.yaml" in capsys.readouterr().out
    assert stable(lines(d / "metrics.jsonl")) == stable(full)
    assert [r["iteration"] for r in lines(d / "metrics.1.jsonl")] == [-1, 0]
    assert "nan_after" in (d / "config.1.yaml").read_text() and "nan_after" not in (d / "config.yaml").read_text()
    assert not (d / "failed.json").exists() and (d / "summary.json").exists()


def test_nan_after_the_first_checkpoint_keeps_a_good_one_and_resume_records_the_change(tmp_path, full, capsys):
    """NaN reward at iteration 4: the run stops with failed.json naming last.pt (iteration 3, finite). Resuming with
    the NaN moved out of reach continues from it; config.yaml is left as the run started and the change is recorded."""
    with pytest.raises(NonFiniteError, match="at iteration 4; the run stopped; last good checkpoint"):
        run_id(tmp_path, "cut", "reward.name=nan_after", "+reward.after=6")  # calls: -1, 0, 1, 2, eval 2, 3, 4 NaN
    d = tmp_path / "cut"
    state = torch.load(d / "checkpoints/last.pt", weights_only=False)
    assert state["iteration"] == 3 and ckpts.problem(state) is None
    assert json.loads((d / "failed.json").read_text())["last_good_checkpoint"] == str(d / "checkpoints/last.pt")
    config_before = (d / "config.yaml").read_bytes()
    capsys.readouterr()
    resume(tmp_path, "cut", "reward.after=100")
    out = capsys.readouterr().out
    assert "this resume changes reward.after: 6 -> 100 from iteration 4" in out
    assert (d / "config.yaml").read_bytes() == config_before
    change = lines(d / "config_changes.jsonl")
    assert len(change) == 1 and change[0]["iteration"] == 4
    assert change[0]["changes"] == {"reward.after": {"from": 6, "to": 100}}
    assert [r["iteration"] for r in lines(d / "metrics.jsonl")] == [-1, 0, 1, 2, 3, 4, 5]
    assert not (d / "failed.json").exists()


# -- checkpoints that survive one bad file --------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "nan_weights"])
def test_a_bad_last_checkpoint_falls_back_to_the_previous_one(tmp_path, full, capsys, damage):
    run_id(tmp_path, "cut")
    d = tmp_path / "cut"
    (d / "summary.json").unlink()  # as if the run died after its last checkpoint ...
    last = d / "checkpoints/last.pt"
    assert torch.load(d / "checkpoints/prev.pt", weights_only=False)["iteration"] == 3
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "garbage":
        last.write_bytes(os.urandom(4096))
    else:
        state = torch.load(last, weights_only=False)
        next(iter(state["trainable"].values())).view(-1)[0] = float("nan")
        torch.save(state, last)
    capsys.readouterr()
    summary = resume(tmp_path, "cut")
    out = capsys.readouterr().out
    why = "is not a good checkpoint (its trainable tensors hold NaN" if damage == "nan_weights" else "is unreadable"
    assert f"{last} {why}" in out and f"using {d / 'checkpoints/prev.pt'} (iteration 3)" in out
    assert "resuming" in out and summary["status"] == "complete"
    assert stable(lines(d / "metrics.jsonl")) == stable(full)  # iterations 4, 5 trained again, exactly as before


def test_two_bad_checkpoints_name_both_files(tmp_path):
    run_id(tmp_path, "cut")
    d = tmp_path / "cut"
    (d / "summary.json").unlink()
    for name in ("last.pt", "prev.pt"):
        (d / "checkpoints" / name).write_bytes(b"garbage")
    p = subprocess.run([sys.executable, str(HERE / "run_tiny.py"), f"resume={d}"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"}, timeout=120)
    assert p.returncode == 1
    err = p.stderr.strip()
    assert "\n" not in err and err.startswith(f"error: cannot resume {d}: no usable checkpoint")
    assert f"{d / 'checkpoints/last.pt'} is unreadable" in err and f"{d / 'checkpoints/prev.pt'} is unreadable" in err


def test_the_good_checkpoint_rule():
    w = {"a": torch.tensor([0.5, -2.0]), "b": torch.tensor([[1.0]])}
    good = {"iteration": 3, "trainable": w, "ema": None, "optimizer": {"state": {0: {"exp_avg": torch.zeros(2)}}},
            "start_max_abs": 2.0}
    assert ckpts.problem(good, {"reward_mean": 0.1, "grad_norm": 3.0}) is None
    assert "reward_mean of iteration 3 is nan" in ckpts.problem(good, {"reward_mean": float("nan")})
    bad_opt = {**good, "optimizer": {"state": {0: {"exp_avg": torch.tensor([float("inf"), 0.0])}}}}
    assert ckpts.problem(bad_opt) == "its optimizer tensors hold NaN or infinite values"
    # the limit is 100 x max(1, 2.0) = 200: 199 is good, 201 diverged
    assert ckpts.problem({**good, "trainable": {"a": torch.tensor([199.0])}}) is None
    assert "diverged: largest |w| = 201 > 100 x max(1, 2)" in ckpts.problem({**good, "trainable": {"a": torch.tensor([-201.0])}})
    # a run that starts with small weights: the floor of 1 keeps the limit at 100
    assert ckpts.problem({**good, "start_max_abs": 0.01, "trainable": {"a": torch.tensor([99.0])}}) is None


def test_diverging_weights_never_reach_a_checkpoint(tmp_path):
    """An absurd learning rate: the weights leave the good range; the run stops with the last good checkpoint."""
    with pytest.raises(ckpts.DivergedError, match="not saving the checkpoint of iteration .*the weights diverged"):
        run_id(tmp_path, "wild", "train.lr=30", "train.max_grad_norm=null", "train.checkpoint_every=1",
               "train.iterations=40", "eval.every=0")
    d = tmp_path / "wild"
    state = torch.load(d / "checkpoints/last.pt", weights_only=False)
    assert ckpts.problem(state) is None and ckpts.max_abs(state["trainable"]) <= 100 * max(1, state["start_max_abs"])
    assert "diverged" in json.loads((d / "failed.json").read_text())["error"]


# -- leftovers, modes, a full disk ----------------------------------------------------------------------------

def test_leftover_temporary_files_are_removed_on_the_next_start_and_files_are_0644(tmp_path, capsys):
    run_id(tmp_path, "cut", "train.iterations=2")
    d = tmp_path / "cut"
    (d / "summary.json").unlink()
    left = [d / "checkpoints/.last.pt.k1ll3d.tmp", d / ".summary.json.x7.tmp"]  # a kill during a save
    for p in left:
        p.write_bytes(b"half")
    capsys.readouterr()
    resume(tmp_path, "cut")
    assert "removed 2 temporary file(s) an interrupted write left" in capsys.readouterr().out
    assert not any(p.exists() for p in left)
    files = [p for p in d.rglob("*") if p.is_file()]
    assert files and {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o644"}


def test_a_write_failure_from_a_full_disk_says_so(tmp_path, monkeypatch):
    """The equivalent of a full disk where mounting a tiny file system is not allowed: the writer fails with ENOSPC."""
    def full_disk(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFull, match=f"no space left on the device holding {tmp_path} while writing last.pt"):
        atomic_torch_save(tmp_path / "last.pt", {"x": 1})
    assert os.listdir(tmp_path) == []  # no temporary file left behind


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root); test_a_write_failure_from_a_full_disk_says_so covers it")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_training_on_a_full_disk_stops_with_a_message_that_says_so(tmp_path, tiny_fs):
    """A real 160 KiB file system: a run fails at its first checkpoint with one line naming the disk and the file,
    and no temporary file stays behind."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\na blue circle\n")
    from test_train import TINY

    (tiny_fs / "filler").write_bytes(b"\0" * (shutil.disk_usage(tiny_fs).free - 8 * 1024))  # 8 KiB left
    p = subprocess.run([sys.executable, str(HERE / "run_tiny.py"), *TINY, f"train.prompts={prompts}",
                        f"results_root={tiny_fs}", "run_id=r", "train.iterations=2", "eval.every=0",
                        "eval.grid_samples=0"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{HERE.parent}"},
                       timeout=120)
    assert p.returncode == 1, p.stderr
    err = p.stderr.strip()
    assert "\n" not in err and f"error: [Errno {errno.ENOSPC}] no space left on the device holding {tiny_fs / 'r'}" in err
    assert not [q for q in tiny_fs.rglob("*.tmp")]
