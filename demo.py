#!/usr/bin/env python
"""``make demo``: GRPO and ViPO side by side on the toy world, same seed, in a few minutes on 2 cores.

    python demo.py [--out results/demo] [--seed 0] [overrides ...]

Runs ``experiment=toy_demo`` twice in parallel (one thread each): plain GRPO (``advantage=grpo``) and ViPO,
with the redness reward, then writes into ``--out``: ``curves.png`` (train reward, shape accuracy against
iteration, and shape accuracy against reward: the matched-reward view), ``samples.png`` (the same prompts and
noise before training, after GRPO and after ViPO) and ``table.md``, which it also prints.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from analysis.curves import plot_curves

ROOT = Path(__file__).resolve().parent
ARMS = {"grpo": ["advantage=grpo"], "vipo": []}
COLUMNS = [("eval/reward", "reward"), ("eval/shape_acc", "shape acc"), ("eval/colour_acc", "colour acc"),
           ("eval/fd", "FD")]


def _pump(prefix: str, stream, sink: list) -> None:
    for line in stream:
        sink.append(line)
        if line.startswith("[vipo] it") or "error" in line.lower():
            print(f"{prefix:>4} | {line}", end="", flush=True)


def run_arms(out: Path, seed: int, overrides: list[str]) -> dict[str, Path]:
    """Both arms as subprocesses with one thread each; returns their run folders."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs, logs = {}, {}
    for name, arm in ARMS.items():
        if (out / name / "summary.json").exists():
            continue
        resume = [f"resume={out / name}"] if (out / name / "checkpoints" / "last.pt").exists() else [
            "experiment=toy_demo", *arm, f"train.seed={seed}", f"results_root={out}", f"run_id={name}",
            "logger=none", "train.threads=1", *overrides]
        procs[name] = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *resume], cwd=ROOT, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        logs[name] = []
        threading.Thread(target=_pump, args=(name, procs[name].stdout, logs[name]), daemon=True).start()
    for name, p in procs.items():
        if p.wait() != 0:
            tail = "".join(logs[name][-15:])
            raise SystemExit(f"the {name} run failed (exit {p.returncode}):\n{tail}")
    return {name: out / name for name in ARMS}


def table(runs: dict[str, Path]) -> str:
    from vipo.records import read_jsonl

    lines = ["| arm | iterations | train reward (first -> last) | " + " | ".join(c for _, c in COLUMNS) + " |",
             "|---|---:|---:|" + "---:|" * len(COLUMNS)]
    for name, run in runs.items():
        s = json.loads((run / "summary.json").read_text())
        start = next(r for r in read_jsonl(run / "metrics.jsonl") if r["iteration"] == -1)
        cells = [f"{start[k]:.3f} -> {s[k]:.3f}" if k != "eval/fd" else f"{start[k]:.1f} -> {s[k]:.1f}"
                 for k, _ in COLUMNS]
        lines.append(f"| {name} | {s['iterations']} | {s['train_reward_first']:.3f} -> {s['train_reward_last']:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def sample_figure(runs: dict[str, Path], path: Path, per_row: int = 16, seed: int = 0) -> None:
    """Rows: the pretrained generator, then each arm's final weights; same prompts and noise in every row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vipo.images import make_grid, to_uint8
    from vipo.rollout import sample_ode
    from vipo.toy.data import PROMPTS
    from vipo.components import load_run_generator

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(per_row)]
    rows, labels = [], []
    for i, (name, run) in enumerate(runs.items()):
        gen, cfg = load_run_generator(run, device="cpu")
        noise = torch.randn(per_row, *gen.latent_shape(), generator=torch.Generator().manual_seed(seed))  # [N, 3, R, R]
        if i == 0:
            before = type(gen)(resolution=gen.resolution).eval()  # the shipped (pretrained) weights
            rows.append(before.decode(sample_ode(before, prompts, 20, None, noise=noise)))
            labels.append("pretrained\n(before it 0)")
        rows.append(gen.decode(sample_ode(gen, prompts, 20, None, noise=noise)))  # [N, 3, R, R]
        labels.append(f"{name}\nafter it {cfg.train.iterations - 1}")  # the iteration numbers of metrics.jsonl
    fig, axes = plt.subplots(len(rows), 1, figsize=(per_row * 0.55, len(rows) * 0.75 + 0.6))
    for r, (ax, images, label) in enumerate(zip(axes, rows, labels)):
        grid = make_grid(to_uint8(images), nrow=per_row)  # [3, H', W'], one column per prompt
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        step = (grid.shape[-1] - 1) / per_row  # pixels per column (image + 1 pixel of padding)
        ax.set_xticks([0.5 + step * (j + 0.5) for j in range(per_row)])
        ax.set_xticklabels([p.removeprefix("a ") for p in prompts] if r == 0 else [], fontsize=6, rotation=45,
                           ha="left")  # one label per column, above the first row
        ax.xaxis.set_ticks_position("top") if r == 0 else ax.tick_params(bottom=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "results" / "demo"), help="folder of both runs and the figures")
    ap.add_argument("--seed", type=int, default=0, help="train.seed of both arms")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for both arms")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    print(f"GRPO and ViPO, toy world 16x16, redness reward, seed {args.seed}: two runs in parallel, one thread each",
          flush=True)
    runs = run_arms(out, args.seed, args.overrides)

    plot_curves([runs["grpo"], runs["vipo"]], out / "curves.png", labels=["GRPO", "ViPO"])
    sample_figure(runs, out / "samples.png")
    text = table(runs)
    (out / "table.md").write_text(text + "\n")
    print("\n" + text + "\n")
    print(f"wrote {out / 'curves.png'}, {out / 'samples.png'} and {out / 'table.md'} "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
