"""GPU benchmark: one ViPO iteration on a FLUX-size transformer with random weights.

FLUX.1-dev architecture (19 double + 38 single blocks, ~12B parameters, random bf16 weights; LoRA
rank 32 by default, ``--lora-rank 0`` for full fine-tuning), 512 x 512 images (64 x 64 latents ->
1024 image tokens + 512 text tokens), one prompt x group 12, 8 SDE steps (Flow-GRPO form, noise 0.7),
60% of the steps trained. The maps come from DINOv2-large (random weights, 518 px input, 37 x 37
patches) through the PSM. Text encoders are skipped (random cached prompt embeddings); the VAE is the
FLUX VAE architecture with random weights.

Prints the time split (sampling / decode / PSM / update), the PSM's share of the iteration, peak GPU
memory and MFU (model FLOPs counted with torch's FlopCounterMode on one forward pass: sampling = 1x,
training = 3x forward; recomputation from gradient checkpointing is not counted), then one line
``BENCH gpu_iter_s=... psm_share=... peak_mem_gb=... mfu=...``.

Without a CUDA device it prints a message and exits 0. ``--tiny`` runs a miniature on any device
(a check that the script works, not a measurement).

    python bench/bench_gpu.py [--group 12] [--steps 8] [--res 512] [--lora-rank 32] [--iters 2] [--tiny]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager

import torch
from torch import nn

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0}  # dense


def build(args, device: torch.device):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import Dinov2Config

    from vipo.backbones.dinov2 import DinoV2Backbone
    from vipo.generators.flux import FluxGenerator

    tiny = args.tiny
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.set_default_dtype(dtype)  # build the big modules directly in bf16 on the GPU: no fp32 copy
    try:
        with device:
            transformer = FluxTransformer2DModel(
                in_channels=64, num_layers=1 if tiny else 19, num_single_layers=1 if tiny else 38,
                attention_head_dim=16 if tiny else 128, num_attention_heads=2 if tiny else 24,
                joint_attention_dim=32 if tiny else 4096, pooled_projection_dim=32 if tiny else 768,
                guidance_embeds=True, axes_dims_rope=(4, 6, 6) if tiny else (16, 56, 56))
            vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                                block_out_channels=(8, 8, 8, 8) if tiny else (128, 256, 512, 512),
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                layers_per_block=1 if tiny else 2, norm_num_groups=4 if tiny else 32,
                                use_quant_conv=False, use_post_quant_conv=False,
                                scaling_factor=0.3611, shift_factor=0.1159)
            dino = Dinov2Config(hidden_size=32 if tiny else 1024, num_hidden_layers=1 if tiny else 24,
                                num_attention_heads=2 if tiny else 16, intermediate_size=64 if tiny else 4096,
                                patch_size=14, image_size=518)
            from transformers import AutoModel

            dino_model = AutoModel.from_config(dino)
    finally:
        torch.set_default_dtype(torch.float32)
    gen = FluxGenerator.from_components(
        transformer, vae, [nn.Identity(), nn.Identity()], [None, None], height=args.res, width=args.res,
        dtype=dtype, device=device, lora_rank=args.lora_rank, gradient_checkpointing=not tiny)
    text_len, text_dim, pooled_dim = (16, 32, 32) if tiny else (512, 4096, 768)
    gen.cache.store["bench prompt"] = {  # what encode_prompts would cache for a real prompt
        "prompt_embeds": torch.randn(text_len, text_dim, device=device, dtype=dtype),
        "pooled_prompt_embeds": torch.randn(pooled_dim, device=device, dtype=dtype),
    }
    backbone = DinoV2Backbone(model=dino_model, device=device, dtype=dtype, resolution=56 if tiny else 518)
    return gen, backbone


@contextmanager
def timed(times: dict, key: str, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
    times[key] = times.get(key, 0.0) + time.perf_counter() - t


def forward_flops(gen, batch: int) -> float:
    """FLOPs of one velocity call on ``batch`` samples (matmuls + attention), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, *gen.latent_shape(), device=gen.device)
    cond = gen.encode_prompts(["bench prompt"] * batch)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        gen.velocity(x, torch.full((batch,), 0.5, device=gen.device), cond)
    return float(counter.get_total_flops())


