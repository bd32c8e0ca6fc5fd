"""The demo's table reads both arms' run records (the demo itself is `make demo`, not a unit test)."""

import json

from demo import table


def test_table_shows_start_and_end_of_each_arm(tmp_path):
    runs = {}
    for name, (reward, shape) in {"grpo": (0.49, 0.25), "vipo": (0.11, 0.75)}.items():
        run = tmp_path / name
        run.mkdir()
        start = {"iteration": -1, "eval/reward": 0.018, "eval/shape_acc": 0.984, "eval/colour_acc": 1.0, "eval/fd": 0.6}
        end = {"iteration": 29, "reward_mean": reward, "eval/reward": reward, "eval/shape_acc": shape,
               "eval/colour_acc": 0.5, "eval/fd": 40.0}
        (run / "metrics.jsonl").write_text(json.dumps(start) + "\n" + json.dumps(end) + "\n")
        (run / "summary.json").write_text(json.dumps({**end, "iterations": 30, "train_reward_first": -0.01,
                                                       "train_reward_last": reward}))
        runs[name] = run
    lines = table(runs).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| arm |")
    assert "| grpo | 30 | -0.010 -> 0.490 | 0.018 -> 0.490 | 0.984 -> 0.250 | 1.000 -> 0.500 | 0.6 -> 40.0 |" == lines[2]
    assert "0.984 -> 0.750" in lines[3]
