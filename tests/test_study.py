"""Studies: the study files compose, shared cells run once, a tiny study runs, resumes and renders its tables."""

import json
import sys
from pathlib import Path

import pytest

from vipo.config import CONFIG_DIR, ConfigError
from analysis.report import study_tables
from vipo.study import load_study, plan_study, read_index, run_study, study_frame

STUDIES = sorted(p.stem for p in (CONFIG_DIR / "study").glob("*.yaml"))
TINY_TOY = ["train.iterations=2", "train.prompts_per_iter=2", "train.group_size=4", "train.micro_batch=8",
            "sde.num_steps=4", "eval.every=0", "eval.num_samples=8", "eval.num_steps=4", "eval.grid_samples=0"]


@pytest.mark.parametrize("name", STUDIES)
def test_study_file_composes_and_shares_identical_cells(name, tmp_path):
    spec = load_study(name)
    text = (CONFIG_DIR / "study" / f"{name}.yaml").read_text().splitlines()
    assert text[0].startswith("# Study:") and f"python sweep.py study={name}" in text[1]
    runs, index = plan_study(name, root=tmp_path)
    expected = 0
    for part in spec["parts"]:
        n_cells = len(part.get("cells") or [])
        if not n_cells:
            from vipo.sweep import expand_cells, load_ablation

            n_cells = len(expand_cells(load_ablation(part["ablation"]), [0]))
        seeds = part["seeds"] if isinstance(part["seeds"], int) else len(part["seeds"])
        expected += n_cells * seeds * len(part.get("rewards") or spec["rewards"])
    assert len(index) == expected
    assert len({r.cell.run_dir for r in runs}) == len(runs) <= len(index)  # a shared run is run once
    assert {e["run"] for e in index} == {f"{r.reward}/{r.cell.run_dir.name}" for r in runs}
    # a shared run has one resolved config whatever ablation file names it
    for run in runs:
        if len(run.members) > 1:
            assert len({e["seed"] for e in index if e["run"] == f"{run.reward}/{run.cell.run_dir.name}"}) == 1
    assert not any(tmp_path.iterdir())  # planning writes nothing


def _tiny_study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_study.yaml"
    path.write_text(
        "name: tiny\n"
        f"world: {json.dumps(TINY_TOY)}\n"
        "rewards: {redness: [reward=redness]}\n"
        "parts:\n"
        "  - {ablation: baseline, seeds: 1}\n"
        "  - {ablation: psm_target, seeds: 1, cells: [map_x_advantage]}\n")
    return path


def test_a_tiny_study_runs_resumes_and_renders_its_tables(tmp_path, capsys):
    spec, root = _tiny_study(tmp_path), tmp_path / "out"
    with pytest.raises(ConfigError, match="has no part\\(s\\) \\['psm_k'\\]"):
        run_study(spec, root=root, only_parts=["psm_k"])
    # one part first: psm_target needs only the vipo run it shares with baseline
    first = run_study(spec, workers=2, root=root, only_parts=["psm_target"])
    assert [r.cell.run_dir.name for r in first] == ["baseline.vipo-s0"]
    assert len(read_index(root)) == 3  # the index lists the whole study all the same
    capsys.readouterr()
    runs = run_study(spec, workers=2, root=root)
    assert "2 runs, 1 done, 1 to run" in capsys.readouterr().out
    assert [r.cell.run_dir.name for r in runs] == ["baseline.grpo-s0", "baseline.vipo-s0"]
    # psm_target's map_x_advantage cell is the default ViPO config: it reuses baseline's vipo run
    index = read_index(root)
    assert {(e["ablation"], e["cell"]): e["run"] for e in index} == {
        ("baseline", "grpo"): "redness/baseline.grpo-s0", ("baseline", "vipo"): "redness/baseline.vipo-s0",
        ("psm_target", "map_x_advantage"): "redness/baseline.vipo-s0"}
    for r in runs:
        summary = json.loads((r.cell.run_dir / "summary.json").read_text())
        assert summary["status"] == "complete" and summary["tags"]["study"] == "tiny"
    df = study_frame(root, "redness", "psm_target")
    assert list(df["tags.cell"]) == ["map_x_advantage"]
    vipo = study_frame(root, "redness", "baseline").set_index("tags.cell")
    assert df["eval/reward"].iloc[0] == vipo.loc["vipo", "eval/reward"]
    capsys.readouterr()
    run_study(spec, workers=2, root=root)  # finished: nothing runs again
    assert "2 runs, 2 done, 0 to run" in capsys.readouterr().out
    print(study_tables(spec, root))
    out = capsys.readouterr().out
    assert "GRPO (scalar advantage) vs ViPO" in out and "grpo" in out and "map_x_advantage" in out
    assert "| map_x_reward |" not in out  # psm_target's other cell is not part of this study: no empty row


