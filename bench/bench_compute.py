"""Compute efficiency of the toy world on one CPU thread, as ratios measured in this run.

Prints the fp32 GEMM peak, the toy UNet's forward+backward FLOP rate against it (target >= 70%), where the
time of a study iteration goes (stages and operator classes), a 16x16 study iteration against a 32x32 one
(target <= 1/4), evaluation cost and accuracy at 10 vs 20 ODE steps on the same noise, and the wall time of
one study run (target <= 5 min on one thread) and of the whole toy study (every ablation file x 4 seeds,
2 workers).

All times are CPU seconds of this process with one thread (``time.process_time``): on an idle machine they
equal wall seconds, and on a machine shared with other jobs they still measure the work, so the ratios hold.

    python bench/bench_compute.py [--iterations 3] [--skip-eval]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vipo.config import CONFIG_DIR, load  # noqa: E402
from vipo.eval.during import FixedNoiseEval, due_iterations  # noqa: E402

OP_CLASSES = {  # operator-name fragment -> class, first match wins
    "convolution": "convolution", "scaled_dot_product": "attention", "bmm": "attention",
    "mm": "linear", "group_norm": "norm", "silu": "activation", "upsample": "resample",
}


def cpu_best(fn, repeats: int = 3) -> float:
    """Smallest CPU time of ``repeats`` calls (the least disturbed one)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def gemm_peak() -> float:
    """fp32 GEMM FLOP/s: the best of square matrix products of a few sizes."""
    rates = []
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        rates.append(2 * n**3 / cpu_best(lambda: a @ b, 4))
    return max(rates)


def unet_rate(resolution: int, batch: int) -> tuple[float, float]:
    """(forward FLOPs per image, forward+backward FLOP/s) of the toy UNet on a batch."""
    from vipo.toy.nets import build_unet

    unet = build_unet(resolution)
    x = torch.randn(batch, 3, resolution, resolution)  # [B, 3, R, R]
    t, c = torch.rand(batch) * 1000, torch.randint(0, 17, (batch,))

    def step():
        unet.zero_grad(set_to_none=True)
        unet(x, t, class_labels=c).sample.square().mean().backward()

    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            unet(x, t, class_labels=c)
    with FlopCounterMode(display=False) as both:
        step()
    return fwd.get_total_flops() / batch, both.get_total_flops() / cpu_best(step, 4)


def trainer(tmp: str, resolution: int, extra=()):
    from vipo.train import Trainer

    cfg, raw = load(["experiment=toy_study", f"generator.resolution={resolution}", "logger=none", "eval.metrics=[]",
                     f"results_root={tmp}", f"run_id=bench{resolution}", *extra])
    return Trainer(cfg, raw)


def iteration_cost(resolution: int, iterations: int, profile: bool = False) -> dict:
    """CPU seconds and FLOPs of one study iteration (after a warm-up one), its stages and operator classes."""
    with tempfile.TemporaryDirectory() as tmp:
        tr = trainer(tmp, resolution)
        tr.iteration(0)  # warm-up
        with FlopCounterMode(display=False) as fc:
            tr.iteration(1)
        best, stages = float("inf"), {}
        for it in range(2, 2 + iterations):
            t = time.process_time()
            record, _, _ = tr.iteration(it)
            cpu = time.process_time() - t
            if cpu < best:
                best, stages = cpu, {k[5:]: record[k] for k in ("time_sample", "time_reward", "time_map", "time_update")}
        ops = {}
        if profile:
            from torch.profiler import ProfilerActivity, profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                tr.iteration(2 + iterations)
            for e in prof.key_averages():
                cls = next((v for k, v in OP_CLASSES.items() if k in e.key), "other")
                if e.key.startswith("aten::"):
                    ops[cls] = ops.get(cls, 0.0) + e.self_cpu_time_total / 1e6
    return {"seconds": best, "flops": fc.get_total_flops(), "stages": stages, "ops": ops}


def eval_cost(steps_list=(10, 20), batches=(32, 128)) -> dict:
    """CPU seconds of a 256-sample evaluation of the shipped 16x16 generator; accuracy per step count."""
    from vipo.eval.toy import ToyEvaluator
    from vipo.generators.toy import ToyGenerator
    from vipo.toy.data import PROMPTS

    gen, judge = ToyGenerator(resolution=16).eval(), ToyEvaluator()
    judge.reference()
    out = {"seconds": {}, "metrics": {}}
    for steps in steps_list:
        for mb in batches:  # noqa: B007 (the last ev supplies the prompts below)
            ev = FixedNoiseEval(gen, PROMPTS, 256, steps, 1234, micro_batch=mb)
            out["seconds"][(steps, mb)] = cpu_best(ev.images, 1)
        images = FixedNoiseEval(gen, PROMPTS, 256, steps, 1234, micro_batch=64).images()  # [256, 3, 16, 16]
        out["metrics"][steps] = judge.evaluate(images, ev.prompts)
        out["metrics"][steps]["judge_seconds"] = cpu_best(lambda: judge.evaluate(images, ev.prompts), 2)
    return out


