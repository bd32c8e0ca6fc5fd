"""Trainer sanity checks on a tiny generator: on-policy ratios, ODE equivalence, GRPO equivalence,
records, NaN guards and zero-std groups."""

import json
from pathlib import Path

import pytest
import torch

import tiny  # noqa: F401  (registers tiny_test generator/backbone and nan_after reward)
from vipo.advantage import redistribute
from vipo.config import load
from vipo.generators import GENERATORS
from vipo.rollout import rollout, sample_ode
from vipo.train import run
from vipo.update import NonFiniteError, select_timesteps, update

TINY = ["generator=toy", "generator.name=tiny_test", "~generator.weights", "backbone.name=tiny_test",
        "logger=none", "train.prompts_per_iter=2", "train.group_size=4", "train.micro_batch=4",
        "sde.num_steps=4", "eval.num_samples=8", "eval.num_steps=4", "eval.metrics=[reward]", "eval.grid_samples=4"]


def tiny_cfg(tmp_path: Path, *extra: str):
    return load(TINY + [f"results_root={tmp_path}", "run_id=r", f"train.prompts={prompts_file(tmp_path)}", *extra])


def prompts_file(tmp_path: Path) -> str:
    p = tmp_path / "prompts.txt"
    p.write_text("\n".join(tiny.PROMPTS))
    return str(p)


def make_rollout(gen_model, noise_level=0.7, reduction="position", seed=0, prompts=("a red square", "a blue circle")):
    return rollout(gen_model, list(prompts), 4, gen_model.sigmas(4), kind="flow_grpo", noise_level=noise_level,
                   reduction=reduction, micro_batch=4, gen=torch.Generator().manual_seed(seed))


def test_first_update_is_on_policy():
    g = tiny.TinyGenerator()
    ro = make_rollout(g)
    rewards = torch.tensor([0.1, 0.5, 0.2, 0.9, 1.0, 0.0, 0.3, 0.4])
    maps = torch.rand(8, 8, 8, generator=torch.Generator().manual_seed(0))
    adv = redistribute("map_x_advantage", rewards, ro.group_ids, maps)
    opt = torch.optim.SGD(g.trainable_parameters(), lr=0.0)
    stats = update(g, opt, ro, adv, [0, 1, 2, 3], kind="flow_grpo", noise_level=0.7, reduction="position",
                   clip_range=0.05, micro_batch=4, optimizer_steps=1, max_grad_norm=None, kl_coef=0.0)
    assert stats["ratio_min"] == 1.0 and stats["ratio_max"] == 1.0
    assert stats["clipfrac"] == 0.0 and stats["approx_kl"] == 0.0


def test_second_optimizer_step_is_off_policy():
    g = tiny.TinyGenerator()
    ro = make_rollout(g)
    adv = redistribute("ones", torch.arange(8.0), ro.group_ids, torch.ones(8, 8, 8))
    opt = torch.optim.SGD(g.trainable_parameters(), lr=1.0)
    stats = update(g, opt, ro, adv, [0, 1, 2, 3], kind="flow_grpo", noise_level=0.7, reduction="position",
                   clip_range=0.05, micro_batch=4, optimizer_steps=2, max_grad_norm=None, kl_coef=0.0)
    assert stats["ratio_max"] > 1.0 or stats["ratio_min"] < 1.0
    assert stats["optimizer_steps"] == 2


def test_noise_zero_rollout_equals_ode_sampling():
    g = tiny.TinyGenerator()
    ro = make_rollout(g, noise_level=0.0, seed=3)
    prompts = ["a red square"] * 4 + ["a blue circle"] * 4
    ode = sample_ode(g, prompts, 4, torch.Generator().manual_seed(3))
    torch.testing.assert_close(ro.latents[-1], ode, rtol=0, atol=1e-6)


