"""`make tables` / `python -m analysis.tables` and the notebooks, on a committed fixture of real run files
(tests/fixtures/results_tiny: 2-iteration toy-world sweeps made by tests/fixtures/make_results_tiny.py)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from analysis.make_tables import build
from analysis.render import markdown
from analysis.report import ablation_report
from vipo.results import collect
from vipo.sweep import load_ablation

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "results_tiny"
STUDY_FIXTURE = REPO / "tests" / "fixtures" / "study_tiny"  # tests/fixtures/make_study_tiny.py
NOTEBOOKS = sorted((REPO / "analysis" / "notebooks").glob("*.ipynb"))


def test_make_tables_on_empty_results_says_so(tmp_path):
    (tmp_path / "results").mkdir()
    # -o: treat the venv stamp as up to date, so make runs this interpreter instead of building .venv
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "tables", f"PYTHON={sys.executable}",
                           f"RESULTS={tmp_path / 'results'}", f"TABLES_OUT={tmp_path / 'out'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"no finished runs (summary.json) under {tmp_path / 'results'}; no tables to build" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_build_writes_every_table_and_names_what_is_missing(tmp_path, capsys):
    reports = build(FIXTURE, tmp_path, levels=None, figures=True)
    out = capsys.readouterr().out
    names = sorted(r.name for r in reports)
    assert names == ["baseline-toy_redness", "psm_k-toy_redness", "psm_target-toy_redness"]
    for stem in ("baseline-toy_redness_cells", "baseline-toy_redness_paired", "psm_k-toy_redness_cells"):
        for ext in ("md", "tex", "csv"):
            assert (tmp_path / f"{stem}.{ext}").stat().st_size > 100, (stem, ext)
    assert (tmp_path / "baseline-toy_redness_curves.png").stat().st_size > 1000
    assert "no runs for ablation(s): logprob_reduction, main, oracle_map, psm_aggregation, psm_backbone" in out
    assert "paper Table 1 (flux_hps): no runs of flux_hps; not built" in out
    # the files hold what the builders give (the same call a notebook makes)
    rep = ablation_report(collect(FIXTURE, cache=False), load_ablation("baseline"), "toy_redness")
    assert (tmp_path / "baseline-toy_redness_cells.md").read_text() == markdown(rep.tables[0])
    assert rep.tables[0].rows == ["grpo", "vipo"]


def test_runs_of_no_known_ablation_are_tabled_per_folder(tmp_path, capsys):
    for folder, name, tags in (("runs", "a", {}), ("runs", "b", {}), ("study", "c", {"ablation": "mine", "cell": "x"})):
        d = tmp_path / "results" / folder / name
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"experiment": "toy_redness", "seed": 0, "tags": tags,
                                                    "eval/reward": 0.5, "eval/shape_acc": 0.25}))
    reports = build(tmp_path / "results", tmp_path / "out", formats=["md"], figures=False)
    assert [r.name for r in reports] == ["runs", "study"]
    assert "| a | 0.500 | 0.250 | 1 |" in (tmp_path / "out" / "runs_cells.md").read_text()
    out = capsys.readouterr().out
    assert "no runs for ablation(s): baseline, logprob_reduction" in out
    assert "missing in runs: matched reward: no run has eval/reward evaluation rows in metrics.jsonl" in out


def test_a_study_is_tabled_per_reward_from_its_index(tmp_path, capsys):
    """A run shared by two ablations (vipo.study) appears in both; rewards are never mixed."""
    study = tmp_path / "results" / "toy_study"
    index = []
    for reward, shape in (("redness", 0.5), ("brightness", 0.9)):
        for cell, seed, bump in (("grpo", 0, 0.0), ("grpo", 1, 0.1), ("vipo", 0, 0.2), ("vipo", 1, 0.4)):
            d = study / reward / f"baseline.{cell}-s{seed}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps({
                "experiment": "toy_redness", "seed": seed, "eval/shape_acc": shape + bump,
                "tags": {"study": "toy", "reward": reward, "ablation": "baseline", "cell": cell}}))
            index.append({"reward": reward, "ablation": "baseline", "cell": cell, "seed": seed,
                          "run": f"{reward}/{d.name}"})
            if cell == "vipo" and reward == "redness":  # the default ViPO cell also serves psm_target
                index.append({"reward": reward, "ablation": "psm_target", "cell": "map_x_advantage", "seed": seed,
                              "run": f"{reward}/{d.name}"})
    (study / "index.json").write_text(json.dumps(index))
    reports = build(tmp_path / "results", tmp_path / "out", formats=["md"], figures=False)
    assert [r.name for r in reports] == ["baseline-toy_study-redness", "psm_target-toy_study-redness",
                                         "baseline-toy_study-brightness"]
    md = (tmp_path / "out" / "baseline-toy_study-redness_paired.md").read_text()
    # vipo - grpo per seed: (0.7 - 0.5, 0.9 - 0.6) = (0.2, 0.3): mean 0.25, s = 0.0707, t(0.975, 1) = 12.706
    assert "| vipo | — | +0.250 ± 0.635 (2/2 same sign) | — | — |" in md  # only shape accuracy was recorded
    target = (tmp_path / "out" / "psm_target-toy_study-redness_cells.md").read_text()
    assert "| map_x_advantage | — (n=0 of 2 runs) | 0.800 ± 1.271 | " in target  # (0.7 + 0.9) / 2
    assert "| map_x_reward |" not in target  # a cell the study does not run for psm_target gets no row
    out = capsys.readouterr().out
    assert "no runs for ablation(s): logprob_reduction" in out and "baseline," not in out.split("no runs for")[1]


def test_cli_rejects_unknown_format():
    proc = subprocess.run([sys.executable, "-m", "analysis.tables", str(FIXTURE), "--format", "md,docx"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown format(s) ['docx']; known: md, tex, csv" in proc.stderr


def test_committed_notebooks_have_no_outputs():
    assert [p.stem for p in NOTEBOOKS] == ["main_image_table", "main_video_table", "psm_ablations", "toy_study"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not stale, f"{path.name}: cells {stale} carry outputs; strip them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_on_the_fixture(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("VIPO_RESULTS", str(FIXTURE))
    monkeypatch.setenv("VIPO_STUDY", str(STUDY_FIXTURE))
    monkeypatch.setenv("VIPO_EXPERIMENT", "toy_redness")
    monkeypatch.setenv("VIPO_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "finished runs under" in text and "Traceback" not in text
    if path.stem != "toy_study":
        assert "Paper Table" in text
    if path.stem in ("main_image_table", "main_video_table"):
        assert "GRPO (scalar advantage) vs ViPO (PSM map x advantage) [toy_redness]" in text
        assert "difference from grpo, paired by seed" in text
    if path.stem == "psm_ablations":
        assert "K = 3 is the best balance" in text and "Missing in psm_sigma-toy_redness" in text
    if path.stem == "toy_study":  # the study fixture: baseline (2 seeds) and psm_target sharing baseline's ViPO run
        assert "5 finished runs under" in text and "psm_target: 2 runs" in text
        assert "GRPO (scalar advantage) vs ViPO (PSM map x advantage) [study_tiny/redness]" in text
        assert "difference from grpo, paired by seed" in text
        assert len(list(tmp_path.glob("*baseline*_curves.png"))) == 1 and "image/png" in str(nb.cells[-1].outputs)


def test_tables_are_written_one_page_per_study_sweep_and_folder_with_an_index(tmp_path, capsys):
    import shutil

    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root / "sweeps")
    loose = root / "demo" / "grpo"
    loose.mkdir(parents=True)
    (loose / "summary.json").write_text(json.dumps({"experiment": "toy_demo", "seed": 0, "tags": {},
                                                    "eval/reward": 0.5}))
    build(root, tmp_path / "out", formats=["md"], figures=False)
    out = tmp_path / "out"
    index = (out / "tables.md").read_text().splitlines()
    assert index[0] == "# Tables of the runs under `results/`"
    rows = [line for line in index if line.startswith("| [")]
    stems = [line.split("](")[1].split(".md)")[0] for line in rows]
    assert stems == ["sweep-baseline-toy_redness", "sweep-psm_k-toy_redness", "sweep-psm_target-toy_redness",
                     "runs-demo"]
    total = 0
    for stem, row in zip(stems, rows):
        page = (out / f"{stem}.md").read_text()
        n = page.count("\n**") + page.startswith("**")
        assert page.startswith("# ") and "\n## " in page and row.endswith(f"| {n} |")
        total += n
    assert f"wrote {total} tables (md) on 4 page(s)" in capsys.readouterr().out
    assert "| grpo | 0.500 |" in (out / "runs-demo.md").read_text()


def test_claim_rows_are_counted_as_claims_md_lists_them():
    import pandas as pd

    from analysis.make_tables import claim_counts

    frame = pd.DataFrame({"reference": ["a", "b", "all", "a"], "verdict": ["holds", "undecided", "undecided", "fails"]})
    assert claim_counts(frame) == ("4 claim rows: 3 comparisons (fails 1, holds 1, undecided 1) "
                                   "+ 1 combined over references (undecided 1)")
