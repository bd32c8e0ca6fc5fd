"""The paper's tables as data (analysis/paper/) and the side-by-side view of ours."""

import json

import pytest
import yaml

from analysis.render import markdown
from analysis.report import paper_report
from analysis.tables import load_paper, paper_side_by_side, paper_tables
from vipo.results import collect
from vipo.sweep import cell_names, load_ablation


def test_vbench_total_follows_from_quality_and_semantic():
    t2 = load_paper("table2_wan_videoalign")
    names = [c["name"] for c in t2["columns"]]
    q, s, tot = (names.index(n) for n in ("VBench Quality", "VBench Semantic", "VBench Total"))
    for row in t2["rows"]:
        v = row["values"]
        # each value is rounded to 2 decimals (± 0.005): the total from rounded inputs is off by at most
        # (4 x 0.005 + 0.005) / 5 = 0.005, the printed total by another 0.005; e.g. (4 x 83.36 + 71.20) / 5 = 80.928
        assert (4 * v[q] + v[s]) / 5 == pytest.approx(v[tot], abs=0.01), row["name"]
        assert (4 * v[s] + v[q]) / 5 != pytest.approx(v[tot], abs=1.0)  # the other order is off by ~7 points


def test_tables_hold_the_printed_numbers():
    t1, t3 = load_paper("table1_flux_hps"), load_paper("table3_flux_ablations")
    assert dict((r["name"], r["values"]) for r in t1["rows"])["ViPO (ResNet)"] == [0.3251, 22.8492, 1.1625]
    rows3 = dict((r["name"], r["values"]) for r in t3["rows"])
    assert rows3["map x advantage (default)"] == rows3["variance-weighted (default)"] == [0.3321, 22.8305, 1.1883]
    assert rows3["all-ones map"] == [0.3043, 22.2043, 0.9520]
    assert {n["ablation"] for n in t3["notes"]} == {"psm_k", "psm_sigma"}  # prose only: no invented cells
    assert [t["table"] for t in paper_tables("flux_hps")] == [1, 3] and [t["table"] for t in paper_tables("wan_videoalign")] == [2]


def test_every_row_points_at_a_real_ablation_cell():
    for paper in paper_tables():
        for row in paper["rows"]:
            src = row["ours"]
            assert src["cell"] in cell_names(load_ablation(src["ablation"])), (paper["table"], row["name"])
        for note in paper.get("notes", []):
            load_ablation(note["ablation"])


def _run(root, ablation, cell, seed, final, initial):
    d = root / ablation / f"{cell}-s{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"experiment": "flux_hps"}))
    (d / "summary.json").write_text(json.dumps({"experiment": "flux_hps", "seed": seed,
                                                "tags": {"ablation": ablation, "cell": cell}, **final}))
    (d / "metrics.jsonl").write_text(json.dumps({"iteration": -1, **initial}) + "\n")


def test_side_by_side_with_ours(tmp_path):
    base = {"eval/hps": 0.30, "eval/pickscore": 22.0, "eval/imagereward": 1.0}
    _run(tmp_path, "baseline", "grpo", 0, {"eval/hps": 0.31, "eval/pickscore": 22.5}, base)
    _run(tmp_path, "baseline", "grpo", 1, {"eval/hps": 0.33, "eval/pickscore": 22.7}, base)
    _run(tmp_path, "psm_backbone", "dinov2", 0, {"eval/hps": 0.34}, base)
    runs = collect(tmp_path, cache=False)
    t1 = load_paper("table1_flux_hps")
    f = paper_side_by_side(t1, runs).set_index(["row", "column", "source"])
    assert f.loc[("DanceGRPO", "HPSv2.1", "paper"), "mean"] == 0.3203
    assert f.loc[("DanceGRPO", "HPSv2.1", "ours"), "mean"] == pytest.approx(0.32)  # (0.31 + 0.33) / 2
    assert f.loc[("DanceGRPO", "HPSv2.1", "ours"), "n"] == 2
    assert f.loc[("Original", "PickScore", "ours"), "mean"] == pytest.approx(22.0)  # the evaluation before training
    assert f.loc[("ViPO (SAM)", "HPSv2.1", "ours"), "n"] == 0
    md = markdown(paper_report(t1, runs))
    assert "| ViPO (DINOv2) | **0.3321** | **0.3400** |" in md  # best paper value and best of ours, each column
    assert "| ViPO (SAM) | 0.3219 | — (no run) |" in md
    assert "| DanceGRPO | 0.3203 | 0.3200 ± 0.1271 |" in md  # 0.32 ± 12.706 x 0.01414 / sqrt(2)


def test_scale_turns_vbench_fractions_into_percent(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"experiment": "wan_videoalign", "seed": 0, "eval/vbench_total": 0.8092,
                                                "tags": {"ablation": "baseline", "cell": "vipo"}}))
    f = paper_side_by_side(load_paper("table2_wan_videoalign"), collect(tmp_path, cache=False))
    ours = f[(f.row == "ViPO") & (f.column == "VBench Total") & (f.source == "ours")].iloc[0]
    assert ours["mean"] == pytest.approx(80.92) and ours["n"] == 1


def test_unknown_paper_table_is_named():
    with pytest.raises(FileNotFoundError, match="no paper table 'table9'; known: table1_flux_hps"):
        load_paper("table9")
