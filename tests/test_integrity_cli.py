"""Readers that name a bad file and go on, command-line guards with one-line errors and honest exit statuses,
failed runs listed as failed, and Optuna studies that neither keep a killed trial RUNNING nor mix settings."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tiny  # noqa: F401
from test_hpo import write_spec
from test_train import TINY
from vipo.config import ConfigError, load
from vipo.results import collect, failed_runs

HERE = Path(__file__).parent
REPO = HERE.parent


def env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{HERE}{os.pathsep}{REPO}",
            **{k: str(v) for k, v in extra.items()}}


def one_line(text: str) -> str:
    text = text.strip()
    assert "\n" not in text, text
    return text


# -- guards ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["ablation=psm_target", "workers=0"], "config error: workers=0: must be at least 1"),
    (["ablation=psm_target", "workers=abc"], "config error: workers=abc: not a whole number"),
    (["ablation=psm_target", "seeds=-1"], "config error: seeds=-1: must be at least 1"),
    (["ablation=psm_target", "seeds=abc"], "config error: seeds=abc: not a whole number"),
    (["ablation=psm_target", "seeds=[0,x]"], "config error: seeds=x: not a whole number"),
    (["study=toy", "workers=0"], "config error: workers=0: must be at least 1"),
    (["search=toy", "trials=0"], "config error: trials=0: must be at least 1"),
])
def test_numeric_command_line_values_are_checked(args, message, capsys, tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_command", REPO / "sweep.py")
    sweep_command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep_command)
    monkeypatch.chdir(tmp_path)
    assert sweep_command.main(args) == 2
    assert one_line(capsys.readouterr().err) == message


def test_a_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path):
    import shutil

    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    (tmp_path / "experiments/experiment/broken.yaml").write_text("# @package _global_\ntrain:\n  lr: [1e-4\n")
    with pytest.raises(ConfigError) as e:
        load(["experiment=broken"], config_dir=tmp_path / "experiments")
    assert str(e.value) == ("config error: YAML syntax error in experiments/experiment/broken.yaml line 4: expected ',' "
                            "or ']', but got '<stream end>' (while parsing a flow sequence that starts on line 3)")


def test_a_yaml_syntax_error_in_a_study_file_through_the_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrewards: {a: [x]\nparts: []\n")
    p = subprocess.run([sys.executable, str(REPO / "sweep.py"), f"study={bad}", "table"], env=env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert one_line(p.stderr).startswith(f"config error: YAML syntax error in {bad} line 3:")


def test_a_missing_results_root_exits_non_zero(tmp_path):
    for module in ("analysis.tables", "vipo.results"):
        p = subprocess.run([sys.executable, "-m", module, str(tmp_path / "nonexistent")], env=env(), cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (module, p.stdout, p.stderr)
        assert one_line(p.stderr) == f"error: results root {tmp_path / 'nonexistent'} does not exist"


def tiny_sweep(tmp_path, *extra, **envs):
    p = tmp_path / "prompts.txt"
    p.write_text("a red square\na blue circle\n")
    cmd = [sys.executable, str(HERE / "run_tiny.py"), "sweep", "psm_target", str(tmp_path / "sweep"), "0", "1",
           *TINY, "train.iterations=2", "eval.every=0", f"train.prompts={p}", *extra]
    return subprocess.run(cmd, env=env(**envs), capture_output=True, text=True, timeout=300)


def test_a_sweep_with_a_failed_run_exits_non_zero_and_lists_it_as_failed_everywhere(tmp_path, capsys):
    """NaN rewards fail both cells: the sweep exits 1 and the results reader lists both runs as failed."""
    from vipo.results import main as results_main

    bad = tiny_sweep(tmp_path, "reward.name=nan_after", "+reward.after=0")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "[sweep] FAILED map_x_advantage-s0 (exit 1" in bad.stdout and "2 run(s) failed" in bad.stdout
    root = tmp_path / "sweep"
    assert [d.name for d, _ in failed_runs(root)] == ["map_x_advantage-s0", "map_x_reward-s0"]
    assert results_main([str(root)]) == 0
    assert f"FAILED {root / 'map_x_advantage-s0'}: reward is NaN" in capsys.readouterr().out


def test_failed_json_is_removed_after_a_later_success(tmp_path):
    from test_train import tiny_cfg
    from vipo.train import run
    from vipo.update import NonFiniteError

    cfg, raw = tiny_cfg(tmp_path, "reward.name=nan_after", "+reward.after=0", "train.iterations=2", "eval.every=0")
    with pytest.raises(NonFiniteError):
        run(cfg, raw)
    assert [d.name for d, _ in failed_runs(tmp_path)] == ["r"]
    cfg, raw = tiny_cfg(tmp_path, "train.iterations=2", "eval.every=0")
    run(cfg, raw)
    assert failed_runs(tmp_path) == [] and not (tmp_path / "r/failed.json").exists()


# -- readers --------------------------------------------------------------------------------------------------

def finished_sweep(tmp_path):
    """Both cells of a psm_target sweep (seed 0) trained in this process, as the sweep would have trained them."""
    from vipo.config import validate
    from vipo.sweep import plan
    from vipo.train import run

    p = tmp_path / "prompts.txt"
    p.write_text("a red square\na blue circle\n")
    cells = plan("psm_target", [0], [*TINY, "train.iterations=2", "eval.every=0", f"train.prompts={p}"],
                 root=tmp_path / "sweep")
    for cell in cells:
        run(validate(json.loads(json.dumps(cell.raw))), cell.raw)
    return tmp_path / "sweep"


def test_an_invalid_summary_is_skipped_with_a_warning_and_the_run_finished_again(tmp_path, capsys):
    """An invalid summary.json used to stop every table and count the cell as done."""
    from analysis.make_tables import main as tables_main

    root = finished_sweep(tmp_path)
    bad = root / "map_x_reward-s0/summary.json"
    bad.write_text('{"run_id": "map_x_reward-s0", "eval/rew')
    capsys.readouterr()
    df = collect(root, cache=False)
    assert list(df["run_id"]) == ["map_x_advantage-s0"]
    assert tables_main([str(root), "--out", str(tmp_path / "out"), "--no-figures"]) == 0
    assert f"warning: {bad} is unreadable (JSONDecodeError" in capsys.readouterr().err
    assert (tmp_path / "out/tables.md").exists()
    again = tiny_sweep(tmp_path)  # the sweep does not count it as done: it resumes it and rewrites the summary
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 done, 1 to run" in again.stdout and "[sweep] done  map_x_reward-s0" in again.stdout
    assert "is already complete" not in (root / "map_x_reward-s0/train.log").read_text()
    assert json.loads(bad.read_text())["run_id"] == "map_x_reward-s0"


def test_a_truncated_study_index_is_rebuilt_with_a_warning(tmp_path, capsys):
    from vipo.study import load_study, plan_study, read_index, write_index

    spec = load_study("toy")
    root = tmp_path / "toy"
    _, index = plan_study("toy", root=root)
    write_index(root, index)
    text = (root / "index.json").read_text()
    (root / "index.json").write_text(text[: len(text) // 2])
    import vipo.study as study

    original = study.study_of_root
    study.study_of_root = lambda r: "toy" if Path(r) == root else original(r)
    try:
        assert read_index(root) == index
    finally:
        study.study_of_root = original
    assert f"warning: {root / 'index.json'} was unreadable; rebuilt it from experiments/study/toy.yaml " \
           f"({len(index)} entries)" in capsys.readouterr().err
    assert json.loads((root / "index.json").read_text()) == index
    (root / "index.json").write_text("[{")  # a folder no study file owns: one line, no traceback
    with pytest.raises(FileNotFoundError, match="index.json is unreadable and no study file"):
        read_index(root)
    assert spec["name"] == "toy"


# -- Optuna ---------------------------------------------------------------------------------------------------

def search(spec, root, *extra, **envs):
    return subprocess.Popen([sys.executable, str(HERE / "run_tiny.py"), "search", str(spec), str(root), *extra],
                            env=env(**envs), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_trial_is_marked_failed_on_the_next_start(tmp_path):
    """SIGKILL of a worker mid-trial: the next worker, started at once (Optuna's own heartbeat grace would be
    120 s here), finds the trial's folder lease stale, marks it FAIL, queues its parameters again and finishes."""
    import optuna
    import yaml

    from vipo.hpo import build_study, finished, load_spec

    spec_path, root = write_spec(tmp_path, n_trials=2), tmp_path / "optuna"
    raw = yaml.safe_load(spec_path.read_text())
    raw["heartbeat_seconds"] = 60
    spec_path.write_text(yaml.safe_dump(raw))
    killed = search(spec_path, root, "reward.name=kill_switch", VIPO_TEST_HANG_AT=2)
    trial0 = root / "tiny/trial_0000"
    deadline = time.time() + 120
    while not (trial0 / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    study = build_study(load_spec(str(spec_path)), root)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING]
    again = search(spec_path, root, "reward.name=kill_switch")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    assert f"[search] trial 0 was left RUNNING by a worker that is gone (its holder pid {killed.pid} on this host is " \
           "gone); marked FAIL and queued again" in out
    trials = build_study(load_spec(str(spec_path)), root).get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[1].params == trials[0].params and trials[1].user_attrs["retry_of"] == 0
    assert finished(build_study(load_spec(str(spec_path)), root)) == 2


def test_a_search_refuses_to_continue_a_study_with_other_fixed_overrides(tmp_path):
    spec_path, root = write_spec(tmp_path, n_trials=1), tmp_path / "optuna"
    first = search(spec_path, root)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    best = (root / "tiny_best.json").read_text()
    other = search(spec_path, root, "train.iterations=5", "psm.k=2")
    out, _ = other.communicate(timeout=300)
    assert other.returncode != 0
    assert "config error: study tiny was run with other fixed overrides (psm.k: None -> '2', train.iterations: " \
           "'3' -> '5')" in out
    assert (root / "tiny_best.json").read_text() == best