def study_runs(seeds: int = 4) -> int:
    """Runs in the whole toy study: every ablation file's cells x ``seeds``."""
    from vipo.sweep import expand_cells, load_ablation

    return sum(len(expand_cells(load_ablation(p.stem), range(seeds))) for p in (CONFIG_DIR / "ablation").glob("*.yaml"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=3, help="timed iterations per resolution (best one counts)")
    ap.add_argument("--skip-eval", action="store_true", help="skip the evaluation measurements")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"one thread; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; times are CPU seconds")

    peak = gemm_peak()
    cfg, _ = load(["experiment=toy_study"])
    mb = cfg.train.micro_batch
    flops16, rate16 = unet_rate(16, mb)
    flops32, rate32 = unet_rate(32, mb)
    print(f"fp32 GEMM peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"toy UNet forward: {flops16 / 1e9:.3f} GFLOP/image at 16x16, {flops32 / 1e9:.3f} at 32x32")
    print(f"forward+backward, micro-batch {mb}: {rate16 / 1e9:.1f} GFLOP/s at 16x16 = {rate16 / peak:.0%} of GEMM; "
          f"{rate32 / 1e9:.1f} at 32x32 = {rate32 / peak:.0%} (target >= 70%)")

    it16 = iteration_cost(16, args.iterations, profile=True)
    it32 = iteration_cost(32, args.iterations)
    s16, s32 = it16["seconds"], it32["seconds"]
    print(f"study iteration ({cfg.train.prompts_per_iter} prompts x {cfg.train.group_size}, {cfg.sde.num_steps} SDE "
          f"steps, {cfg.train.timestep_fraction:.0%} trained): 16x16 {s16:.2f} s ({it16['flops'] / 1e9:.0f} GFLOP, "
          f"{it16['flops'] / s16 / peak:.0%} of GEMM), 32x32 {s32:.2f} s ({it32['flops'] / 1e9:.0f} GFLOP, "
          f"{it32['flops'] / s32 / peak:.0%} of GEMM)")
    print(f"  16x16 / 32x32 iteration: {s16 / s32:.3f} (target <= 0.25); floor at GEMM peak: "
          f"{it16['flops'] / peak:.2f} s at 16x16")
    print("  16x16 stages (wall s): " + "  ".join(f"{k} {v:.2f}" for k, v in it16["stages"].items()))
    total = sum(it16["ops"].values()) or 1.0
    print("  16x16 operator classes (share of operator CPU time): " + "  ".join(
        f"{k} {v / total:.0%}" for k, v in sorted(it16["ops"].items(), key=lambda kv: -kv[1])))

    e = cfg.eval
    n_evals = len(due_iterations(e.every, e.schedule, cfg.train.iterations))
    eval_s = None
    if not args.skip_eval:
        ev = eval_cost()
        for (steps, b), sec in sorted(ev["seconds"].items()):
            print(f"evaluation, 256 samples, {steps} ODE steps, micro-batch {b}: {sec:.2f} s")
        for steps, m in ev["metrics"].items():
            print(f"  {steps} ODE steps: shape_acc {m['shape_acc']:.3f}  colour_acc {m['colour_acc']:.3f}  "
                  f"fd {m['fd']:.2f}  redness {m['reward_redness']:.4f}  (judge {m['judge_seconds']:.2f} s)")
        eval_s = ev["seconds"][(e.num_steps, e.micro_batch)] + ev["metrics"][e.num_steps]["judge_seconds"]
    if eval_s is not None:
        study = cfg.train.iterations * s16 + n_evals * eval_s
        runs = study_runs()
        print(f"study run (experiment=toy_study: {cfg.train.iterations} iterations + {n_evals} evaluations of "
              f"{e.num_samples} samples x {e.num_steps} steps): {study:.0f} s = {study / 60:.1f} min on one thread "
              f"(target <= 5 min; training {cfg.train.iterations * s16:.0f} s, evaluation {n_evals * eval_s:.0f} s)")
        print(f"whole toy study: {runs} runs (every ablation file x 4 seeds) x {study:.0f} s / 2 workers = "
              f"{runs * study / 2 / 3600:.1f} h")
        print(f"BENCH study_run_seconds={study:.0f} toy_study_hours={runs * study / 2 / 3600:.2f}")
    print(f"BENCH gemm_gflops={peak / 1e9:.1f} fwd_bwd_of_gemm={rate16 / peak:.3f} "
          f"iter16_over_iter32={s16 / s32:.3f} iter16_seconds={s16:.2f}")


if __name__ == "__main__":
    main()
