"""Pretrain the toy rectified-flow generator on procedural data (the shipped weights come from here).

    python -m vipo.toy.pretrain                      # the shipped 32x32 weights: 3000 steps, seed 0
    python -m vipo.toy.pretrain --resolution 16 --steps 2500 --out vipo/toy/weights/toy_generator_16.safetensors \
        --ckpt-dir outputs/toy_pretrain_16              # the shipped 16x16 weights
    python -m vipo.toy.pretrain --steps 20 --out /tmp/g.safetensors --ckpt-dir /tmp/ck   # smoke run

Cost: ~0.8 CPU-seconds per step at 32x32 (bf16, one thread), so the 3000 steps take ~25 min on two
idle cores and took 50 min on our shared 2-core machine (see ``weights/MODEL_CARD.md``).

Objective (docs/DESIGN.md §1 and §6): x_t = (1 - t) x0 + t eps with x0 the image in [-1, 1], the network
predicts the velocity v = eps - x0; t ~ logit-normal(0, 1); the prompt's class label is replaced by the
null class 10% of the time (classifier-free guidance). AdamW with linear warm-up then cosine decay to 10%,
EMA of the weights (decay ramps up to 0.999); the forward pass runs under bf16 autocast by default
(weights, optimizer and EMA stay fp32). A checkpoint is written every ``--ckpt-every`` steps and
the run resumes from it when restarted with the same ``--ckpt-dir``. At the end the EMA weights are
saved and, if the judge classifier exists, 256 ODE samples (20 steps, guidance 1 and 2) are scored and
written beside them as ``<name>.metrics.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vipo.toy.data import PROMPTS, as_generator, prompt_index, render_batch
from vipo.toy.nets import NULL_CLASS, SHIPPED, build_unet, save_weights


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    p.add_argument("--batch", type=int, default=64, help="images per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--ema", type=float, default=0.999, help="final EMA decay")
    p.add_argument("--p-uncond", type=float, default=0.1, help="probability of the null prompt")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data and noise")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="autocast of the forward pass (bf16: ~2x faster on CPUs with AMX / AVX512-BF16, ~20x "
                        "slower on AVX2-only CPUs); auto: bf16 where the CPU has native bf16, else fp32")
    p.add_argument("--out", default=str(SHIPPED["generator"]), help="EMA weights (safetensors)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="dtype of saved weights")
    p.add_argument("--ckpt-dir", default="outputs/toy_pretrain", help="resumable checkpoints")
    p.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and exit at this step (split a run)")
    p.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    p.add_argument("--eval-samples", type=int, default=256, help="ODE samples judged at the end (0: skip)")
    p.add_argument("--eval-only", action="store_true", help="only judge the weights at --out")
    p.add_argument("--init", default=None,
                   help="start from these weights (a generator safetensors file) instead of a random init")
    p.add_argument("--distill-guidance", type=float, default=None, metavar="SCALE",
                   help="guidance distillation: train the conditional velocity towards the --init model's "
                        "classifier-free-guided velocity at SCALE (one network call then samples like SCALE)")
    return p.parse_args(argv)


def native_bf16() -> bool:
    """Does this CPU compute bf16 natively (AVX512-BF16 / AMX)? Without it bf16 autocast is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


RUN_DEFINING = ("steps", "batch", "lr", "warmup", "ema", "p_uncond", "resolution", "seed", "precision", "init",
                "distill_guidance")


def check_resumable(saved: dict, now: dict, path: Path) -> None:
    """Refuse to resume a checkpoint of a different run (it would silently mix two recipes)."""
    diff = {k: (saved.get(k), now[k]) for k in RUN_DEFINING if saved.get(k) != now[k]}
    if diff:
        raise ValueError(f"{path} belongs to a different run ({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in diff.items())}); "
                         "pass a fresh --ckpt-dir or delete it")


def flow_loss(unet, images: torch.Tensor, labels: torch.Tensor, g: torch.Generator, bf16: bool = False,
              teacher=None, scale: float = 1.0) -> torch.Tensor:
    """Rectified-flow velocity loss on images [B, 3, H, W] in [0, 1] with class labels [B].

    The target is ``eps - x0``, or with a ``teacher`` its guided velocity ``v_null + scale (v_cond - v_null)``
    at the same ``x_t`` (guidance distillation; null-class rows get the teacher's unconditional velocity).
    """
    x0 = images * 2 - 1  # [B, 3, H, W] in [-1, 1]
    eps = torch.randn(x0.shape, generator=g)
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=g))  # [B] logit-normal
    xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    target = eps - x0  # [B, 3, H, W]
    if teacher is not None:
        with torch.no_grad():
            null = torch.full_like(labels, NULL_CLASS)
            both = teacher(torch.cat([xt, xt]), torch.cat([t, t]) * 1000,
                           class_labels=torch.cat([labels, null])).sample  # [2B, 3, H, W]
            v_cond, v_null = both.chunk(2)
            target = v_null + scale * (v_cond - v_null)  # [B, 3, H, W]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pred = unet(xt, t * 1000, class_labels=labels).sample  # [B, 3, H, W]
    return F.mse_loss(pred.float(), target)


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


