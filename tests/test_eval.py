"""``python -m vipo.eval`` on a real (tiny) run folder: records, seeds, batch-size independence, errors;
the metric registry; VBench totals from result files; the toy metric against its one-shot evaluator."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import tiny
from test_train import tiny_cfg
from vipo.components import load_run_generator
from vipo.eval import EVALUATORS, build_metric, metric_names
from vipo.eval.__main__ import main
from vipo.eval.metrics import ToyMetric, VideoAlignMetric
from vipo.eval.run import parse_args, start_noise
from vipo.rewards.rules import Redness
from vipo.rollout import sample_ode
from vipo.train import run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real run folder: the trainer on the tiny generator for 2 iterations (redness reward, EMA on)."""
    root = tmp_path_factory.mktemp("runs")
    cfg, raw = tiny_cfg(root, "train.iterations=2", "eval.every=0", "train.ema_decay=0.9")
    run(cfg, raw)
    return root / "r"


def scores(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "scores.parquet")


def test_run_folder_records(run_dir, tmp_path):
    out = tmp_path / "ev"
    assert main([f"run={run_dir}", "metrics=[reward,redness]", "samples_per_prompt=2", "batch_size=3",
                 f"out={out}"]) == 0
    df = scores(out)
    assert len(df) == len(tiny.PROMPTS) * 2
    assert list(df.columns) == ["prompt_index", "prompt", "sample", "seed", "reward", "redness"]
    assert df["prompt"].tolist() == [p for p in tiny.PROMPTS for _ in range(2)]
    assert df["seed"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and df["sample"].tolist() == [0, 1] * 4
    # the run's training reward is redness: the "reward" metric and the registered "redness" metric agree
    assert df["reward"].tolist() == pytest.approx(df["redness"].tolist(), abs=1e-7)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iteration"] == 1 and summary["num_steps"] == 4  # the run's last iteration / eval.num_steps
    for col in ("reward", "redness"):
        r = summary["results"][col]
        assert r["value"] == pytest.approx(df[col].mean(), abs=1e-12)
        assert r["std"] == pytest.approx(df[col].std(ddof=0), abs=1e-12) and r["n"] == 8
    rows = [json.loads(x) for x in (run_dir / "eval/summary.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["out"] == str(out)]
    assert [r["metric"] for r in mine] == ["reward", "redness"]
    assert mine[0]["value"] == summary["results"]["reward"]["value"] and mine[0]["iteration"] == 1
    assert mine[0]["prompt_set"] == "prompts" and mine[0]["n"] == 8 and mine[0]["timestamp"]
    assert (out / "samples.png").stat().st_size > 0


def test_load_run_generator_names_what_is_missing_and_picks_the_weights(run_dir, tmp_path):
    import shutil

    ema, _ = load_run_generator(run_dir, use_ema=True, device="cpu")
    raw, _ = load_run_generator(run_dir, use_ema=False, device="cpu")
    state = torch.load(run_dir / "checkpoints/last.pt", map_location="cpu", weights_only=False)
    trained = dict(raw.named_parameters())
    smoothed = dict(ema.named_parameters())
    name = next(iter(state["ema"]))
    assert torch.equal(trained[name], state["trainable"][name]) and torch.equal(smoothed[name], state["ema"][name])
    assert not torch.equal(state["ema"][name], state["trainable"][name])  # EMA 0.9 over 2 iterations
    copy = tmp_path / "r"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(FileNotFoundError, match=r"is not a finished or checkpointed run: .*/r/checkpoints/last.pt "
                                                r"is missing"):
        load_run_generator(copy, device="cpu")
    (copy / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"/r/config.yaml and .*/r/checkpoints/last.pt are missing"):
        load_run_generator(copy, device="cpu")


def test_an_evaluation_inside_a_run_folder_is_not_a_run(run_dir):
    """The default output <run>/eval/<set>/ holds a summary.json; the results table still has one row for the run,
    with the evaluation's metric as eval/<metric>."""
    from vipo.results import collect

    assert main([f"run={run_dir}", "metrics=[redness]", "samples_per_prompt=1"]) == 0
    summary = json.loads((run_dir / "eval/prompts/summary.json").read_text())
    df = collect(run_dir.parent, cache=False)
    assert df["run_dir"].tolist() == [str(run_dir)]
    assert float(df["eval/redness"].iloc[0]) == pytest.approx(summary["results"]["redness"]["value"], abs=1e-12)


def test_a_sample_is_reproducible_from_its_seed(run_dir, tmp_path):
    """Row (prompt 2, sample 1) = the 2nd draw of Generator(seed + 2), sampled and scored independently."""
    out = tmp_path / "ev"
    assert main([f"run={run_dir}", "metrics=[redness]", "samples_per_prompt=2", "seed=5", f"out={out}"]) == 0
    row = scores(out).query("prompt_index == 2 and sample == 1")
    g = torch.Generator().manual_seed(5 + 2)
    torch.randn(3, 8, 8, generator=g)
    x = torch.randn(1, 3, 8, 8, generator=g)  # [1, 3, 8, 8]
    gen, _ = load_run_generator(run_dir, use_ema=True, device="cpu")
    image = gen.decode(sample_ode(gen, [tiny.PROMPTS[2]], 4, None, noise=x))  # [1, 3, 8, 8]
    assert row["seed"].item() == 7
    assert row["redness"].item() == pytest.approx(Redness()(image, [tiny.PROMPTS[2]]).item(), abs=1e-6)


def test_scores_do_not_depend_on_batch_size_or_sample_count(run_dir, tmp_path):
    runs = {}
    for bs, spp in [(1, 3), (5, 3), (8, 1)]:
        out = tmp_path / f"bs{bs}_{spp}"
        assert main([f"run={run_dir}", "metrics=[redness]", f"samples_per_prompt={spp}", f"batch_size={bs}",
                     "seed=3", f"out={out}"]) == 0
        runs[(bs, spp)] = scores(out)
    a, b, c = runs[(1, 3)], runs[(5, 3)], runs[(8, 1)]
    assert a["redness"].tolist() == pytest.approx(b["redness"].tolist(), abs=1e-6)
    assert a.query("sample == 0")["redness"].tolist() == pytest.approx(c["redness"].tolist(), abs=1e-6)
    assert a["redness"].nunique() == len(a)  # different seeds / draws really give different samples


def test_ema_weights_are_used_unless_disabled(run_dir, tmp_path):
    vals = {}
    for ema in ("true", "false"):
        assert main([f"run={run_dir}", "metrics=[redness]", f"use_ema={ema}", f"out={tmp_path / ema}"]) == 0
        vals[ema] = scores(tmp_path / ema)["redness"]
    assert (vals["true"] - vals["false"]).abs().max() > 1e-4


def test_summary_rows_accumulate(run_dir, tmp_path):
    path = run_dir / "eval/summary.jsonl"
    before = len(path.read_text().splitlines()) if path.exists() else 0
    for k in range(2):
        assert main([f"run={run_dir}", "metrics=[redness]", "max_prompts=2", f"out={tmp_path / str(k)}"]) == 0
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == before + 2 and rows[-1]["n"] == 2 and rows[-1]["out"] == str(tmp_path / "1")


def test_base_generator_without_run_folder(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na blue circle\n")
    out = tmp_path / "base" / "p"
    assert main(["generator=tiny_test", "generator.seed=1", f"prompts={prompts}", "metrics=[reward,centred]",
                 "reward=redness", "num_steps=2", "grid_samples=0", f"out={out}"]) == 0
    df = scores(out)
    assert len(df) == 2 and set(df.columns) >= {"reward", "centred"}
    row = json.loads((tmp_path / "base/summary.jsonl").read_text().splitlines()[0])
    assert row["iteration"] is None and row["source"] == "generator:tiny_test" and row["num_steps"] == 2
    assert not (out / "samples.png").exists()


def test_errors(run_dir, tmp_path, capsys):
    assert main([f"run={run_dir}", "metrics=[reward,nope]", f"out={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric(s) ['nope']" in err and all(m in err for m in ("hps", "pickscore", "imagereward", "toy"))
    assert main([f"run={tmp_path / 'missing'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half/config.yaml").write_text("{}")
    assert main([f"run={tmp_path / 'half'}"]) == 1
    assert "checkpoints/last.pt is missing" in capsys.readouterr().err
    assert main([f"run={run_dir}", "batchsize=4"]) == 2
    assert "did you mean 'batch_size'" in capsys.readouterr().err
    assert main([f"run={run_dir}", "generator=tiny_test"]) == 2
    assert "exactly one of run=" in capsys.readouterr().err
    assert main(["generator=tiny_test", "prompts=toy", "metrics=[reward]"]) == 2
    assert "needs reward=" in capsys.readouterr().err
    assert main([f"run={run_dir}", "metrics=[redness]", "metric_kwargs.hps.path_or_id=x"]) == 2
    assert "not evaluated" in capsys.readouterr().err
    with pytest.raises(Exception, match="batch_size must be >= 1"):
        parse_args([f"run={run_dir}", "batch_size=0"])


def test_module_entry_point_reports_missing_run(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "vipo.eval", f"run={tmp_path / 'nope'}"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and f"run folder {tmp_path / 'nope'} does not exist" in p.stderr


# ------------------------------------------------------------------------------------ metric registry
def test_every_reward_is_a_metric_and_keeps_the_trainer_signature():
    assert {"reward", "toy", "videoalign", "hps", "pickscore", "imagereward", "redness", "multi"} <= set(EVALUATORS)
    assert "nan_after" in metric_names()  # registered after import (tests/tiny.py): still a metric
    images = torch.zeros(2, 3, 2, 2)
    images[0, 0] = 1.0  # sample 0 pure red, sample 1 black
    # Redness = mean(r - (g + b) / 2): [1, 0] -> mean 0.5, population std 0.5
    assert EVALUATORS.build("reward", reward=Redness())(images, ["a", "b"]) == {"reward": 0.5, "reward_std": 0.5}
    assert build_metric("redness")(images, ["a", "b"]) == {"redness": 0.5, "redness_std": 0.5}
    trained = Redness()
    assert build_metric("redness", reward=trained).reward is trained  # the training reward is reused
    with pytest.raises(KeyError, match="known metrics: .*hps"):
        build_metric("nope")


class FakeVideoAlign:
    def rewards(self, videos, prompts):
        vq, mq, ta = torch.tensor([1.0, 3.0]), torch.tensor([0.5, -0.5]), torch.tensor([2.0, 0.0])
        return {"VQ": vq, "MQ": mq, "TA": ta, "Overall": vq + mq + ta}


def test_videoalign_metric_reports_the_three_dimensions():
    m = build_metric("videoalign", model=FakeVideoAlign())
    assert isinstance(m, VideoAlignMetric)
    out = m(torch.zeros(2, 3, 4, 8, 8), ["a", "b"])
    assert out["videoalign_vq"] == 2.0 and out["videoalign_vq_std"] == 1.0
    assert out["videoalign_mq"] == 0.0 and out["videoalign_ta"] == 1.0
    assert out["videoalign_overall"] == 3.0 and out["videoalign_overall_std"] == 0.5  # [3.5, 2.5]
    with pytest.raises(ValueError, match="videos"):
        m.scores(torch.zeros(2, 3, 8, 8), ["a", "b"])


# ------------------------------------------------------------------------------------------ toy metric
def test_toy_metric_in_batches_equals_the_one_shot_evaluator(tmp_path):
    from vipo.toy.nets import ToyClassifier, save_weights

    judge = tmp_path / "judge.safetensors"
    torch.manual_seed(0)
    save_weights(ToyClassifier(width=8), judge, {"width": 8})
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red square\na blue circle\n")
    out = tmp_path / "toy"
    assert main(["generator=tiny_test", f"prompts={prompts}", "metrics=[toy]", f"metric_kwargs.toy.judge_weights={judge}",
                 "samples_per_prompt=3", "batch_size=4", "num_steps=2", f"out={out}"]) == 0
    res = json.loads((out / "summary.json").read_text())["results"]
    assert {"shape_acc", "colour_acc", "fd", "reward_redness", "reward_centred"} <= set(res)
    # regenerate the same 6 images in one batch and ask the toy evaluator for its one-shot numbers
    gen = tiny.TinyGenerator()
    plan = [(i, j, i) for i in range(2) for j in range(3)]
    texts = ["a red square"] * 3 + ["a blue circle"] * 3
    images = gen.decode(sample_ode(gen, texts, 2, None, noise=start_noise(plan, (3, 8, 8))))  # [6, 3, 8, 8]
    ref = ToyMetric(str(judge))(images, texts)
    for k in ("shape_acc", "colour_acc", "fd", "reward_redness", "reward_centred"):
        assert res[k]["value"] == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    assert res["fd"]["std"] is None and res["fd"]["n"] == 6


# ------------------------------------------------------------------------------------------------ VBench
MADE_UP = {  # VBench fractions (the numbers of tests/test_vbench.py, whose total is worked out by hand there)
    "subject_consistency": 0.96, "background_consistency": 0.97, "temporal_flickering": 0.98,
    "motion_smoothness": 0.985, "dynamic_degree": 0.70, "aesthetic_quality": 0.62, "imaging_quality": 0.66,
    "object_class": 0.85, "multiple_objects": 0.70, "human_action": 0.95, "color": 0.88,
    "spatial_relationship": 0.75, "scene": 0.50, "appearance_style": 0.22, "temporal_style": 0.25,
    "overall_consistency": 0.27,
}


def test_vbench_totals_from_result_files(tmp_path, capsys):
    from vipo.eval.vbench import vbench_totals

    items = list(MADE_UP.items())
    for k, part in enumerate((items[:7], items[7:])):  # VBench writes one file per evaluated batch of dimensions
        data = {d: [s, [{"video_path": f"v{i}.mp4", "video_results": s} for i in range(3)]] for d, s in part}
        (tmp_path / f"part{k}_eval_results.json").write_text(json.dumps(data))
    assert main([f"vbench_results={tmp_path}"]) == 0
    summary = json.loads((tmp_path / "vbench_summary.json").read_text())
    assert summary["results"]["vbench_total"]["value"] == pytest.approx(0.8243848, abs=1e-6)
    assert summary["results"]["vbench_quality"]["value"] == pytest.approx(vbench_totals(MADE_UP)["quality"])
    assert summary["dimensions"]["scene"]["n"] == 3
    rows = [json.loads(x) for x in (tmp_path / "summary.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["vbench_quality", "vbench_semantic", "vbench_total"]
    assert "VBench    total: 82.44%" in capsys.readouterr().out
    (tmp_path / "again_eval_results.json").write_text(json.dumps({"scene": [0.5, []]}))
    assert main([f"vbench_results={tmp_path}"]) == 1
    assert "appears in both" in capsys.readouterr().err
