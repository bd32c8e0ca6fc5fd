"""Every run folder records what produced its numbers (env.json: package versions, Python, the git commit and whether
the tree was dirty); vipo.results reads it into env.* columns; analysis.tables says when one table's runs differ."""

import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path

import pandas as pd
import torch

import tiny  # noqa: F401
from analysis.environments import environment_notes
from analysis.make_tables import build
from test_train import tiny_cfg
from vipo import environment
from vipo.results import collect
from vipo.train import run

REPO = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_snapshot_holds_the_installed_versions_and_this_checkouts_commit():
    env = environment.snapshot()
    assert env["python"] == platform.python_version()
    assert env["packages"]["torch"] == torch.__version__
    for dist in ("diffusers", "transformers", "peft", "numpy", "accelerate"):
        assert env["packages"][dist] == importlib.metadata.version(dist)
    assert env["torch_cuda"] == torch.version.cuda
    assert env["accelerator"] == (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    assert env["git"]["commit"] == git(REPO, "rev-parse", "HEAD").strip()
    assert len(env["git"]["commit"]) == 40


def test_git_state_clean_dirty_untracked_and_outside_git(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    git(repo, "add", "a.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git(repo, "rev-parse", "HEAD").strip()
    assert environment.git_state(repo) == {"commit": head, "dirty": False, "diff_sha1": None}
    (repo / "notes.txt").write_text("untracked files do not make the tree dirty\n")
    assert environment.git_state(repo)["dirty"] is False
    (repo / "a.py").write_text("x = 2\n")
    state = environment.git_state(repo)
    diff = git(repo, "diff", "HEAD")
    assert "-x = 1\n+x = 2" in diff
    assert state == {"commit": head, "dirty": True, "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()}
    (repo / "a.py").write_text("x = 3\n")  # another edit: another diff hash
    assert environment.git_state(repo)["diff_sha1"] not in (None, state["diff_sha1"])
    outside = tmp_path / "plain"
    outside.mkdir()
    assert environment.git_state(outside) == {"commit": None, "dirty": None, "diff_sha1": None}


def fake_env(torch_version="2.13.0+cpu", commit="a" * 40, dirty=False, diff=None, **over):
    env = {"python": "3.11.7", "packages": {p: f"{p}-1.0" for p in environment.PACKAGES}, "torch_cuda": None,
           "accelerator": "cpu", "git": {"commit": commit, "dirty": dirty, "diff_sha1": diff},
           "recorded_at": "2026-12-05T02:00:00+00:00"}
    env["packages"]["torch"] = torch_version
    env.update(over)
    return env


def test_record_keeps_the_start_and_notes_a_resume_in_another_environment(tmp_path, capsys):
    start = fake_env()
    assert environment.record(tmp_path, 0, start) == {}
    saved = json.loads((tmp_path / "env.json").read_text())
    assert saved == {**start, "resumes": []}
    assert environment.record(tmp_path, 4, fake_env()) == {}  # same environment: a resume, nothing differs
    assert capsys.readouterr().out == ""
    later = fake_env("2.14.1", commit="b" * 40, recorded_at="2026-12-06T00:00:00+00:00")
    diff = environment.record(tmp_path, 8, later)
    assert diff == {"torch": ["2.13.0+cpu", "2.14.1"], "git_commit": ["a" * 40, "b" * 40]}
    out = capsys.readouterr().out
    assert f"{tmp_path} resumed at iteration 8 in another environment than it started in: " \
           f"torch 2.13.0+cpu -> 2.14.1; git_commit {'a' * 40} -> {'b' * 40}" in out
    saved = json.loads((tmp_path / "env.json").read_text())
    assert saved["packages"]["torch"] == "2.13.0+cpu" and saved["git"]["commit"] == "a" * 40  # the start is kept
    assert saved["resumes"] == [
        {"iteration": 4, "recorded_at": "2026-12-05T02:00:00+00:00", "differs": {}},
        {"iteration": 8, "recorded_at": "2026-12-06T00:00:00+00:00", "differs": diff}]
    row = environment.row(tmp_path)
    assert row["env.torch"] == "2.13.0+cpu" and row["env.git_commit"] == "a" * 40 and row["env.git_dirty"] is False
    assert row["env.resumed_differs"] == "git_commit,torch"  # (env.json keeps keys sorted)


def test_a_run_records_its_environment_and_a_resume_appends(tmp_path):
    run(*tiny_cfg(tmp_path, "train.iterations=2", "eval.every=0"))
    env = json.loads((tmp_path / "r" / "env.json").read_text())
    now = environment.snapshot()
    assert env["packages"] == now["packages"] and env["python"] == now["python"]
    assert env["packages"]["torch"] == torch.__version__
    assert env["git"]["commit"] == git(REPO, "rev-parse", "HEAD").strip()
    assert env["resumes"] == []
    # resumed (already complete) under a changed record: the original stays, the resume says what differs
    env["packages"]["numpy"] = "1.0.0"
    (tmp_path / "r" / "env.json").write_text(json.dumps(env))
    run(*tiny_cfg(tmp_path, "train.iterations=2", "eval.every=0", f"resume={tmp_path / 'r'}"))
    env2 = json.loads((tmp_path / "r" / "env.json").read_text())
    assert env2["packages"]["numpy"] == "1.0.0"
    assert env2["resumes"][0]["iteration"] == 2
    assert env2["resumes"][0]["differs"] == {"numpy": ["1.0.0", importlib.metadata.version("numpy")]}
    row = collect(tmp_path, cache=False).iloc[0]
    assert row["env.numpy"] == "1.0.0" and row["env.torch"] == torch.__version__
    assert row["env.resumed_differs"] == "numpy"


def runs_frame(envs: list) -> pd.DataFrame:
    rows = []
    for i, env in enumerate(envs):
        row = {"run_dir": f"r{i}"}
        if env is not None:
            row.update({f"env.{k}": v for k, v in environment.compared_fields(env).items()})
            row["env.resumed_differs"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def test_environment_notes_name_what_differs():
    same = [fake_env(), fake_env(), fake_env()]
    assert environment_notes(runs_frame(same)) == []
    mixed = [fake_env(), fake_env("2.14.1"), fake_env("2.14.1", commit="b" * 40, dirty=True, diff="d1"), None]
    assert environment_notes(runs_frame(mixed)) == [
        "environment: 1 of 4 runs record no environment (no env.json: package versions unknown)",
        "environment: runs differ in torch: 2.13.0+cpu (1 run), 2.14.1 (2 runs)",
        "environment: runs come from 2 commits of the code: aaaaaaaaaa (2 runs), bbbbbbbbbb (1 run)",
        "environment: 1 of 3 runs ran on a tree with uncommitted changes (1 different diff)"]
    # as the index.parquet cache stores them (object columns as strings): the same notes
    cached = runs_frame(mixed).astype(str)
    assert environment_notes(cached) == environment_notes(runs_frame(mixed))


def test_tables_warn_and_footnote_when_runs_of_one_table_differ(tmp_path, capsys):
    root = tmp_path / "results"
    for cell, seed, torch_version in (("grpo", 0, "2.13.0+cpu"), ("grpo", 1, "2.14.1"), ("vipo", 0, "2.13.0+cpu"),
                                      ("vipo", 1, "2.13.0+cpu")):
        d = root / f"{cell}-s{seed}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({
            "experiment": "toy_redness", "seed": seed, "tags": {"ablation": "baseline", "cell": cell},
            "eval/reward": 0.1 * seed + (0.5 if cell == "vipo" else 0.2)}))
        environment.record(d, 0, fake_env(torch_version))
    build(root, tmp_path / "out", ["baseline"], formats=["md"], figures=False)
    line = "environment: runs differ in torch: 2.13.0+cpu (3 runs), 2.14.1 (1 run)"
    assert f"warning in baseline-toy_redness: {line}" in capsys.readouterr().out
    assert f"- {line}" in (tmp_path / "out" / "baseline-toy_redness_cells.md").read_text()
    assert f"- {line}" in (tmp_path / "out" / "baseline-toy_redness_paired.md").read_text()
