"""The planner end to end on the toy world (fast), its arithmetic, the verdict lines and bad input."""

import dataclasses
import json
import math

import pytest

from vipo.plan.arch import PlanError
from vipo.plan.cli import main, split_options, verdict
from vipo.plan.gpus import seconds, slurm_resources


def _opts(**kw):
    opts, _ = split_options([f"{k}={v}" for k, v in kw.items()])
    return opts


@pytest.fixture(scope="module")
def toy():
    from vipo.config import load
    from vipo.plan.estimate import estimate

    cfg, _ = load(["experiment=toy_demo"])
    return cfg, estimate(cfg, gpus=1)


def test_iteration_flops_compose_from_the_per_sample_counts(toy):
    cfg, c = toy
    t, T = cfg.train, cfg.sde.num_steps
    n = t.prompts_per_iter * t.group_size
    k = math.ceil(t.timestep_fraction * T - 1e-9)
    f = c.flops
    assert f["rollout"] == T * n * f["forward_per_sample"]  # guidance 1: one forward per step
    assert f["update"] == t.inner_epochs * k * n * f["train_per_sample_step"]
    assert f["total"] == f["rollout"] + f["reward"] + f["map"] + f["update"]
    # the toy UNet: 2x forward for the backward (full fine-tuning, no checkpointing), minus the first layer's
    # input gradient
    assert 2.8 * f["forward_per_sample"] < f["train_per_sample_step"] <= 3 * f["forward_per_sample"]
    assert c.params_total == c.params_trainable > 1e6  # the 1.1M-parameter toy UNet, fully trained
    m = c.memory
    assert m["weights"] == m["grads"] == 4 * c.params_total  # fp32
    assert m["optimizer"] > 2 * m["grads"]


def test_time_and_slurm_arithmetic():
    assert seconds(989e12 * 0.5, "h100", 0.5) == pytest.approx(1.0)
    s = slurm_resources(12, hours=2.0, host_gb=100.5, margin=1.5)
    assert s == {"nodes": 2, "gpus_per_node": 8, "tasks_per_node": 8, "cpus_per_task": 8, "mem_gb": 101,
                 "timeout_min": 195}


def test_cli_writes_json_and_prints_the_verdict(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["experiment=toy_demo", "gpus=2", "gpu=a100", "mfu=0.4", f"out={out}"]) == 0
    text = capsys.readouterr().out
    assert "fits on 80 GB" in text and "GPU-hours" in text
    doc = json.loads(out.read_text())
    assert doc["gpus"] == 2 and doc["gpu"]["bf16_tflops"] == 312
    per_iter = doc["flops_per_gpu_per_iteration"]["total"] / (0.4 * 312e12)
    assert doc["seconds_per_iteration"] == pytest.approx(per_iter)
    hours = (doc["iterations"] * doc["seconds_per_iteration"]
             + doc["evaluations"] * doc["seconds_per_evaluation"]) / 3600
    assert doc["gpu_hours"] == pytest.approx(2 * hours)


@pytest.mark.parametrize("args,message", [
    (["experiment=toy_demo", "gpu=x100"], "plan error: unknown GPU 'x100'; known: a100"),
    (["experiment=toy_demo", "gpus=zero"], "plan error: bad planner option"),
    (["experiment=toy_demo", "mfu=2"], "plan error: mfu must be in (0, 1]"),
    (["experiment=flux_hps", "generator.path_or_id=me/my-model"], "has no architecture in vipo/plan/data/models.yaml"),
])
def test_bad_input_is_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_verdicts_for_configs_that_do_not_fit(toy):
    _, c = toy
    big = dataclasses.replace(c, memory={**c.memory, **{k: v * 10 ** 4 for k, v in c.memory.items()
                                                       if k in ("weights", "grads", "optimizer", "total",
                                                                "required")}})
    line = verdict(big, 80, gpus=8)
    assert line.startswith("does not fit on 80 GB") and "fits with FSDP over" in line
    huge = dataclasses.replace(big, memory={**big.memory, "frozen": 10 ** 12})
    assert "nor with FSDP over all 8 GPUs" in verdict(huge, 80, gpus=8)


def test_sweep_plan_of_an_ablation(tmp_path, capsys):
    from vipo.plan.cli import plan_sweep

    out = tmp_path / "plan.json"
    assert plan_sweep(["ablation=psm_k", "experiment=toy_demo", "gpus=1", f"out={out}"]) == 0
    doc = json.loads(out.read_text())
    assert doc["total"]["runs"] == len(doc["runs"]) == 12  # 6 cells x 2 seeds
    assert doc["total"]["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in doc["runs"]))
    assert {"nodes", "gpus_per_node", "timeout_min", "mem_gb"} <= set(doc["runs"][0]["slurm"])
    assert "sum over 12 runs" in capsys.readouterr().out


def test_unknown_planner_gpu_raises():
    with pytest.raises(PlanError):
        split_options(["gpu=nope"])
