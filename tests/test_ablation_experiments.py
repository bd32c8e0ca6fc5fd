"""The ablation files run on every real-model experiment (`python sweep.py ablation=X experiment=Y`): their cells
compose and validate on each experiment's config. (Ablations whose base pins an experiment are left out.)"""

import pytest

from vipo.config import CONFIG_DIR, load
from vipo.sweep import load_ablation, plan

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


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ABLATIONS)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_cell_of_every_ablation_validates_on_the_experiment(ablation, experiment, tmp_path):
    cells = plan(ablation, [0], [f"experiment={experiment}"], root=tmp_path)
    assert cells and all(c.seed == 0 for c in cells)
