"""Table builders on hand-made run folders: every number below is worked out by hand in the comments."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis.render import latex, markdown
from analysis.report import ablation_report
from analysis.stats import bootstrap_interval, interpolate_at, t_interval, verdict, welch_difference
from analysis.tables import (MissingData, cell_table, matched_reward_table, matched_values, paired_table,
                             pairwise_levels, pairwise_matched_table, with_verdicts)
from vipo.config import ConfigError
from vipo.results import collect

# Student t 97.5% quantiles in closed form: 2 degrees of freedom, F(t) = 1/2 + t / (2 sqrt(2 + t^2)) = 0.975
# gives t = sqrt(2 * 0.95^2 / (1 - 0.95^2)) = 4.3027; 1 degree of freedom (Cauchy): t = tan(0.475 pi) = 12.7062
T2 = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))
T1 = math.tan(0.475 * math.pi)
SPEC = {"name": "baseline", "table": "GRPO vs ViPO", "reference": "grpo",
        "cells": {"grpo": [], "vipo": [], "ones": [], "random": []},
        "metrics": ["eval/reward", "eval/shape_acc", "eval/colour_acc", "eval/fd"]}


def write_run(root, cell, seed, final: dict, curve: list[tuple[float, float]] = ()):
    """A run folder as vipo.train writes it: config.yaml, summary.json (``final`` eval values) and metrics.jsonl
    with one evaluation row per (reward, shape_acc) point of ``curve``, the first one before training."""
    d = root / f"{cell}-s{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"experiment": "toy_redness", "train": {"seed": seed}}))
    summary = {"run_id": d.name, "experiment": "toy_redness", "seed": seed, "status": "complete",
               "tags": {"ablation": "baseline", "cell": cell}, **final}
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [{"iteration": -1 + 10 * i, "eval/reward": r, "eval/shape_acc": s, **({"reward_mean": r} if i else {})}
            for i, (r, s) in enumerate(curve)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for s, (rew, shape, fd) in enumerate([(0.9, 0.5, 10.0), (0.8, 0.6, 20.0), (1.0, 0.7, 30.0)]):
        # grpo curve: reward 0 -> 0.2 -> 0.6, shape 1.0 -> 0.8 - 0.1 s -> 0.4
        write_run(root, "grpo", s, {"eval/reward": rew, "eval/shape_acc": shape, "eval/fd": fd},
                  [(0.0, 1.0), (0.2, 0.8 - 0.1 * s), (0.6, 0.4)])
    for s, (rew, shape, fd) in enumerate([(0.3, 0.8, 5.0), (0.4, 0.7, 15.0), (0.5, 0.9, "nan")]):
        # vipo curve: reward 0 -> 0.1 -> 0.3 (seed 2: 0.5), shape 1.0 -> 0.9 -> 0.7; seed 2's FD is NaN
        write_run(root, "vipo", s, {"eval/reward": rew, "eval/shape_acc": shape, "eval/fd": fd},
                  [(0.0, 1.0), (0.1, 0.9), (0.5 if s == 2 else 0.3, 0.7)])
    write_run(root, "ones", 0, {"eval/reward": 0.2, "eval/shape_acc": 0.55})  # one seed, no FD at all
    for s, shape in ((5, 0.4), (6, 0.6)):  # seeds the reference does not have: unpaired
        write_run(root, "random", s, {"eval/reward": 0.1, "eval/shape_acc": shape, "eval/fd": 40.0})
    return collect(root, cache=False)


def row(frame, cell, metric, **kw):
    sel = frame[(frame["cell"] == cell) & (frame["metric"] == metric)]
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (cell, metric, kw)
    return sel.iloc[0]


def test_t_quantile_is_the_tabulated_one():
    assert stats.t.ppf(0.975, 2) == pytest.approx(T2, rel=1e-9) and T2 == pytest.approx(4.3027, abs=1e-4)
    assert stats.t.ppf(0.975, 1) == pytest.approx(T1, rel=1e-9) and T1 == pytest.approx(12.7062, abs=1e-4)


def test_cell_means_and_t_intervals(runs):
    t = cell_table(runs, SPEC["metrics"], list(SPEC["cells"]))
    assert list(dict.fromkeys(t["cell"])) == ["grpo", "vipo", "ones", "random"]  # the ablation file's order
    g = row(t, "grpo", "eval/shape_acc")  # 0.5, 0.6, 0.7: mean 0.6, s = 0.1
    half = T2 * 0.1 / math.sqrt(3)  # 0.24841
    assert (g["mean"], g["n"], g["runs"]) == (pytest.approx(0.6), 3, 3)
    assert g["lo"] == pytest.approx(0.6 - half) and g["hi"] == pytest.approx(0.6 + half)
    fd = row(t, "vipo", "eval/fd")  # 5 and 15 (seed 2 NaN): mean 10, s = 7.0711, t(0.975, 1) = 12.7062
    assert (fd["mean"], fd["n"], fd["runs"]) == (pytest.approx(10.0), 2, 3)
    assert fd["hi"] - fd["mean"] == pytest.approx(T1 * math.sqrt(50) / math.sqrt(2))
    one = row(t, "ones", "eval/shape_acc")  # one seed: a mean and no interval
    assert one["mean"] == pytest.approx(0.55) and one["n"] == 1 and math.isnan(one["lo"]) and math.isnan(one["hi"])
    none = row(t, "ones", "eval/fd")  # the key is absent from the summary
    assert none["n"] == 0 and none["runs"] == 1 and math.isnan(none["mean"])
    assert row(t, "grpo", "eval/colour_acc")["n"] == 0  # no run has it


def test_paired_differences_by_seed(runs):
    d = paired_table(runs, ["eval/shape_acc", "eval/fd"], "grpo", list(SPEC["cells"]))
    assert "grpo" not in set(d["cell"])
    v = row(d, "vipo", "eval/shape_acc")  # 0.8-0.5, 0.7-0.6, 0.9-0.7 = 0.3, 0.1, 0.2: mean 0.2, s = 0.1
    assert v["paired"] and v["n"] == 3 and v["n_sign"] == 3 and v["mean"] == pytest.approx(0.2)
    assert v["hi"] - v["mean"] == pytest.approx(T2 * 0.1 / math.sqrt(3))
    f = row(d, "vipo", "eval/fd")  # seeds 0, 1 only (seed 2 NaN): 5-10, 15-20 = -5, -5
    assert f["n"] == 2 and f["n_sign"] == 2 and f["mean"] == pytest.approx(-5.0) and f["lo"] == pytest.approx(-5.0)
    o = row(d, "ones", "eval/shape_acc")  # seed 0: 0.55 - 0.5
    assert o["n"] == 1 and o["mean"] == pytest.approx(0.05) and math.isnan(o["lo"])
    r = row(d, "random", "eval/shape_acc")  # seeds 5, 6 vs 0, 1, 2: no pair -> Welch, 0.5 - 0.6
    assert not r["paired"] and r["n_sign"] == -1 and r["mean"] == pytest.approx(-0.1)
    va, vb = 0.02 / 2, 0.01 / 3  # sample variances 0.02 and 0.01 over the counts
    dof = (va + vb) ** 2 / (va ** 2 / 1 + vb ** 2 / 2)  # 1.6842
    assert dof == pytest.approx(1.6842, abs=1e-4)
    assert r["hi"] - r["mean"] == pytest.approx(stats.t.ppf(0.975, dof) * math.sqrt(va + vb))
    v = with_verdicts(d).set_index(["cell", "metric"])["verdict"]
    assert v[("vipo", "eval/shape_acc")] == "undecided"  # 0.2 ± 0.248 includes 0
    assert v[("vipo", "eval/fd")] == "holds"  # -5 on both seeds: lower FD is the expected side
    assert v[("ones", "eval/shape_acc")] == "undecided"  # one seed: no interval
    assert with_verdicts(d, {"eval/fd": 1}).set_index(["cell", "metric"])["verdict"][("vipo", "eval/fd")] == "fails"
    with pytest.raises(MissingData, match="reference cell 'semantic' has no finished run"):
        paired_table(runs, ["eval/shape_acc"], "semantic")


def test_matched_reward_interpolates_and_counts_unreached(runs):
    sub = runs[runs["tags.cell"].isin(["grpo", "vipo"])]
    v = matched_values(sub, [0.1, 0.4, 0.7], ["eval/shape_acc"])
    g1 = v[(v["tags.cell"] == "grpo") & (v["seed"] == 1)].set_index("level")["eval/shape_acc"]
    # grpo seed 1: (0, 1.0) -> (0.2, 0.7) -> (0.6, 0.4); at 0.1: 1.0 + 0.5 (0.7 - 1.0) = 0.85;
    # at 0.4: 0.7 + 0.5 (0.4 - 0.7) = 0.55; 0.7 is never reached
    assert g1[0.1] == pytest.approx(0.85) and g1[0.4] == pytest.approx(0.55) and math.isnan(g1[0.7])
    t = matched_reward_table(sub, [0.1, 0.4, 0.7], ["eval/shape_acc"], cells=["grpo", "vipo"])
    g = row(t, "grpo", "eval/shape_acc", level=0.1)  # 0.9, 0.85, 0.8: mean 0.85, s = 0.05
    assert g["mean"] == pytest.approx(0.85) and g["hi"] - g["mean"] == pytest.approx(T2 * 0.05 / math.sqrt(3))
    assert row(t, "grpo", "eval/shape_acc", level=0.4)["mean"] == pytest.approx(0.55)
    assert row(t, "vipo", "eval/shape_acc", level=0.1)["mean"] == pytest.approx(0.9)  # an evaluation point
    v4 = row(t, "vipo", "eval/shape_acc", level=0.4)  # only seed 2 gets there: 0.9 + (0.3 / 0.4)(0.7 - 0.9)
    assert (v4["reached"], v4["runs"], v4["n"]) == (1, 3, 1) and v4["mean"] == pytest.approx(0.75)
    g7 = row(t, "grpo", "eval/shape_acc", level=0.7)
    assert (g7["reached"], g7["n"]) == (0, 0) and math.isnan(g7["mean"])


def test_pairwise_levels_and_mean_over_levels(runs):
    # grpo tops 0.6 (median 0.6), vipo tops 0.3, 0.3, 0.5 (median 0.3), every start 0: levels 3/4 evenly in (0, 0.3)
    # at 2 significant digits: 0.075, 0.15, 0.225 (stored 0.22499... -> 0.22); random and ones have no curve
    assert pairwise_levels(runs, "vipo", "grpo") == [0.075, 0.15, 0.22]
    t = pairwise_matched_table(runs, ["eval/shape_acc"], "grpo")
    assert set(t["cell"]) == {"vipo"}  # cells without an evaluation curve share no range with grpo: no rows
    # grpo seed s on (0, 1) -> (0.2, 0.8 - 0.1 s) -> (0.6, 0.4); vipo seeds 0, 1 on (0, 1) -> (0.1, 0.9) -> (0.3, 0.7)
    # and seed 2 on (0, 1) -> (0.1, 0.9) -> (0.5, 0.7). Shape at the three levels:
    #   grpo s0 0.925 0.85 0.78 | s1 0.8875 0.775 0.685 | s2 0.85 0.7 0.59
    #   vipo s0 0.925 0.85 0.78 | s1 0.925  0.85  0.78  | s2 0.925 0.875 0.84
    # vipo - grpo: s0 0 0 0 | s1 0.0375 0.075 0.095 | s2 0.075 0.175 0.25
    diffs = {"1": [0, 0.0375, 0.075], "2": [0, 0.075, 0.175], "3": [0, 0.095, 0.25]}
    for step, d in diffs.items():
        r = row(t, "vipo", "eval/shape_acc", step=step)
        sd = stats.tstd(d)
        assert r["mean"] == pytest.approx(sum(d) / 3) and r["n"] == 3 and r["n_sign"] == 2
        assert r["hi"] - r["mean"] == pytest.approx(T2 * sd / math.sqrt(3))
    per_seed = [0.0, (0.0375 + 0.075 + 0.095) / 3, (0.075 + 0.175 + 0.25) / 3]  # mean over the levels, per seed
    m = row(t, "vipo", "eval/shape_acc", step="mean")
    assert m["mean"] == pytest.approx(sum(per_seed) / 3)  # 0.0786
    assert m["lo"] == pytest.approx(m["mean"] - T2 * stats.tstd(per_seed) / math.sqrt(3))
    assert with_verdicts(t).set_index("step")["verdict"]["mean"] == "undecided"  # 0.079 ± 0.21 includes 0
    rep = ablation_report(runs, SPEC, "toy_redness")
    pw = next(x for x in rep.tables if x.name == "matched_pairwise")
    assert "reward 0.075; 2/3 same sign" in markdown(pw)  # each level entry names its reward level


def test_interpolation_edges():
    # first crossing (0 -> 0.2), not the later ones (0.2 -> 0.1, 0.1 -> 0.5): 1.0 + (0.15 / 0.2)(0.8 - 1.0) = 0.85
    assert interpolate_at([0.0, 0.2, 0.1, 0.5], [1.0, 0.8, 0.0, 0.0], 0.15) == pytest.approx(0.85)
    assert interpolate_at([0.0, 0.2], [1.0, 0.8], 0.2) == pytest.approx(0.8)  # the last point itself
    assert math.isnan(interpolate_at([0.3, 0.5], [1.0, 0.8], 0.1))  # below the curve: no extrapolation
    assert interpolate_at([0.0, float("nan"), 0.4], [1.0, 0.0, 0.6], 0.2) == pytest.approx(0.8)  # NaN point skipped


def test_report_renders_bold_best_by_direction(runs):
    rep = ablation_report(runs, SPEC, "toy_redness", levels=[0.1, 0.4])
    cells, paired, matched, matched_paired = rep.tables
    tex = latex(cells)
    lines = {ln.split(" & ")[0]: ln for ln in tex.splitlines() if " & " in ln}
    assert r"\textbf{0.900}" in lines["grpo"]  # reward: 0.9 > 0.4 > 0.2 > 0.1, higher is better
    assert r"\textbf{0.800}" in lines["vipo"]  # shape accuracy 0.8 is the highest
    assert r"\textbf{10.0}" in lines["vipo"]  # FD: lower is better, 10.0 < 20.0 < 40.0
    assert tex.count(r"\textbf") == 3 and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"0.600 $\pm$ 0.248" in lines["grpo"]  # 0.6 ± 4.303 x 0.1 / sqrt(3)
    assert "0.550 &" in lines["ones"] and r"0.550 $\pm$" not in lines["ones"]  # one seed: no "± 0"
    md = markdown(cells)
    assert "| vipo | 0.400 ± 0.248 | **0.800** ± 0.248 | — (n=0 of 3 runs) | **10.0** ± 63.5 (n=2 of 3 runs) | 3 |" in md
    assert "+0.200 ± 0.248 (3/3 same sign)" in markdown(paired)
    assert "(1 of 3 runs reach it)" in markdown(matched)
    # vipo - grpo at reward 0.1: 0.9 - (0.9, 0.85, 0.8) = 0, 0.05, 0.1: mean 0.05, s = 0.05, seed 0 has no sign;
    # at 0.4 only seed 2 of both reaches it: 0.75 - 0.5
    mp = markdown(matched_paired)
    # columns: shape and FD at 0.1, then at 0.4 (these curves have no FD)
    assert f"| vipo | +0.050 ± {T2 * 0.05 / math.sqrt(3):.3f} (2/3 same sign) | — | +0.250 (1/1 same sign) | — |" in mp
    assert "metric eval/colour_acc: no run has it" in rep.missing
    assert "cell semantic: no finished seed" not in rep.missing  # not a cell of this spec
    assert any(m.startswith("metric eval/fd: missing or NaN in 2 run(s)") for m in rep.missing)  # vipo s2, ones s0


def test_missing_cells_are_named(runs):
    spec = {**SPEC, "cells": {**SPEC["cells"], "semantic": []}}
    rep = ablation_report(runs, spec, "toy_redness", levels=[0.1])
    assert "cell semantic: no finished seed" in rep.missing
    assert "| semantic | — (no finished run) |" in markdown(rep.tables[0])


def test_bootstrap_and_verdict():
    b = bootstrap_interval([0.5, 0.6, 0.7], resamples=2000)
    assert b.mean == pytest.approx(0.6) and 0.5 <= b.lo < 0.6 < b.hi <= 0.7  # percentiles of resampled means
    assert t_interval([0.4]).n == 1 and math.isnan(t_interval([]).mean)
    assert verdict(0.05, 0.3) == "holds" and verdict(-0.3, -0.05) == "fails" and verdict(-0.1, 0.2) == "undecided"
    assert verdict(-0.3, -0.05, expected_sign=-1) == "holds" and verdict(float("nan"), float("nan")) == "undecided"
    assert welch_difference([1.0], [2.0, 3.0]).mean == pytest.approx(-1.5)


def test_ablation_reference_must_be_a_cell(tmp_path, monkeypatch):
    import vipo.sweep as sweep

    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "bad.yaml").write_text("name: bad\nreference: nope\ncells:\n  a: []\n  b: []\n")
    monkeypatch.setattr(sweep, "CONFIG_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"reference 'nope' .* is not a cell; cells: \['a', 'b'\]"):
        sweep.load_ablation("bad")


def test_claim_effect_and_verdicts(runs):
    from analysis.claims import _combine, _effect, claims_markdown

    df = runs[runs["tags.cell"].isin(["grpo", "vipo", "ones"])]
    claim = {"claim": "vipo keeps shape", "cell": "vipo", "metric": "eval/shape_acc"}
    e = _effect(df, claim, "grpo", "t", 0.95)  # the per-seed mean over levels of test_pairwise_levels...: 0.0786
    assert e["effect"] == pytest.approx((0.0 + 0.207500 / 3 + 0.5 / 3) / 3, abs=1e-6)
    assert (e["n"], e["n_sign"], e["verdict"], e["levels"]) == (3, 2, "undecided", "0.075, 0.15, 0.22")
    # at the final evaluation: FD vipo - grpo on the paired seeds 0, 1 is -5 and -5 (seed 2's is NaN): no spread,
    # the interval is the point -5, on the better (lower) side
    f = _effect(df, {**claim, "metric": "eval/fd", "at": "final"}, "grpo", "t", 0.95)
    assert (f["effect"], f["lo"], f["hi"], f["n"], f["verdict"]) == (-5.0, -5.0, -5.0, 2, "holds")
    none = _effect(df, claim, "random", "t", 0.95)  # random is not in df
    assert none["verdict"] == "undecided" and none["levels"] == "no finished run of random"
    assert _combine(["holds", "holds"]) == "holds" and _combine(["holds", "undecided"]) == "undecided"
    assert _combine(["holds", "fails"]) == "fails" and _combine([]) == "undecided"
    frame = pd.DataFrame([{"claim": "c", "reward": "redness", **e}, {"claim": "c", "reward": "redness", **f}])
    text = claims_markdown(frame)
    assert "| c | redness | vipo vs grpo | shape acc. | 0.075, 0.15, 0.22 | +0.079 [" in text
    assert "| FD | final | -5.0 [-5.0, -5.0] (2/2) | 2 | **holds** |" in text  # FD has one digit


def test_study_figure_bands(runs, tmp_path):
    from analysis.study_figures import cell_curves, interval_curves, sample_grid

    c = cell_curves(runs, "grpo", "eval/shape_acc", points=4)
    # evaluation rows after 0, 10, 20 iterations; reward 0, 0.2, 0.6 on every seed (no spread)
    assert c["iteration"] == [0, 10, 20] and [r[0] for r in c["reward"]] == pytest.approx([0.0, 0.2, 0.6])
    # matched levels linspace(0, 0.6, 4); at 0.2 the seeds' shapes are 0.8, 0.7, 0.6: 0.7 ± T2 * 0.1 / sqrt(3)
    assert c["levels"] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    mean, lo, hi = c["matched"][1]
    assert mean == pytest.approx(0.7) and hi - mean == pytest.approx(T2 * 0.1 / math.sqrt(3))
    assert interval_curves(runs, tmp_path / "c.png", title="t").stat().st_size > 10_000
    path, missing = sample_grid(runs[runs["tags.cell"] == "grpo"], tmp_path / "s.png", [0.2])
    assert path is None and "grpo:" in missing[0] and "samples_it00009.png not found" in missing[0]
    from PIL import Image

    first = Path(runs[runs["tags.cell"] == "grpo"].sort_values("seed")["run_dir"].iloc[0])
    (first / "images").mkdir(exist_ok=True)
    for it in (9, 19):  # reward 0.2 after 10 iterations, 0.6 after 20
        Image.new("RGB", (32, 32), (it * 10, 0, 0)).save(first / "images" / f"samples_it{it:05d}.png")
    (tmp_path / "g").mkdir()
    path, missing = sample_grid(runs[runs["tags.cell"] == "grpo"], tmp_path / "g" / "s.png", [0.25, 0.9])
    assert path.exists() and missing == []
    listed = (tmp_path / "g" / "s.txt").read_text().split()  # nearest 0.25: it 10; 0.9 (never reached): it 20
    assert [Path(p).name for p in listed] == ["samples_it00009.png", "samples_it00019.png"]
    assert all((tmp_path / "g" / p).resolve() == (first / "images" / Path(p).name).resolve() for p in listed)
