"""Pre-registration: a tiny committed study is frozen, judged against its plan, changed, then refused."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from vipo.config import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "study_confirm" / "tiny_confirm.yaml"
REWARDS = [0.0, 0.1, 0.2, 0.3, 0.4]  # every run's evaluation curve of eval/reward
# shape accuracy = 1 - slope * reward; per seed, the effect cell - reference at levels 0.1, 0.2 is
# -(slope_cell - slope_ref) * 0.15
SLOPES = {"grpo": [0.9, 1.0, 0.8, 1.1], "ones": [0.5, 0.6, 0.55, 0.45], "vipo": [0.5, 0.65, 0.5, 0.5]}


def _write_runs(root: Path, study: Path) -> None:
    from vipo.study import plan_study, write_index

    runs, index = plan_study(study, root=root)
    write_index(root, index)
    for run in runs:
        cell, seed = run.members[0][1], run.cell.seed
        slope = SLOPES[cell][seed - 100]
        d = run.cell.run_dir
        d.mkdir(parents=True)
        rows = [{"iteration": i - 1, "eval/reward": r, "eval/shape_acc": 1 - slope * r} for i, r in enumerate(REWARDS)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "summary.json").write_text(json.dumps({"eval/reward": REWARDS[-1]}))


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "tiny_confirm.yaml"
    shutil.copy(FIXTURE, path)
    return path, tmp_path / "out"


def test_frozen_plan_is_judged_then_a_changed_study_is_refused(study, capsys):
    from analysis.claims import main as claims_main
    from analysis.confirm import confirmatory_table
    from vipo.confirm import PlanError, check_plan
    from vipo.study import freeze_study as freeze, load_study
    from sweep import main as sweep_main

    path, root = study
    with pytest.raises(PlanError, match="plan.json not found"):
        check_plan(load_study(path), path, root)
    from vipo.study import run_study

    with pytest.raises(PlanError, match="plan.json not found"):  # no run starts before the plan is frozen
        run_study(path, root=root)
    assert not root.exists()
    plan_path = freeze(path, root)
    plan = json.loads(plan_path.read_text())
    assert plan["study_sha256"] and plan["parts"][0]["seeds"] == [100, 101, 102, 103]
    assert plan["confirmatory"]["levels"] == {"redness": [0.1, 0.2]} and plan["commit"]
    assert plan["study_file_committed"] is False  # a copy outside the repository
    assert freeze(path, root) == plan_path  # freezing the same plan again changes nothing

    _write_runs(root, path)
    frame, _ = confirmatory_table(path, root)
    by = {r.reference: r for r in frame.itertuples()}
    # vipo vs grpo: per-seed effects -(0.5-0.9, 0.65-1.0, 0.5-0.8, 0.5-1.1) * 0.15 = 0.06, 0.0525, 0.045, 0.09
    d = [0.06, 0.0525, 0.045, 0.09]
    mean = sum(d) / 4
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 3) / 2
    g = by["grpo"]
    assert g.n == 4 and g.finished == 4 and g.planned == 4 and g.levels == "0.1, 0.2"
    assert g.effect == pytest.approx(mean) and g.hi - g.effect == pytest.approx(3.182446 * se, rel=1e-5)
    # vipo vs ones: effects 0, -0.0075, 0.0075, -0.0075: small and tight -> equivalent within 0.05
    o = by["ones"]
    assert o.effect == pytest.approx(-0.001875)
    # Holm over the two claims: the smaller p is multiplied by 2, the larger by 1 (running max)
    p = sorted([g.p, o.p])
    assert sorted([g.p_adj, o.p_adj]) == pytest.approx([min(1, 2 * p[0]), max(min(1, 2 * p[0]), p[1])])
    assert g.p_adj < 0.05 and g.verdict == "holds" and g.lo_adj > 0  # tested at 0.05 / 2
    assert g.level_adj == pytest.approx(0.025)
    assert o.p_equiv_adj < 0.05 and o.verdict == "equivalent"
    assert g.seeds_per_level == "4, 4" and o.seeds_per_level == "4, 4"
    from analysis.confirm import per_level_table

    # per level on its own: vipo vs grpo at 0.1 is -(slope diff) * 0.1 = 0.04, 0.035, 0.03, 0.06; at 0.2 twice that
    lv = per_level_table(path, root)
    at = {(r.reference, r.level): r for r in lv.itertuples()}
    assert len(lv) == 4 and at[("grpo", 0.1)].n == 4 and at[("grpo", 0.1)].n_sign == 4
    assert at[("grpo", 0.1)].effect == pytest.approx(0.04125) and at[("grpo", 0.2)].effect == pytest.approx(0.0825)
    d1 = [0.04, 0.035, 0.03, 0.06]
    se1 = math.sqrt(sum((x - 0.04125) ** 2 for x in d1) / 3) / 2
    assert at[("grpo", 0.1)].hi - 0.04125 == pytest.approx(3.182446 * se1, rel=1e-5)
    # the mean of the two levels is the per-seed effect the confirmatory test used
    assert (at[("grpo", 0.1)].effect + at[("grpo", 0.2)].effect) / 2 == pytest.approx(g.effect)

    assert claims_main([str(path), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Confirmatory claims" in out and "**holds**" in out and "**equivalent**" in out
    assert "Exploratory claims" in out and "ones vs grpo (exploratory)" in out and "Per level" in out
    from analysis.confirm import main as confirm_main

    assert confirm_main([str(path), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "**holds**" in out and "| vipo vs grpo | shape acc. | 0.1 | +0.041 [" in out
    from analysis.claims import write_claims  # what make tables writes into a study's tables/

    tables = root / "tables"
    tables.mkdir()
    text, _ = write_claims(path, root, tables)
    assert (tables / "claims.md").read_text() == text and text.index("Confirmatory") < text.index("Exploratory")
    assert "4 / 4" in text and "(../plan.json)" in text and "interim" not in text
    conf = (tables / "confirmatory.csv").read_text().splitlines()
    assert len(conf) == 3 and conf[0].startswith("claim,reward,cell,reference")

    # a study cut short: the seeds found are judged, and the table says it is interim
    (root / "redness" / "main.vipo-s103" / "summary.json").unlink()
    from analysis.confirm import confirmatory_markdown

    frame, plan = confirmatory_table(path, root)
    assert list(frame["n"]) == [3, 3] and list(frame["finished"]) == [3, 3] and list(frame["planned"]) == [4, 4]
    assert "interim" in confirmatory_markdown(frame, plan)
    # a finished pair that reaches no fixed level is left out of n, and the table says so
    grpo = root / "redness" / "main.grpo-s102" / "metrics.jsonl"
    grpo.write_text("".join(json.dumps({"iteration": i - 1, "eval/reward": 0.01 * i, "eval/shape_acc": 1.0}) + "\n"
                            for i in range(5)))
    frame, plan = confirmatory_table(path, root)
    by = {r.reference: r for r in frame.itertuples()}
    assert (by["grpo"].n, by["grpo"].finished) == (2, 3) and (by["ones"].n, by["ones"].finished) == (3, 3)
    assert "vipo vs grpo: 1 finished seed(s) reach no level" in confirmatory_markdown(frame, plan)
    # a pair that reaches the first level but not the second: its seed's effect is the first level's alone,
    # and the table says how many seeds reach each level
    ones = root / "redness" / "main.ones-s101" / "metrics.jsonl"
    ones.write_text("".join(json.dumps({"iteration": i - 1, "eval/reward": r, "eval/shape_acc": 1 - 0.6 * r}) + "\n"
                            for i, r in enumerate([0.0, 0.05, 0.1, 0.15])))
    frame, plan = confirmatory_table(path, root)
    o = {r.reference: r for r in frame.itertuples()}["ones"]
    assert o.n == 3 and o.seeds_per_level == "3, 2"
    # seeds 100, 102 as before (0, +0.0075); seed 101 at 0.1 only: -(0.65 - 0.6) * 0.1 = -0.005
    assert o.effect == pytest.approx((0 + 0.0075 - 0.005) / 3)
    assert "0.1, 0.2 (seeds reaching each: 3, 2)" in confirmatory_markdown(frame, plan)

    # change the study file (a level moved after seeing data): every confirmatory judgement is refused
    spec = yaml.safe_load(path.read_text())
    spec["confirmatory"]["levels"]["redness"] = [0.1, 0.25]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(PlanError, match="changed since its plan was frozen"):
        confirmatory_table(path, root)
    assert claims_main([str(path), "--root", str(root)]) == 2
    assert "changed since its plan was frozen" in capsys.readouterr().err
    with pytest.raises(PlanError, match="already holds a different frozen plan"):
        freeze(path, root)
    # and a plan is never frozen once a run has finished
    (root / "plan.json").unlink()
    with pytest.raises(PlanError, match="already finished"):
        freeze(path, root)
    assert sweep_main(["study=toy", "freeze"]) == 2  # the command line: one line naming the problem, exit 2
    assert "has no 'confirmatory:' block" in capsys.readouterr().err


def test_confirmatory_block_is_validated(tmp_path):
    from vipo.study import load_study

    base = yaml.safe_load(FIXTURE.read_text())

    def bad(edit, match):
        spec = json.loads(json.dumps(base))
        edit(spec)
        p = tmp_path / "s.yaml"
        p.write_text(yaml.safe_dump(spec))
        with pytest.raises(ConfigError, match=match):
            load_study(p)

    bad(lambda s: s["parts"][0].update(seeds=[3, 100]), r"seeds \[3\] are also seeds of the pilot study 'toy'")
    bad(lambda s: s["confirmatory"]["margins"].pop("eval/shape_acc"), r"margins\['eval/shape_acc'\] must be")
    bad(lambda s: s["confirmatory"].update(levels={"redness": "auto"}), r"levels\['redness'\] must be a list")
    bad(lambda s: s["confirmatory"].update(correction="fdr"), "correction must be one of")
    bad(lambda s: s["confirmatory"]["claims"][0].update(reward="brightness"), "reward 'brightness' is not run")
    bad(lambda s: s["confirmatory"].update(alpha=0), r"alpha must be in \(0, 1\)")
    assert load_study(FIXTURE)["confirmatory"]["alpha"] == 0.05
