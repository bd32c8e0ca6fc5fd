"""W&B for every run of a sweep, study and search, checked on real offline runs read back from their folders
(the ``.wandb`` record log decoded with wandb's protobuf classes, and ``files/``), never a mocked wandb."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

import tiny  # noqa: F401
from test_sweep import tiny_extra
from vipo.config import load
from vipo.loggers import method_of, tracking_fields
from vipo.records import read_jsonl
from vipo.sweep import run_sweep
from vipo.wandb_records import describe, offline_runs, records

HERE = Path(__file__).parent
WANDB = ["logger=wandb", "logger.mode=offline"]


@pytest.fixture(autouse=True)
def _no_account(monkeypatch, tmp_path):
    """No API key, no network, no settings of the machine's user: offline must need none of them."""
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_ENTITY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))


def _runner():
    os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return [sys.executable, str(HERE / "run_tiny.py")]


@pytest.mark.slow  # a sweep of two cells with W&B, killed and resumed (~30 s on 2 shared cores)
def test_sweep_runs_log_group_cell_tags_scalars_images_and_resume_into_one_run(tmp_path):
    root = tmp_path / "sweep"
    extra = [*tiny_extra(tmp_path), *WANDB, "train.iterations=3", "eval.every=1", "train.checkpoint_every=1",
             "train.keep_checkpoints=true"]
    cells = run_sweep("psm_target", [0], extra, root=root, runner=_runner())
    assert all((c.run_dir / "summary.json").exists() for c in cells), [c.run_dir for c in cells]
    # a crash after the checkpoint of iteration 0: the run restarts from it and redoes iterations 1 and 2
    victim = cells[0].run_dir
    shutil.copy(victim / "checkpoints/iter_00000.pt", victim / "checkpoints/last.pt")
    (victim / "summary.json").unlink()
    run_sweep("psm_target", [0], extra, root=root, runner=_runner())
    assert "resuming" in (victim / "train.log").read_text()

    ids = set()
    for cell in cells:
        sessions = offline_runs(cell.run_dir)
        assert len(sessions) == (2 if cell.run_dir == victim else 1)
        assert len({s.run_id for s in sessions}) == 1  # a resume continues the same W&B run
        run = sessions[0]
        ids.add(run.run_id)
        assert run.run_id.startswith(cell.run_dir.name + "-") and run.name == cell.run_dir.name
        assert run.group == "psm_target/toy_redness" and run.job_type == cell.name
        cfg, _ = load(["logger=none", *cell.overrides, *extra])
        assert set(run.tags) >= {"seed:0", f"reward:{cfg.reward.name}", "ablation:psm_target",
                                 "experiment:toy_redness", f"method:{method_of(cell.name)}", f"cell:{cell.name}"}
        assert run.config["train"]["iterations"] == 3 and run.config["tags"] == {"ablation": "psm_target",
                                                                                  "cell": cell.name}
        assert run.config["advantage"]["mode"] == cell.name and run.project == "vipo"
        # scalars: every metrics.jsonl row, by its own iteration number (-1 = the evaluation before training)
        history = [h for s in sessions for h in s.history]
        logged = {}
        for h in history:
            if "reward_mean" in h:
                logged[h["iteration"]] = h["reward_mean"]  # the resumed session overwrites iterations 1, 2
        rows = {r["iteration"]: r for r in read_jsonl(cell.run_dir / "metrics.jsonl")}
        assert sorted(rows) == [-1, 0, 1, 2] and sorted(logged) == [0, 1, 2]
        assert all(logged[i] == pytest.approx(rows[i]["reward_mean"]) for i in logged)
        assert {h["iteration"] for h in history if "eval/reward" in h} == {-1, 0, 1, 2}
        # images: the sample and map grids of every evaluation, stored under files/
        last = sessions[-1]
        for key in ("samples", "maps"):
            shots = [i for s in sessions for i in s.images(key)]
            want = {-1, 0, 1, 2} if key == "samples" else {0, 1, 2}  # no maps before training
            assert {it for it, _ in shots} == want
            assert all(path in s.files for s in sessions for _, path in s.images(key))
        png = next(last.folder.glob("files/media/images/samples_*.png")).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # the evaluation metrics (and the rest of summary.json) as the run's summary
        summary = json.loads((cell.run_dir / "summary.json").read_text())
        assert last.summary["eval/reward"] == pytest.approx(summary["eval/reward"])
        assert last.summary["train_reward_last"] == pytest.approx(summary["train_reward_last"])
        assert (cell.run_dir / "tracker.json").exists()
        text = describe(last)
        assert f"group psm_target/toy_redness  job_type {cell.name}" in text and "images samples: iterations" in text
    assert len(ids) == 2  # unique per run


