"""The cost of one run from its composed config: parameters, FLOPs per iteration, memory per GPU.

Everything is per process (one GPU), as the trainer runs: each process samples ``prompts_per_iter x group_size``
outputs per iteration (``n``), so FLOPs per GPU do not depend on the number of GPUs; data parallelism only
multiplies GPU-hours. Counts are exact for the transformer, the reward model and the map backbone
(``torch.utils.flop_counter`` on the meta device at the configured shapes); prompt encoding (once per prompt,
cached), VAE decoding and the SDE arithmetic are not counted.

- rollout: ``T x n`` forwards (``x 2`` with classifier-free guidance);
- reward: ``n`` reward-model forwards; map: ``n x frames`` backbone forwards (PSM maps only);
- update: ``k = ceil(timestep_fraction x T)`` trained steps x ``n`` samples x (forward + backward as configured:
  LoRA or full, gradient checkpointing's recomputation; plus a no-grad unconditional forward when
  ``cfg_no_grad_uncond``, or a second differentiated branch without it; plus a reference forward if
  ``kl_coef > 0``) x ``inner_epochs``;
- eval: ``eval.num_samples x eval.num_steps`` ODE forwards and the reward, every ``eval.every`` iterations.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from vipo.plan import arch as A
from vipo.plan.flops import INPUTS, Shapes, _output, count
from vipo.plan.memory import GiB, Activations, activations, state_bytes
from vipo.plan.rewards import backbone_flops, reward_flops

PACKED = {"flux", "flux2", "qwen_image"}  # transformers that see 2x2-packed latents (in_channels = 4 x latent C)
CFG_FAMILIES = {"sd3", "qwen_image", "z_image", "wan", "toy"}  # true CFG; FLUX.1/FLUX.2 embed the guidance
CONTEXT_BYTES = GiB  # CUDA context and library workspaces
SLACK = 1.05  # allocator fragmentation


def generator_options(name: str, kwargs: dict) -> dict:
    """The generator's constructor defaults (the signature the config validator reads) updated with the config's
    keyword arguments; ``lora_target_modules`` defaults to the adapter's ``LORA_TARGETS``."""
    from vipo.generators import GENERATORS

    cls = GENERATORS.get(name)
    params = inspect.signature(cls).parameters
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(kwargs)
    out["lora_target_modules"] = out.get("lora_target_modules") or tuple(getattr(cls, "LORA_TARGETS", ()))
    return out


@dataclass
class Geometry:
    family: str
    frames: int  # pixel frames (1 for images)
    latent_frames: int
    height: int  # pixels
    width: int
    latent_channels: int
    latent_h: int
    latent_w: int
    text: int  # text tokens per forward

    def shapes(self, batch: int) -> Shapes:
        return Shapes(batch=batch, frames=self.latent_frames, height=self.latent_h, width=self.latent_w,
                      text=self.text, channels=self.latent_channels)

    @property
    def latent_numel(self) -> int:
        return self.latent_channels * self.latent_frames * self.latent_h * self.latent_w