def iteration(args, gen, backbone, optimizer, times: dict, seed: int) -> dict:
    from vipo.psm import PSMConfig, build_maps
    from vipo.rollout import rollout
    from vipo.update import select_timesteps, update

    device = gen.device
    g = torch.Generator().manual_seed(seed)
    sigmas = gen.sigmas(args.steps)
    with timed(times, "sampling", device):
        ro = rollout(gen, ["bench prompt"], args.group, sigmas, kind="flow_grpo", noise_level=0.7,
                     reduction="position", micro_batch=args.micro_batch, gen=g)
    with timed(times, "decode", device), torch.no_grad():
        images = torch.cat([gen.decode(ro.latents[-1, i:i + args.micro_batch])
                            for i in range(0, args.group, args.micro_batch)])  # [G, 3, H, W]
    with timed(times, "psm", device):
        feats = backbone.features(images)  # [G, 37, 37, 1024]
        maps = build_maps(feats, gen.map_grid(), PSMConfig())  # [G, H/8, W/8]
    rewards = torch.rand(args.group, generator=g).to(device)  # [G]
    adv = (rewards - rewards.mean()) / (rewards.std() + 1e-4)  # [G]
    adv = (maps.to(device) * adv.view(-1, 1, 1)).clamp(-5, 5)  # [G, H/8, W/8]
    steps = select_timesteps(args.steps, args.timestep_fraction, "first", g)
    with timed(times, "update", device):
        update(gen, optimizer, ro, adv, steps, kind="flow_grpo", noise_level=0.7, reduction="position",
               clip_range=1e-4, micro_batch=args.train_micro_batch, optimizer_steps=1, max_grad_norm=1.0,
               kl_coef=0.0)
    gen.eval()
    return {"trained_steps": len(steps)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", type=int, default=12)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--res", type=int, default=512)
    p.add_argument("--lora-rank", type=int, default=32)
    p.add_argument("--micro-batch", type=int, default=4, help="samples per forward in sampling/decoding")
    p.add_argument("--train-micro-batch", type=int, default=2, help="samples per forward+backward")
    p.add_argument("--timestep-fraction", type=float, default=0.6)
    p.add_argument("--iters", type=int, default=2, help="iterations; the first is warm-up")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak; default: by GPU name")
    p.add_argument("--tiny", action="store_true", help="miniature model on any device (checks the script)")
    args = p.parse_args(argv)

    if not torch.cuda.is_available() and not args.tiny:
        print("bench-gpu: no CUDA device here; nothing to measure (use --tiny to check the script on CPU).")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.res, args.group, args.steps, args.micro_batch, args.train_micro_batch = 64, 4, 3, 2, 2
    torch.manual_seed(0)
    t0 = time.perf_counter()
    gen, backbone = build(args, device)
    n_params = sum(p.numel() for p in gen.transformer.parameters())
    print(f"built in {time.perf_counter() - t0:.1f}s: transformer {n_params / 1e9:.2f}B parameters, "
          f"{sum(p.numel() for p in gen.trainable_parameters()) / 1e6:.1f}M trained, "
          f"latents {gen.latent_shape()}, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    optimizer = torch.optim.AdamW(gen.trainable_parameters(), lr=1e-5, weight_decay=1e-4)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for it in range(args.iters):
        times: dict = {}
        info = iteration(args, gen, backbone, optimizer, times, seed=it)
    total = sum(times.values())
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")

    f1 = forward_flops(gen, 1)  # one sample, one step
    flops = {
        "sampling": f1 * args.group * args.steps,
        "update": 3 * f1 * args.group * info["trained_steps"],
    }
    name = torch.cuda.get_device_name() if device.type == "cuda" else ""
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(f"iteration {total:.2f}s (last of {args.iters}); group {args.group}, {args.steps} steps, "
          f"{info['trained_steps']} trained, {args.res}x{args.res}")
    for k in ("sampling", "decode", "psm", "update"):
        line = f"  {k:9s} {times[k]:8.3f}s  {100 * times[k] / total:5.1f}%"
        if k in flops:
            tf = flops[k] / times[k] / 1e12
            line += f"  {tf:7.1f} TFLOP/s" + (f"  MFU {100 * tf / peak:5.1f}%" if peak else "")
        print(line)
    model_tf = (flops["sampling"] + flops["update"]) / total / 1e12
    mfu = model_tf / peak if peak else float("nan")
    print(f"  peak GPU memory {peak_gb:.1f} GiB; whole-iteration MFU {100 * mfu:.1f}% "
          f"(peak {peak} TFLOP/s bf16 dense)" if peak else f"  peak GPU memory {peak_gb:.1f} GiB")
    print(f"BENCH gpu_iter_s={total:.3f} psm_share={times['psm'] / total:.4f} peak_mem_gb={peak_gb:.2f} "
          f"mfu={mfu:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