def test_ones_map_with_sample_reduction_gives_the_grpo_gradient():
    rewards = torch.tensor([0.1, 0.5, 0.2, 0.9, 1.0, 0.0, 0.3, 0.4])
    grads = {}
    for mode in ("scalar", "ones"):
        g = tiny.TinyGenerator()
        ro = make_rollout(g, reduction="sample")
        adv = redistribute(mode, rewards, ro.group_ids, torch.ones(8, 8, 8))
        opt = torch.optim.SGD(g.trainable_parameters(), lr=0.0)
        update(g, opt, ro, adv, [1, 3], kind="flow_grpo", noise_level=0.7, reduction="sample", clip_range=0.05,
               micro_batch=4, optimizer_steps=1, max_grad_norm=None, kl_coef=0.0)
        grads[mode] = torch.cat([p.grad.flatten() for p in g.trainable_parameters()])
    assert grads["scalar"].abs().sum() > 0
    torch.testing.assert_close(grads["ones"], grads["scalar"], rtol=1e-5, atol=1e-7)


def test_zero_std_groups_contribute_nothing():
    g = tiny.TinyGenerator()
    ro = make_rollout(g)
    rewards = torch.tensor([0.3] * 4 + [0.0, 1.0, 0.0, 1.0])  # group 0 has zero std
    adv = redistribute("map_x_advantage", rewards, ro.group_ids, torch.rand(8, 8, 8))
    assert torch.all(adv[:4] == 0) and torch.isfinite(adv).all()
    adv_only_zero = adv.clone()
    adv_only_zero[4:] = 0
    opt = torch.optim.SGD(g.trainable_parameters(), lr=0.0)
    update(g, opt, ro, adv_only_zero, [0, 1], kind="flow_grpo", noise_level=0.7, reduction="position",
           clip_range=0.05, micro_batch=4, optimizer_steps=1, max_grad_norm=None, kl_coef=0.0)
    assert all(torch.all(p.grad == 0) for p in g.trainable_parameters())


def test_select_timesteps():
    gen = torch.Generator().manual_seed(0)
    assert select_timesteps(10, 0.5, "first", gen) == [0, 1, 2, 3, 4]
    picked = select_timesteps(10, 0.3, "random", gen)
    assert len(picked) == 3 and len(set(picked)) == 3 and all(0 <= t < 10 for t in picked)


def test_run_writes_records(tmp_path):
    cfg, raw = tiny_cfg(tmp_path, "train.iterations=3", "train.checkpoint_every=2", "eval.every=2")
    summary = run(cfg, raw)
    d = tmp_path / "r"
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [-1, 0, 1, 2]
    for key in ("reward_mean", "reward_std", "zero_std_frac", "clipfrac", "clipfrac_high", "clipfrac_low",
                "approx_kl", "ratio_mean", "ratio_min", "ratio_max", "map_mean", "map_std", "time_sample",
                "time_reward", "time_map", "time_update"):
        assert key in rows[1], key
    assert "eval/reward" in rows[0] and "eval/reward" in rows[2] and "eval/reward" in rows[3]
    assert json.loads((d / "summary.json").read_text())["status"] == "complete"
    assert summary["eval/reward"] == rows[-1]["eval/reward"]
    assert torch.load(d / "checkpoints/last.pt", weights_only=False)["iteration"] == 2
    assert (d / "config.yaml").exists() and list((d / "images").glob("maps_*.png"))


def test_due_iterations_joins_period_schedule_and_end():
    from vipo.eval.during import due_iterations  # local: dist_check.py imports this module in subprocesses

    assert due_iterations(0, [], 7) == {7}
    assert due_iterations(3, [], 7) == {0, 3, 6, 7}
    assert due_iterations(0, [0, 1, 2, 4, 30], 7) == {0, 1, 2, 4, 7}


