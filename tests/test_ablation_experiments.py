"""The ablation files run on every real-model experiment (`python sweep.py ablation=X experiment=Y`): their cells
compose and validate on each experiment's config. (Ablations whose base pins an experiment are left out.)"""

import pytest

from vipo.config import CONFIG_DIR, ConfigError, load
from vipo.sweep import adapt, cell_names, load_ablation, plan

ABLATIONS = sorted(a for a in (p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml"))
                   if not any(o.startswith("experiment=") for o in load_ablation(a).get("base") or []))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml") if not p.stem.startswith("toy"))


def one_cell_of_each_ablation() -> list[str]:
    """The first cell's overrides of every ablation, merged (a later key wins): one config touching every axis."""
    merged: dict[str, str] = {}
    for name in ABLATIONS:
        spec = load_ablation(name)
        cells = spec.get("cells") or {"first": [f"{k}={v[0]}" for k, v in spec["axes"].items()]}
        for o in [*(spec.get("base") or []), *next(iter(cells.values()))]:
            merged[o.split("=", 1)[0]] = o
    return list(merged.values())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_ablation_axis_composes_on_the_experiment(experiment):
    overrides = one_cell_of_each_ablation()
    cfg, raw = load([f"experiment={experiment}", *overrides])
    assert cfg.experiment == experiment and cfg.generator.name == raw["generator"]["name"] != "toy"


# what the ablation files declare (requires), written out: the saliency cell of main and psm_map takes its map's
# gradient on the reward's differentiable path and scores on the same reward as every other cell; it is left out
# where the reward has no input gradient
NO_GRADIENT = {"videoalign"}
ADAPTED = {"main": "saliency", "psm_map": "saliency"}


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_cell_of_every_ablation_validates_on_the_experiment(ablation, experiment, tmp_path, capsys):
    """Every cell validates on the experiment, except a cell that cannot run there: it is left out of the grid with
    the reason printed (not a failure of the sweep); a cell that needs a setting the experiment lacks carries it."""
    reward = load([f"experiment={experiment}"])[0].reward.name
    cells = plan(ablation, [0], [f"experiment={experiment}"], root=tmp_path)
    out = capsys.readouterr().out
    names = [c.name for c in cells]
    expected = cell_names(load_ablation(ablation))
    adapted = ADAPTED.get(ablation)
    if adapted and reward in NO_GRADIENT:
        assert names == [c for c in expected if c != adapted]
        assert (f"[sweep] {ablation} on {experiment}: cell {adapted} left out: needs differentiable_reward: reward "
                f"{reward!r} has no usable input gradient") in out
    else:
        assert names == expected and "left out" not in out
    if adapted:  # every cell, the saliency one included, scores with the experiment's reward as configured
        rewards = [c.raw["reward"] for c in cells]
        assert rewards and all(r == rewards[0] for r in rewards) and "carries" not in out
    assert all(c.seed == 0 for c in cells)


def test_adapt_carries_per_reward_settings_and_names_an_unmet_requirement():
    spec = load_ablation("main")
    assert adapt(spec, "vipo", ["experiment=flux_hps"]) == ([], None)  # a cell that declares nothing
    assert adapt(spec, "saliency", ["experiment=flux_hps"]) == ([], None)  # HPSv2.1 has a differentiable path
    assert adapt(spec, "saliency", ["experiment=toy_redness"]) == ([], None)  # redness is differentiable as it is
    carried, why = adapt(spec, "saliency", ["experiment=flux_hps", "reward=videoalign"])
    assert carried == [] and why.startswith("needs differentiable_reward: reward 'videoalign' has no usable input")
    # per_reward: what a cell carries on an experiment with that reward, checked against its requirements
    spec = {**spec, "per_reward": {"saliency": {"hps": ["psm.saliency.smooth_n=4"],
                                                "pickscore": ["reward=videoalign"]}}}
    assert adapt(spec, "saliency", ["experiment=flux_hps"]) == (["psm.saliency.smooth_n=4"], None)
    carried, why = adapt(spec, "saliency", ["experiment=flux_hps", "reward=pickscore"])
    assert carried == ["reward=videoalign"] and "reward 'videoalign' has no usable input gradient" in why


@pytest.mark.parametrize("key, value, message", [
    ("requires", {"saliency": ["gradient"]}, "requires.saliency in {}: unknown requirement(s) ['gradient']; known: "
                                             "differentiable_reward"),
    ("requires", {"nope": ["differentiable_reward"]}, "requires in {} names cell(s) ['nope'] that are not cells"),
    ("per_reward", {"saliency": ["reward.quantize=false"]}, "per_reward.saliency in {} must map reward names to "
                                                           "override lists"),
])
def test_bad_adaptations_in_an_ablation_file_are_one_line_errors(key, value, message, tmp_path, monkeypatch):
    import yaml

    import vipo.sweep as sweep

    (tmp_path / "ablation").mkdir()
    path = tmp_path / "ablation" / "x.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "cells": {"saliency": ["psm.source=saliency"]}, key: value}))
    monkeypatch.setattr(sweep, "CONFIG_DIR", tmp_path)
    with pytest.raises(ConfigError) as e:
        sweep.load_ablation("x")
    assert message.format(path) in str(e.value) and "\n" not in str(e.value)