def test_bad_study_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nrewards: {redness: [reward=redness]}\nparts: [{ablation: baseline, seed: 2}]\n")
    with pytest.raises(ConfigError, match="unknown \\['seed'\\]"):
        load_study(bad)
    bad.write_text("name: b\nrewards: {redness: [reward=redness]}\nparts: [{ablation: baseline, rewards: [red]}]\n")
    with pytest.raises(ConfigError, match="names reward 'red'"):
        load_study(bad)
    bad.write_text("name: b\nrewards: {redness: [reward=redness]}\nparts: [{ablation: baseline, cells: [vipoo]}]\n")
    with pytest.raises(ConfigError, match="has no cell\\(s\\) \\['vipoo'\\]"):
        plan_study(bad, root=tmp_path)
    bad.write_text("name: b\nrewards: {redness: [reward=redness]}\nparts: [{ablation: baseline}]\nclaims: [{claim: x, "
                   "ablation: baseline, cell: vipo, reference: grpo, metric: eval/shape_acc, at: end}]\n")
    from analysis.claims import claim_table

    with pytest.raises(ValueError, match="'at' must be one of \\('matched', 'final'\\), got 'end'"):
        claim_table(bad, tmp_path)
    with pytest.raises(ConfigError, match="unknown study 'toyy'"):
        load_study("toyy")


def test_sweep_cli_runs_a_study(tmp_path, monkeypatch, capsys):
    import sweep as sweep_cli  # the top-level command

    monkeypatch.setattr(sys, "argv", ["sweep.py"])
    with pytest.raises(ConfigError):
        load_study("nope")
    assert sweep_cli.main(["study=nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["toy_study", "toy_confirm"])
def test_committed_study_tables_are_what_make_tables_rebuilds(name, tmp_path):
    """results/<study>/tables/ holds exactly what `python -m analysis.tables results/<study>` (and the toy_study
    notebook, which calls the same build) makes from the committed run files; for the confirmatory study that
    includes its verdicts against the frozen plan."""
    from analysis.make_tables import build

    study = Path(__file__).resolve().parents[1] / "results" / name
    committed = {p.name: p.read_text() for p in (study / "tables").iterdir() if p.suffix in (".md", ".tex", ".csv")}
    assert committed, f"results/{name}/tables/ has no tables"
    build(study, tmp_path, figures=False)
    rebuilt = {p.name: p.read_text() for p in tmp_path.iterdir() if p.suffix in (".md", ".tex", ".csv")}
    assert sorted(rebuilt) == sorted(committed)
    for fname, text in committed.items():
        assert rebuilt[fname] == text, (f"{fname} differs from its rebuild: run python -m analysis.tables "
                                        f"results/{name} --out results/{name}/tables")


def test_confirmatory_numbers_quoted_in_the_readmes_are_the_committed_ones():
    """README.md and results/toy_confirm/README.md quote every primary verdict; each quote must match
    results/toy_confirm/tables/confirmatory.csv (rebuilt from the run files by the test above)."""
    import pandas as pd

    from analysis.confirm import _f, _p

    root = Path(__file__).resolve().parents[1]
    frame = pd.read_csv(root / "results" / "toy_confirm" / "tables" / "confirmatory.csv")
    top, study = (root / "README.md").read_text(), (root / "results" / "toy_confirm" / "README.md").read_text()
    assert len(frame) == 4
    for r in frame.itertuples():
        eff = f"{_f(r.effect)} [{_f(r.lo)}, {_f(r.hi)}]"
        adj = f"[{_f(r.lo_adj)}, {_f(r.hi_adj)}] ({100 * (1 - r.level_adj):.2f}%)"
        assert f"| {r.cell} vs {r.reference} | {eff} | {adj} | {_p(r.p_adj)} | **{r.verdict}** |" in top, r.claim
        assert f"| {eff} | {_p(r.p)} | {_p(r.p_adj)} | {adj} |" in study, r.claim
        assert f"{r.claim} | {eff}" in study, r.claim
