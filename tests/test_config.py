"""Every config file composes and validates; bad keys and values stop with one clear message."""

from pathlib import Path

import pytest

from vipo.cli import main
from vipo.config import CONFIG_DIR, ConfigError, load

# vbench/: eval presets of python -m vipo.eval metrics=[vbench], not a training group (tests/test_vbench_suite.py)
GROUPS = sorted(p.name for p in CONFIG_DIR.iterdir()
                if p.is_dir() and p.name not in ("ablation", "accelerate", "study", "vbench", "launcher"))


def group_files():
    for group in GROUPS:
        for f in sorted((CONFIG_DIR / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group,name", list(group_files()))
def test_every_group_file_composes(group, name):
    cfg, raw = load([f"{group}={name}"])
    assert raw[group] is not None
    if group == "experiment":
        assert cfg.experiment == name


def test_default_is_vipo_on_toy_redness():
    cfg, _ = load([])
    assert cfg.experiment == "toy_redness"
    assert cfg.generator.name == "toy" and cfg.reward.name == "redness"
    assert cfg.advantage.mode == "map_x_advantage" and cfg.psm.source == "backbone"
    assert cfg.train.betas == (0.9, 0.999)


@pytest.mark.parametrize("override,needle", [
    ("+train.lrr=1", "unknown key 'train.lrr'; did you mean 'lr'"),
    ("train.lr=fast", "train.lr must be a number"),
    ("train.iterations=2.5", "train.iterations must be an integer"),
    ("advantage.mode=magic", "advantage.mode='magic'; choose one of"),
    ("sde.kind=langevin", "sde.kind='langevin'"),
    ("+generator.guidanse_scale=2", "unknown key 'generator.guidanse_scale' for generator 'toy'"),
    ("reward.name=nope", "reward.name='nope' is not a registered reward"),
    ("train.group_size=1", "train.group_size must be >= 2"),
    ("advantage.mode=scalar", "advantage.mode=scalar needs sde.logprob_reduction=sample"),
    ("train.lrr=1", "unknown key 'train.lrr'; did you mean 'lr'"),  # without the + as well
    ("+foo=1", "unknown top-level key 'foo'"),
    ("eval.schedule=[0,-5]", "eval.schedule holds iteration counts >= 0"),
    ("eval.micro_batch=-1", "eval.micro_batch must be >= 0"),
])
def test_bad_config_names_the_key(override, needle):
    with pytest.raises(ConfigError) as e:
        load([override])
    assert needle in str(e.value)


def test_toy_study_preset_is_the_16px_world_with_a_dense_early_schedule():
    cfg, _ = load(["experiment=toy_study"])
    assert cfg.generator.kwargs["resolution"] == 16 and cfg.reward.name == "redness"
    assert (cfg.train.iterations, cfg.train.lr) == (150, 3e-5)
    assert cfg.eval.num_samples >= 256 and cfg.eval.every == 0
    gaps = [b - a for a, b in zip(cfg.eval.schedule, cfg.eval.schedule[1:])]
    assert cfg.eval.schedule[0] == 0 and cfg.eval.schedule[-1] == 150 and gaps[0] < gaps[-1]
    grpo, _ = load(["experiment=toy_study", "advantage=grpo", "train.iterations=2"])  # shortened runs keep the preset
    assert grpo.advantage.mode == "scalar" and grpo.train.iterations == 2


def test_cli_prints_one_line_and_exits_2(capsys):
    assert main(["train.clip_range=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.clip_range must be a number" in err


def test_cli_cfg_prints_composed_config(capsys):
    assert main(["--cfg", "train.iterations=3"]) == 0
    out = capsys.readouterr().out
    assert "iterations: 3" in out and "name: toy" in out


def test_resume_requires_a_run_folder(tmp_path: Path, capsys):
    assert main([f"resume={tmp_path}"]) == 2
    assert "no config.yaml" in capsys.readouterr().err


def test_public_dotlist_and_section():
    from dataclasses import dataclass
    from typing import Optional

    from vipo.config import dotlist, section

    assert dotlist(["a.b=1", "+xs=[1,2]", "s=hi", "f=0.5"]) == {"a": {"b": 1}, "xs": [1, 2], "s": "hi", "f": 0.5}
    with pytest.raises(ConfigError, match="override 'nokey' is not key=value"):
        dotlist(["nokey"])
    with pytest.raises(ConfigError, match="config error in overrides"):
        dotlist(["x=["])

    @dataclass
    class Opts:
        n: int = 1
        name: Optional[str] = None

    assert section(Opts, {"n": 3}) == Opts(n=3)
    assert section(Opts, {"name": "x"}, "opts") == Opts(name="x")
    with pytest.raises(ConfigError, match="unknown option 'nn'; did you mean 'n'"):
        section(Opts, {"nn": 3}, what="option")
    with pytest.raises(ConfigError, match="opts.n must be an integer, got 'a'"):
        section(Opts, {"n": "a"}, "opts")