def judge_weights(path: str | Path, n: int, seed: int = 1234) -> dict:
    """Score ``n`` 20-step ODE samples of the weights at ``path`` with the judge classifier."""
    from vipo.eval.toy import ToyEvaluator
    from vipo.generators.toy import ToyGenerator, sample_ode
    from vipo.toy.data import prompts_for
    from vipo.toy.nets import read_weights

    gen = ToyGenerator(weights=str(path), resolution=read_weights(path)[1]["resolution"]).eval()
    prompts = prompts_for(n, seed)
    evaluator = ToyEvaluator()
    out = {}
    for scale in (1.0, 2.0):
        gen.guidance_scale = scale
        images = sample_ode(gen, prompts, num_steps=20, seed=seed)
        metrics = evaluator.evaluate(images, prompts)
        out[f"cfg{scale:g}"] = {k: round(float(v), 4) for k, v in metrics.items()}
    return out


def train(args) -> Path | None:
    if args.precision == "auto":
        args.precision = "bf16" if native_bf16() else "fp32"
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ckpt_path = Path(args.ckpt_dir) / "last.pt"
    unet = build_unet(args.resolution)
    if args.init is not None:  # warm start: continue training earlier weights (their EMA) with a fresh optimizer
        from vipo.toy.nets import load_unet

        unet.load_state_dict(load_unet(args.init, resolution=args.resolution).state_dict())
        print(f"initialised from {args.init}", flush=True)
    if args.distill_guidance is not None and args.init is None:
        raise SystemExit("--distill-guidance needs --init: the teacher whose guided velocity is distilled")
    teacher = copy.deepcopy(unet).requires_grad_(False).eval() if args.distill_guidance is not None else None
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    data_g, noise_g = as_generator(args.seed), as_generator(args.seed + 1)
    start, elapsed = 0, 0.0
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        check_resumable(ck["args"], vars(args), ckpt_path)
        unet.load_state_dict(ck["model"]), ema.load_state_dict(ck["ema"]), opt.load_state_dict(ck["opt"])
        data_g.set_state(ck["data_g"]), noise_g.set_state(ck["noise_g"])
        start, elapsed = ck["step"], ck["elapsed"]
        print(f"resumed from {ckpt_path} at step {start}", flush=True)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"toy generator: {n_params / 1e6:.2f}M parameters, {args.steps} steps of batch {args.batch}", flush=True)

    t0, running = time.time() - elapsed, 0.0
    end = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    for step in range(start, end):
        batch = render_batch(args.batch, data_g, resolution=args.resolution)
        labels = torch.tensor([prompt_index(p) for p in batch.prompts])  # [B]
        drop = torch.rand(args.batch, generator=noise_g) < args.p_uncond
        labels = torch.where(drop, torch.full_like(labels, NULL_CLASS), labels)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss = flow_loss(unet, batch.images, labels, noise_g, bf16=args.precision == "bf16", teacher=teacher,
                         scale=args.distill_guidance or 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, min(args.ema, (1 + step) / (10 + step)))
        running = loss.item() if step == start else 0.95 * running + 0.05 * loss.item()
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            sec = time.time() - t0
            print(f"step {done:5d}  loss {running:.4f}  lr {lr_at(step, args):.2e}  "
                  f"{sec / 60:5.1f} min  {(done - start) / max(1e-9, sec - elapsed):.2f} steps/s", flush=True)
        if done % args.ckpt_every == 0 or done == args.steps or done == args.stop_at:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            state = {"model": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                     "data_g": data_g.get_state(), "noise_g": noise_g.get_state(), "step": done,
                     "elapsed": time.time() - t0, "args": vars(args)}
            torch.save(state, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)

    if end < args.steps:
        print(f"stopped at step {end} of {args.steps}; run the same command without --stop-at to go on", flush=True)
        return None
    config = {"resolution": args.resolution, "num_class_embeds": len(PROMPTS) + 1, "channels": [32, 64, 64]}
    minutes = (time.time() - t0) / 60
    meta = {} if args.init is None else {"init": Path(args.init).name}
    if args.distill_guidance is not None:
        meta["distilled_guidance"] = args.distill_guidance
    out = save_weights(ema, args.out, config, dtype=getattr(torch, args.dtype), steps=args.steps, seed=args.seed,
                       precision=args.precision, train_minutes=f"{minutes:.1f}", **meta)
    print(f"saved EMA weights to {out} ({out.stat().st_size / 1e6:.2f} MB) after {minutes:.1f} min", flush=True)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    out = Path(args.out) if args.eval_only else train(args)
    if out is not None and args.eval_samples > 0:
        try:
            metrics = judge_weights(out, args.eval_samples)
        except FileNotFoundError as err:  # no judge yet: train it with vipo.toy.train_classifier
            print(f"skipping evaluation: {err}", flush=True)
            return
        print(json.dumps(metrics, indent=1), flush=True)
        out.with_suffix(".metrics.json").write_text(json.dumps({"eval_samples": args.eval_samples, **metrics}, indent=1))


if __name__ == "__main__":
    main()
