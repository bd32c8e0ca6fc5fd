"""Ablation grids: every ablation file composes, every cell validates, a grid runs, skips and resumes,
and the table is rebuilt from the summaries."""

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

import tiny  # noqa: F401
from analysis.render import cells_view, markdown
from test_train import TINY
from vipo.config import CONFIG_DIR, ConfigError, load
from vipo.results import collect
from analysis.report import sweep_table as table
from vipo.sweep import cell_overrides, expand_cells, load_ablation, plan, run_sweep

HERE = Path(__file__).parent
ABLATIONS = sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml"))


def tiny_extra(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("a red square\na blue circle\na green star\na white line\n")
    return [*TINY, "train.iterations=2", "eval.every=0", f"train.prompts={p}"]


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_file_composes(name, tmp_path):
    spec = load_ablation(name)
    text = (CONFIG_DIR / "ablation" / f"{name}.yaml").read_text().splitlines()
    assert text[0].startswith("# Table:") and text[1].startswith(f"# Run:   python sweep.py ablation={name}")
    cells = plan(name, [0, 1], [], root=tmp_path)
    assert len(cells) == 2 * (len(spec.get("cells") or {}) or _product(spec["axes"]))
    assert len({c.run_dir for c in cells}) == len(cells)


def _product(axes):
    n = 1
    for v in axes.values():
        n *= len(v)
    return n


def test_default_root_is_per_ablation_and_experiment():
    from vipo.sweep import ROOT, default_root

    assert default_root("psm_k") == ROOT / "results/sweeps/psm_k/toy_redness"
    assert default_root("psm_k", ["experiment=toy_redness_grpo"]) == ROOT / "results/sweeps/psm_k/toy_redness_grpo"


def test_axes_expand_to_the_product():
    cells = expand_cells({"axes": {"psm.k": [1, 3], "psm.blur_sigma": [0.0, 1.0]}, "base": ["train.lr=1e-5"]}, [7])
    assert [c.name for c in cells] == ["k-1_blur_sigma-0.0", "k-1_blur_sigma-1.0", "k-3_blur_sigma-0.0",
                                       "k-3_blur_sigma-1.0"]
    assert cells[1].overrides == ["train.lr=1e-5", "psm.k=1", "psm.blur_sigma=1.0"] and cells[1].seed == 7


def test_unknown_ablation_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown ablation 'psm_kk'; did you mean 'psm_k'\\? known: .*psm_k"):
        load_ablation("psm_kk")


def test_bad_cell_is_caught_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'.*cell"):
        plan("psm_k", [0], ["+train.lrr=3"], root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_grid_runs_skips_finished_and_resumes_started(tmp_path, capsys):
    root = tmp_path / "sweep"
    runner = [sys.executable, str(HERE / "run_tiny.py")]
    os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
    extra = tiny_extra(tmp_path)
    cells = run_sweep("psm_target", [0, 1], extra, workers=2, root=root, runner=runner)
    assert all((c.run_dir / "summary.json").exists() for c in cells)
    # a crash after a checkpoint: the summary is gone, the checkpoint stays -> resumed, not restarted
    victim = cells[0].run_dir
    (victim / "summary.json").unlink()
    capsys.readouterr()
    run_sweep("psm_target", [0, 1], extra, workers=2, root=root, runner=runner)
    out = capsys.readouterr().out
    assert "4 runs, 3 done, 1 to run" in out
    assert "resuming" in (victim / "train.log").read_text()
    df = collect(root, cache=True)
    assert len(df) == 4 and (root / "index.parquet").exists()
    cells = table("psm_target", root=root, metrics=["eval/reward"]).set_index("cell")
    assert list(cells.index) == ["map_x_advantage", "map_x_reward"]
    for cell in cells.index:
        vals = pd.to_numeric(df[df["tags.cell"] == cell]["eval/reward"])
        assert cells.loc[cell, "mean"] == pytest.approx(vals.mean())
        assert cells.loc[cell, "n"] == 2
    assert "| map_x_reward | " in markdown(cells_view(cells.reset_index(), "psm_target"))


# ablations whose base picks another experiment (e.g. psm_map_t2i: FLUX) need its checkpoints; they compose above
TOY_ABLATIONS = [n for n in ABLATIONS if not any(o.startswith("experiment=") for o in load_ablation(n).get("base") or [])]


@pytest.mark.parametrize("name", TOY_ABLATIONS)
def test_one_tiny_cell_of_every_ablation_on_the_toy_world(name, tmp_path):
    """Two iterations of one cell on the toy generator with its shipped weights."""
    from vipo.train import run

    cells = expand_cells(load_ablation(name), [0])
    cell = next(c for c in cells if not any(b in " ".join(c.overrides) for b in ("dinov2", "resnet", "sam")))
    extra = ["logger=none", "train.iterations=2", "train.prompts_per_iter=2", "train.group_size=4",
             "sde.num_steps=4", "eval.every=0", "eval.num_samples=8", "eval.num_steps=4", "eval.grid_samples=0"]
    cfg, raw = load(cell_overrides(cell, name, tmp_path, extra))
    summary = run(cfg, raw)
    assert summary["status"] == "complete" and summary["tags"]["cell"] == cell.name
    assert 0.0 <= summary["eval/shape_acc"] <= 1.0


def test_rerun_with_other_overrides_is_refused(tmp_path):
    root = tmp_path / "sweep"
    cells = plan("psm_target", [0], tiny_extra(tmp_path), root=root)
    from vipo.train import run

    cfg, raw = load(cell_overrides(cells[0], "psm_target", root, tiny_extra(tmp_path)))
    run(cfg, raw)
    plan("psm_target", [0], tiny_extra(tmp_path), root=root)  # same overrides: fine
    with pytest.raises(ConfigError, match=r"already holds a run with a different config \(train.iterations: 2 -> 3"):
        plan("psm_target", [0], [*tiny_extra(tmp_path), "train.iterations=3"], root=root)
