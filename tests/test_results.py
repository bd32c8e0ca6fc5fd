"""Results index and curves: rebuilt from run folders, cached, invalidated by new runs."""

import json
import math

import pytest

from analysis.curves import load_curves, plot_curves
from analysis.make_tables import main as tables_main
from analysis.tables import cell_table
from test_train import tiny_cfg
from vipo.results import collect, main
from vipo.train import run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        cfg, raw = tiny_cfg(root, "train.iterations=2", "eval.every=1", f"run_id=s{seed}", f"train.seed={seed}",
                            "+tags.cell=a")
        run(cfg, raw)
    return root


def test_collect_flattens_summary_and_config(two_runs):
    df = collect(two_runs)
    assert sorted(df["run_id"]) == ["s0", "s1"]
    assert set(df["cfg.train.seed"]) == {0, 1} and set(df["tags.cell"]) == {"a"}
    s0 = json.loads((two_runs / "s0/summary.json").read_text())
    assert float(df[df.run_id == "s0"]["eval/reward"].iloc[0]) == pytest.approx(s0["eval/reward"])


def test_cache_is_used_and_refreshed(two_runs, tmp_path):
    collect(two_runs)
    cache = two_runs / "index.parquet"
    assert cache.exists()
    extra = two_runs / "s2"
    extra.mkdir()
    (extra / "summary.json").write_text(json.dumps({"run_id": "s2", "eval/reward": 0.5, "tags": {"cell": "b"}}))
    df = collect(two_runs)
    assert len(df) == 3 and "s2" in set(df["run_id"])
    (extra / "summary.json").unlink()
    extra.rmdir()


def test_cell_table_mean_and_interval(two_runs, capsys):
    df = collect(two_runs)
    t = cell_table(df, ["eval/reward"]).set_index("cell")
    vals = [json.loads((two_runs / f"s{i}/summary.json").read_text())["eval/reward"] for i in (0, 1)]
    # two seeds: s = |a - b| / sqrt(2), half-width t(0.975, 1) s / sqrt(2) = tan(0.475 pi) |a - b| / 2
    assert t.loc["a", "mean"] == pytest.approx(sum(vals) / 2) and t.loc["a", "n"] == 2
    assert t.loc["a", "hi"] - t.loc["a", "mean"] == pytest.approx(math.tan(0.475 * math.pi) * abs(vals[0] - vals[1]) / 2)
    tables_main([str(two_runs), "--by", "tags.cell", "--metrics", "eval/reward"])
    out = capsys.readouterr().out
    assert "| tags.cell | reward | n |" in out and "| a | " in out and " ± " in out
    main([str(two_runs)])  # python -m vipo.results: one row per run, no statistics
    out = capsys.readouterr().out
    assert "s0" in out and "s1" in out and " ± " not in out
    with pytest.raises(SystemExit, match="--by tags.celll: no such column"):
        tables_main([str(two_runs), "--by", "tags.celll"])


def test_curves_read_metrics_and_plot(two_runs, tmp_path):
    c = load_curves(two_runs / "s0", metric="eval/reward")
    rows = [json.loads(line) for line in (two_runs / "s0/metrics.jsonl").read_text().splitlines()]
    assert c["reward"] == [r["reward_mean"] for r in rows if r["iteration"] >= 0]
    assert c["eval_iters"] == [0, 1, 2]  # before training, after iteration 1 and 2
    out = tmp_path / "c.png"
    plot_curves([two_runs / "s0", two_runs / "s1"], out, metric="eval/reward")
    assert out.stat().st_size > 1000
