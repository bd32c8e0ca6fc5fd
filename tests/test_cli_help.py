"""The everyday command line: --help lists what the config folders and registries hold, unknown names get a
"did you mean", Optuna starts clean (storage shown, no warnings) and shows its trials, threads are set by the run."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import tiny  # noqa: F401
from vipo.config import CONFIG_DIR

ROOT = Path(__file__).resolve().parent.parent


def test_train_help_lists_groups_experiments_and_registered_names(capsys):
    from vipo import cli
    from vipo.catalog import registries

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for folder in CONFIG_DIR.iterdir():
        if folder.is_dir() and folder.name not in ("ablation", "study"):
            for option in folder.glob("*.yaml"):
                assert option.stem in out, (folder.name, option.stem)
    assert "  toy_redness                ViPO on the toy world with the paper's redness reward" in out
    names = registries()
    assert "flux" in names["generator.name"] and "saliency" in names["psm.source"]
    assert "scalar" in names["advantage.mode"]
    for key, values in names.items():
        block = out[out.index(key + ":"):]
        assert all(v in block for v in values), key
    assert "@package" not in out and max(len(line) for line in out.splitlines()) <= 120


def test_sweep_help_lists_ablations_with_cells_studies_and_searches(capsys):
    import sweep as sweep_cli  # the top-level command
    from vipo.sweep import cell_names, load_ablation

    assert sweep_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for path in (CONFIG_DIR / "ablation").glob("*.yaml"):
        block = out[out.index(f"\n  {path.stem} "):]
        cells = block[block.index("cells:"):block.index("\n  ", block.index("cells:") + 1)]
        assert all(c in cells for c in cell_names(load_ablation(path.stem))), path.stem
    assert "cells: k-1, k-2, k-3, k-4, k-5, k-8" in out
    assert "Studies (study=<name>" in out and "parts: main (seeds 4)" in out
    assert "Optuna searches (search=<name>; sweeps/):\n  toy                24 trials, maximize" in out
    assert max(len(line) for line in out.splitlines()) <= 120
    assert sweep_cli.main([]) == 2  # no arguments: the same help, and a failing exit status


@pytest.mark.parametrize("argv,message", [
    (["ablation=psm_kk"], "unknown ablation 'psm_kk'; did you mean 'psm_k'?"),
    (["study=tyo"], "unknown study 'tyo'; did you mean 'toy'?"),
    (["search=toi", "trials"], "unknown search 'toi'; did you mean 'toy'?"),
    (["ablation=zzzz"], "unknown ablation 'zzzz'; known: baseline, "),
])
def test_unknown_names_get_one_line_with_a_suggestion(argv, message, capsys):
    import sweep as sweep_cli  # the top-level command

    assert sweep_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_best_overrides_keep_the_last_value_of_each_key():
    from vipo.hpo import dedupe_overrides

    got = dedupe_overrides(["experiment=toy_redness", "train.iterations=40", "logger=none", "+tags.a=1",
                            "train.lr=1e-4", "train.iterations=2", "tags.a=2", "logger=wandb"])
    assert got == ["experiment=toy_redness", "train.lr=1e-4", "train.iterations=2", "tags.a=2", "logger=wandb"]


def test_a_search_starts_clean_saves_unique_overrides_and_prints_its_trials(tmp_path, capsys):
    from test_hpo import write_spec
    from vipo.hpo import print_trials, run_search

    spec = str(write_spec(tmp_path, 2))
    root = tmp_path / "optuna"
    print_trials(spec, root)
    assert "tiny: no trials yet" in capsys.readouterr().out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        best = run_search(spec, ["train.iterations=2"], root=root)
    optuna_warnings = [str(w.message) for w in caught if "optuna" in (w.filename + str(w.category)).lower()]
    assert optuna_warnings == []
    out = capsys.readouterr().out
    assert f"[search] tiny: 0/2 trials finished; storage sqlite:///{(root / 'tiny.db').resolve()}" in out
    keys = [o.split("=", 1)[0] for o in best["overrides"]]
    assert len(keys) == len(set(keys)) and "train.iterations=2" in best["overrides"]
    assert "train.iterations=3" not in best["overrides"]
    print_trials(spec, root)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[search] tiny: 2 trials, metric eval/reward (maximize); storage sqlite:///")
    header = lines[1].split()
    assert header[:3] == ["trial", "state", "value"] and {"psm.k", "train.lr", "minutes", "run"} <= set(header)
    rows = [line.split() for line in lines[2:4]]
    assert [r[0] for r in rows] == ["0", "1"] and all(r[1] == "COMPLETE" for r in rows)
    assert float(rows[best["trial"]][2]) == pytest.approx(best["value"], rel=1e-3)
    assert lines[-1].startswith("[search] browse them: optuna-dashboard sqlite:///")


def test_threads_follow_the_config_then_the_launcher_then_the_machine():
    from vipo.threads import resolve_threads

    assert resolve_threads(3, {"VIPO_PARALLEL_RUNS": "4"}, cores=16) == (3, "train.threads=3")
    assert resolve_threads(0, {"VIPO_PARALLEL_RUNS": "4", "OMP_NUM_THREADS": "8"}, cores=16)[0] == 1
    assert resolve_threads(0, {"VIPO_PARALLEL_RUNS": "1", "OMP_NUM_THREADS": "2"}, cores=16)[0] == 2
    assert resolve_threads(0, {}, cores=16) == (16, "auto: the cores of this machine")


def test_the_run_header_prints_the_threads_it_set(tmp_path):
    from test_train import TINY, prompts_file

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "HF_HUB_OFFLINE": "1",
           "VIPO_PARALLEL_RUNS": "3", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "tests/run_tiny.py"), *TINY, "train.iterations=1",
                          "eval.every=0", f"results_root={tmp_path}", "run_id=t",
                          f"train.prompts={prompts_file(tmp_path)}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "threads=1 [auto: 1 per run, 3 runs at once]" in out.stdout
    assert "[vipo] it    0 (1/1)  reward" in out.stdout  # the iteration number of metrics.jsonl and the file names
