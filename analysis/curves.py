"""Training curves from ``metrics.jsonl``: reward and evaluation metrics against iteration, and the
matched-reward view (structure metric against reward) that compares methods fairly when one of them
raises the reward faster.

    python -m analysis.curves results/runs/<a> results/runs/<b> --out curves.png [--metric eval/shape_acc]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from vipo.records import read_jsonl


def load_curves(run_dir: str | Path, metric: str = "eval/shape_acc") -> dict:
    """-> {"label", "iters", "reward", "eval_iters", "eval_reward", "eval_metric"} from one run folder."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    train = [r for r in rows if r["iteration"] >= 0]
    evals = [r for r in rows if metric in r]
    return {"label": Path(run_dir).name,
            "iters": [r["iteration"] for r in train], "reward": [r["reward_mean"] for r in train],
            "eval_iters": [r["iteration"] + 1 for r in evals],
            "eval_reward": [r.get("eval/reward") for r in evals], "eval_metric": [r[metric] for r in evals]}


def plot_curves(run_dirs: Sequence[str | Path], out: str | Path, metric: str = "eval/shape_acc",
                labels: Sequence[str] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [load_curves(d, metric) for d in run_dirs]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, c in enumerate(curves):
        label = labels[i] if labels else c["label"]
        ax[0].plot(c["iters"], c["reward"], label=label)
        ax[1].plot(c["eval_iters"], c["eval_metric"], marker="o", label=label)
        ax[2].plot(c["eval_reward"], c["eval_metric"], marker="o", label=label)
    ax[0].set(xlabel="iteration", ylabel="train reward (mean)", title="reward")
    ax[1].set(xlabel="iteration", ylabel=metric, title=f"{metric} (ODE samples)")
    ax[2].set(xlabel="eval/reward", ylabel=metric, title="matched reward")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="curves.png")
    ap.add_argument("--metric", default="eval/shape_acc")
    ap.add_argument("--labels", nargs="*", default=None)
    args = ap.parse_args(argv)
    plot_curves(args.runs, args.out, args.metric, args.labels)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