def test_eval_schedule_and_fixed_noise_samples(tmp_path):
    from vipo.eval.during import FixedNoiseEval

    cfg, raw = tiny_cfg(tmp_path, "train.iterations=4", "eval.every=0", "eval.schedule=[0,2]", "eval.grid_samples=0",
                        "eval.num_samples=8", "eval.num_steps=3", "eval.micro_batch=3")
    run(cfg, raw)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "eval/reward" in r] == [-1, 1, 3]
    # the cached prompts, encodings and noise give what a fresh sample_ode from the eval seed gives
    gen = GENERATORS.build("tiny_test")
    fixed = FixedNoiseEval(gen, tiny.PROMPTS, 8, 3, 1234, micro_batch=3)
    fresh = sample_ode(gen, fixed.prompts, 3, torch.Generator().manual_seed(1234), micro_batch=8)
    assert torch.allclose(fixed.images(), gen.decode(fresh), atol=1e-5) and torch.equal(fixed.images(), fixed.images())


def test_run_refuses_to_overwrite(tmp_path):
    cfg, raw = tiny_cfg(tmp_path, "train.iterations=1", "eval.every=0")
    run(cfg, raw)
    with pytest.raises(FileExistsError, match="resume="):
        run(*tiny_cfg(tmp_path, "train.iterations=1"))


def test_nan_reward_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg, raw = tiny_cfg(tmp_path, "reward.name=nan_after", "+reward.after=2", "train.iterations=5",
                        "train.checkpoint_every=1", "eval.every=0", "eval.metrics=[]")
    with pytest.raises(NonFiniteError, match=r"NaN or infinite for 1 of 8 samples \(indices \[1\]\) at iteration 2"):
        run(cfg, raw)
    d = tmp_path / "r"
    assert torch.load(d / "checkpoints/last.pt", weights_only=False)["iteration"] == 1
    assert not (d / "summary.json").exists()
    assert "iteration 2" in json.loads((d / "failed.json").read_text())["error"]


def test_multi_reward_combined_at_the_advantage_level(tmp_path):
    from vipo.advantage import combine_advantages

    r = {"a": torch.tensor([1.0, 2.0, 3.0, 5.0]), "b": torch.tensor([100.0, 300.0, 0.0, 0.0])}
    gids = torch.tensor([0, 0, 1, 1])
    maps = torch.tensor([0.5, 1.0, 0.25, 1.0]).view(4, 1, 1).expand(4, 2, 2)
    adv = redistribute("map_x_advantage", r, gids, maps, weights={"a": 1.0, "b": 0.5}, clamp=None)
    # group 0: a -> [-1, 1], b -> [-1, 1] * 0.5; group 1: a -> [-1, 1], b has zero std -> 0
    expect = torch.tensor([-1.5, 1.5, -1.0, 1.0]) * torch.tensor([0.5, 1.0, 0.25, 1.0])
    torch.testing.assert_close(adv[:, 0, 0], expect, atol=1e-5, rtol=0)
    torch.testing.assert_close(combine_advantages(r, {"a": 1.0, "b": 0.5}, gids), torch.tensor([-1.5, 1.5, -1.0, 1.0]),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="map_x_reward"):
        redistribute("map_x_reward", r, gids, maps)
    from vipo.config import ConfigError

    with pytest.raises(ConfigError, match="advantage.combine=advantages needs reward.name=multi"):
        load(["advantage.combine=advantages"])
    cfg, raw = tiny_cfg(tmp_path, "reward=toy_multi", "~reward.rewards", "~reward.weights",
                        "+reward.rewards={redness: {}, object_brightness: {}}",
                        "+reward.weights={redness: 1.0, object_brightness: 0.5}", "advantage.combine=advantages",
                        "train.iterations=1", "eval.every=0")
    assert run(cfg, raw)["status"] == "complete"


def test_wandb_logger_writes_an_offline_run_inside_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg, raw = tiny_cfg(tmp_path, "logger=wandb", "train.iterations=1", "eval.every=0")
    run(cfg, raw)
    runs = list((tmp_path / "r/wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