def resolve_generator(name: str, opts: dict) -> tuple[A.GeneratorArch, Geometry]:
    if name == "toy":
        r = int(opts.get("resolution", 32))
        ga = A.GeneratorArch(path_or_id="toy", family="toy", transformer={
            "class": "vipo.toy.nets.build_unet", "config": {"resolution": r}, "source": "vipo/toy/nets.py"})
        return ga, Geometry("toy", 1, 1, r, r, 3, r, r, 0)
    path = opts.get("path_or_id")
    if not path:
        raise A.PlanError(f"plan error: generator {name!r} has no path_or_id; the planner looks the architecture "
                          "up by it")
    ga = A.generator_arch(path)
    cfg = ga.transformer["config"]
    h, w = int(opts.get("height", 512)), int(opts.get("width", 512))
    frames = int(opts.get("num_frames", 1)) if ga.family == "wan" else 1
    lat_f = (frames - 1) // 4 + 1 if ga.family == "wan" else 1
    c = cfg["in_channels"] // 4 if ga.family in PACKED else cfg["in_channels"]
    text = int(opts.get("max_sequence_length", 512)) + ga.text_tokens_extra
    return ga, Geometry(ga.family, frames, lat_f, h, w, c, h // ga.vae_spatial, w // ga.vae_spatial, text)


def _inputs(model, geo: Geometry, batch: int, dtype):
    if geo.family == "toy":
        r = geo.height
        return dict(sample=torch.zeros(batch, 3, r, r, device="meta"),  # [B, 3, r, r]
                    timestep=torch.zeros(batch, device="meta"),
                    class_labels=torch.zeros(batch, dtype=torch.long, device="meta"))
    return INPUTS.get(geo.family)(model, geo.shapes(batch), dtype)


def build_trainable(ga: A.GeneratorArch, opts: dict, checkpointing: bool):
    """The transformer on the meta device, set up to train as configured (LoRA adapters or everything)."""
    from vipo.generators.lora import configure_training

    dtype = A.dtype_of(opts.get("dtype", "float32"))
    model = ga.build(dtype)
    rank = int(opts.get("lora_rank", 0)) if ga.family != "toy" else 0
    configure_training(model, rank, opts.get("lora_alpha"), opts.get("lora_target_modules") or (),
                       gradient_checkpointing=checkpointing and ga.family != "toy")
    return model, dtype


@dataclass
class RunCost:
    experiment: str
    generator: str
    family: str
    params_total: int  # the generator's trained network(s)
    params_trainable: int
    flops: dict  # per GPU per iteration: rollout, reward, map, update, total; eval: per evaluation
    evaluations: int  # evaluations per run
    iterations: int
    memory: dict  # bytes per GPU by part, and the total
    settings: dict  # what the numbers assume (samples, steps, micro-batch, dtype, LoRA, checkpointing, FSDP)
    notes: list = field(default_factory=list)

    def fits(self, memory_gb: float) -> bool:
        return self.memory["required"] <= memory_gb * 1e9


def _frozen_bytes(ga: A.GeneratorArch, opts: dict, cfg) -> tuple[int, dict]:
    parts = {}
    gdt = A.dtype_of(opts.get("dtype", "float32")).itemsize
    for name in ga.text_encoders:
        parts[f"text:{name}"] = A.encoder_params(name) * gdt
    if ga.vae:
        parts[f"vae:{ga.vae}"] = A.encoder_params(ga.vae) * A.dtype_of(opts.get("vae_dtype", "float32")).itemsize
    r = A.reward_arch(cfg.reward.name)
    if r is not None:
        rdt = A.dtype_of(cfg.reward.kwargs.get("dtype", "float32")).itemsize
        parts[f"reward:{cfg.reward.name}"] = A.n_params(A.build(r)) * rdt
    b = A.backbone_arch(cfg.backbone.kwargs.get("path_or_id"))
    if b is not None and _uses_backbone(cfg):
        parts[f"backbone:{cfg.backbone.kwargs['path_or_id']}"] = A.n_params(A.build(b)) * A.dtype_of(
            cfg.backbone.kwargs.get("dtype", "float32")).itemsize
    return sum(parts.values()), parts


def _uses_backbone(cfg) -> bool:
    return cfg.advantage.mode != "scalar" and cfg.psm.source == "backbone"


def estimate(cfg, fsdp: Optional[int] = None, gpus: int = 1) -> RunCost:
    """Cost of the validated ``vipo.config.Config`` ``cfg``. ``fsdp``: shard degree (None: ``gpus`` when
    ``train.fsdp`` is on, else 1)."""
    opts = generator_options(cfg.generator.name, cfg.generator.kwargs)
    ga, geo = resolve_generator(cfg.generator.name, opts)
    t, sde = cfg.train, cfg.sde
    ckpt = bool(opts.get("gradient_checkpointing", False))
    fsdp = fsdp if fsdp is not None else (gpus if t.fsdp else 1)
    n = t.prompts_per_iter * t.group_size
    T = sde.num_steps
    k = max(1, math.ceil(t.timestep_fraction * T - 1e-9))
    cfg_on = geo.family in CFG_FAMILIES and float(opts.get("guidance_scale", 1.0)) > 1.0
    no_grad_uncond = bool(opts.get("cfg_no_grad_uncond", False))

    model, dtype = build_trainable(ga, opts, ckpt)
    f_fwd = count(model, _inputs(model, geo, 1, dtype))  # one sample, one forward
    f_train = count(model, _inputs(model, geo, 1, dtype), train=True)  # forward + backward (+ recompute)
    f_reward = reward_flops(cfg.reward.name, geo) if A.reward_arch(cfg.reward.name) else 0
    f_map = backbone_flops(cfg.backbone.kwargs.get("path_or_id"), geo) if _uses_backbone(cfg) else 0

    per_step_update = f_train
    if cfg_on:
        per_step_update += f_fwd if no_grad_uncond else f_train
    if t.kl_coef > 0:
        per_step_update += f_fwd
    flops = {"rollout": T * n * f_fwd * (2 if cfg_on else 1), "reward": n * f_reward, "map": n * f_map,
             "update": t.inner_epochs * k * n * per_step_update}
    flops["total"] = sum(flops.values())
    ev = cfg.eval
    flops["eval"] = ev.num_samples * (ev.num_steps * f_fwd * (2 if cfg_on else 1) + f_reward)
    evaluations = (t.iterations // ev.every if ev.every > 0 else 0) + 1 + len(
        [s for s in ev.schedule if s <= t.iterations])
    flops["forward_per_sample"] = f_fwd
    flops["train_per_sample_step"] = f_train

    # memory: activations measured without checkpointing at one sample, then composed for the configuration
    mem_model, _ = build_trainable(ga, opts, checkpointing=False)
    inp = _inputs(mem_model, geo, 1, dtype)
    mem_model.train()
    act1 = activations(mem_model, lambda: _output(mem_model(**inp)))
    branches = 2 if (cfg_on and not no_grad_uncond) else 1
    act = act1.scaled(t.micro_batch * branches)
    experts = ga.experts
    states = state_bytes(model, fsdp=fsdp)
    trained_experts = experts if opts.get("train_experts", "both") == "both" else 1
    frozen, frozen_parts = _frozen_bytes(ga, opts, cfg)
    buffer = (T + 1) * n * geo.latent_numel * 4 + T * n * geo.latent_frames * geo.latent_h * geo.latent_w * 4
    memory = {"weights": states.weights * experts, "grads": states.grads * trained_experts,
              "optimizer": states.optimizer * trained_experts, "activations": act.peak(ckpt),
              "frozen": frozen, "rollout_buffer": buffer, **{f"frozen/{k_}": v for k_, v in frozen_parts.items()}}
    memory["total"] = sum(memory[k_] for k_ in ("weights", "grads", "optimizer", "activations", "frozen",
                                                "rollout_buffer"))
    memory["required"] = int(memory["total"] * SLACK + CONTEXT_BYTES)
    memory["_act_one_sample"] = act1.__dict__
    total_params = A.n_params(model) * experts
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) * trained_experts
    settings = {"samples_per_gpu": n, "steps": T, "trained_steps": k, "micro_batch": t.micro_batch,
                "dtype": str(dtype).replace("torch.", ""), "lora_rank": int(opts.get("lora_rank", 0) or 0),
                "gradient_checkpointing": ckpt, "fsdp": fsdp, "cfg": cfg_on, "cfg_no_grad_uncond": no_grad_uncond,
                "tokens": geo.shapes(1).image_tokens if geo.family != "toy" else 0, "text_tokens": geo.text,
                "height": geo.height, "width": geo.width, "frames": geo.frames}
    notes = []
    if f_reward == 0 and cfg.reward.name not in ("redness", "object_brightness", "uniform_background", "centred"):
        notes.append(f"reward {cfg.reward.name!r} is not modelled (no FLOPs, no memory counted)")
    if cfg.advantage.mode != "scalar" and cfg.psm.source in ("saliency", "attention"):
        notes.append(f"psm.source={cfg.psm.source} is not modelled (its map costs are not counted)")
    elif _uses_backbone(cfg) and f_map == 0:
        notes.append(f"backbone {cfg.backbone.name!r} is not modelled (no FLOPs, no memory counted)")
    return RunCost(experiment=cfg.experiment, generator=ga.path_or_id, family=ga.family, params_total=total_params,
                   params_trainable=trainable, flops=flops, evaluations=evaluations, iterations=t.iterations,
                   memory=memory, settings=settings, notes=notes)


def memory_with(cost: RunCost, fsdp: int, micro_batch: Optional[int] = None, checkpointing: Optional[bool] = None,
                ) -> int:
    """Required bytes per GPU of the same run with another FSDP degree / micro-batch / checkpointing (the
    states divide by the degree; activations scale with the micro-batch)."""
    m, s = cost.memory, cost.settings
    a = Activations(**m["_act_one_sample"])
    mb = micro_batch or s["micro_batch"]
    branches = 2 if (s["cfg"] and not s["cfg_no_grad_uncond"]) else 1
    ck = s["gradient_checkpointing"] if checkpointing is None else checkpointing
    states = (m["weights"] + m["grads"] + m["optimizer"]) * s["fsdp"] / fsdp
    total = states + a.scaled(mb * branches).peak(ck) + m["frozen"] + m["rollout_buffer"]
    return int(total * SLACK + CONTEXT_BYTES)