@pytest.mark.slow  # five runs with W&B (~1.5 min on 2 cores)
def test_a_study_groups_by_study_reward_part_and_a_search_logs_one_run_per_trial(tmp_path):
    from test_hpo import write_spec
    from test_study import _tiny_study
    from vipo.hpo import run_search
    from vipo.study import run_study

    runs = run_study(_tiny_study(tmp_path), [*WANDB], root=tmp_path / "study", runner=_runner())
    got = {}
    for r in runs:
        (wb,) = offline_runs(r.cell.run_dir)
        got[r.cell.run_dir.name] = (wb.group, wb.job_type)
        assert "study:tiny" in wb.tags and "reward:redness" in wb.tags and "ablation:baseline" in wb.tags
    assert got == {"baseline.grpo-s0": ("tiny/redness/baseline", "grpo"),
                   "baseline.vipo-s0": ("tiny/redness/baseline", "vipo")}

    best = run_search(str(write_spec(tmp_path, 2)), WANDB, root=tmp_path / "optuna")
    trials = sorted((tmp_path / "optuna" / "tiny").glob("trial_*"))
    assert [t.name for t in trials] == ["trial_0000", "trial_0001"]
    for n, folder in enumerate(trials):
        (wb,) = offline_runs(folder)
        assert wb.group == "search/tiny" and wb.job_type == f"trial_{n}" and f"trial:{n}" in wb.tags
        params = wb.config["tags"]["params"]
        assert set(params) == {"train.lr", "psm.k"} and wb.config["tags"]["trial"] == n
        assert wb.config["train"]["lr"] == pytest.approx(params["train.lr"])
        assert wb.config["psm"]["k"] == params["psm.k"]
    assert best["trial"] in (0, 1)


def _cfg(*overrides):
    return load(["logger=none", *overrides])[0]


def test_tracking_fields_by_hand():
    f = tracking_fields(_cfg("+tags.study=toy_study", "+tags.reward=redness", "+tags.ablation=main",
                             "+tags.cell=grpo", "advantage=grpo", "train.seed=2"))
    assert f["group"] == "toy_study/redness/main" and f["job_type"] == "grpo"
    assert f["tags"] == ["seed:2", "reward:redness", "ablation:main", "experiment:toy_redness", "method:grpo",
                         "cell:grpo", "study:toy_study"]
    f = tracking_fields(_cfg("+tags.ablation=psm_k", "+tags.cell=k-3"))
    assert (f["group"], f["job_type"]) == ("psm_k/toy_redness", "k-3") and "method:vipo" in f["tags"]
    f = tracking_fields(_cfg("+tags.search=toy", "+tags.trial=7"))
    assert (f["group"], f["job_type"]) == ("search/toy", "trial_7") and "trial:7" in f["tags"]
    f = tracking_fields(_cfg("logger.group=mine", "logger.job_type=j", "logger.tags=[x]"))
    assert (f["group"], f["job_type"], f["tags"][-1]) == ("mine", "j", "x")
    assert tracking_fields(_cfg())["group"] == "toy_redness"


def test_record_log_reader_rejects_a_corrupt_file(tmp_path):
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"NOPE\x00\x00\x00")
    with pytest.raises(ValueError, match="not a W&B record log"):
        records(bad)


def test_a_resumed_cell_gets_the_tracker_of_this_invocation():
    from vipo.sweep import Cell, logger_args, resume_or_start

    raw = load(["logger=wandb", "logger.tags=[a,b]"])[1]
    assert logger_args(raw) == ["logger.name=wandb", "logger.project=vipo", "logger.mode=offline", "logger.tags=[a,b]"]
    assert logger_args({"logger": {"group": None}}) == ["logger.group=null"]
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.create({"logger": {"name": "none", "mode": "disabled"}}),
                             OmegaConf.from_dotlist(logger_args(raw)))
    assert OmegaConf.to_container(merged)["logger"] == raw["logger"]
    cell = Cell("c", [], 0, Path("/nonexistent/c-s0"), raw)
    assert resume_or_start(cell, ["train"], ["x=1"]) == ["train", "x=1"]  # no checkpoint: a fresh start
