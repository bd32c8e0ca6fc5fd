"""The config schema: one dataclass per section of the composed config, with defaults and a comment per field
(``python train.py --cfg`` shows the composed values). ``vipo.config`` validates a composed dict into these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from vipo.attention import AttentionConfig
from vipo.psm import PSMConfig
from vipo.saliency import SaliencyConfig


@dataclass
class SDEConfig:
    kind: str = "flow_grpo"  # SDE step form: flow_grpo | dance_grpo | cps
    noise_level: float = 0.7  # Flow-GRPO noise level a, DanceGRPO eta, or CPS level (0 = ODE)
    num_steps: int = 10  # sampling steps T during rollouts
    logprob_reduction: str = "position"  # position: sum over channels per latent position; sample: mean over all
    same_noise_in_group: bool = False  # share the initial noise among the G samples of a prompt


@dataclass
class AdvantageConfig:
    mode: str = "map_x_advantage"  # scalar (GRPO) | map_x_advantage (ViPO) | map_x_reward | ones
    std_mode: str = "local"  # local: per-group std; global: batch std
    eps: float = 1e-6  # added to the std
    clamp: Optional[float] = 5.0  # advantages clamped to [-clamp, clamp]; null = off
    combine: str = "rewards"  # multi rewards: rewards (weighted sum, then normalise) | advantages (normalise each)


@dataclass
class MapConfig(PSMConfig):
    source: str = "backbone"  # where maps come from: backbone (PSM) | ones | random | saliency | attention | oracle(_inverse)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)  # options of source=saliency
    attention: AttentionConfig = field(default_factory=AttentionConfig)  # options of source=attention


@dataclass
class TrainConfig:
    iterations: int = 60  # GRPO iterations (rollout + update)
    prompts_per_iter: int = 4  # distinct prompts per iteration
    group_size: int = 8  # samples per prompt (G)
    prompts: str = "toy"  # prompt set: a registered name or a text file with one prompt per line
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    betas: tuple = (0.9, 0.999)  # AdamW betas
    lr_schedule: str = "constant"  # constant | linear | cosine (after warm-up)
    warmup_iters: int = 0  # linear warm-up length in iterations
    clip_range: float = 0.05  # PPO clip epsilon on the ratio
    timestep_fraction: float = 0.5  # fraction of the T steps trained each iteration
    timestep_selection: str = "random"  # random: random subset, random order (DanceGRPO); first: first k (Flow-GRPO)
    micro_batch: int = 8  # samples per forward/backward
    optimizer_steps_per_iter: int = 2  # the samples x timesteps work is split into this many optimizer steps
    inner_epochs: int = 1  # passes over the rollout per iteration
    max_grad_norm: Optional[float] = 1.0  # gradient-norm clip; null = off
    kl_coef: float = 0.0  # weight of the KL term to the frozen reference policy
    ema_decay: float = 0.0  # EMA of trained weights used for evaluation; 0 = off
    fsdp: bool = False  # shard the generator's network over processes (FSDP2); also on under accelerate's FSDP
    seed: int = 0  # everything random derives from (seed, iteration)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = auto: 1 per run when several run at once, else OMP_NUM_THREADS / cores
    checkpoint_every: int = 10  # iterations between checkpoints (and the last one)
    keep_checkpoints: bool = False  # keep every checkpoint instead of only the last
    log_every: int = 1  # iterations between progress lines


@dataclass
class EvalConfig:
    every: int = 10  # iterations between evaluations (0 = only at the end)
    schedule: list = field(default_factory=list)  # also evaluate after these iteration counts (0 = before training)
    micro_batch: int = 0  # ODE samples per forward pass; 0 = max(train.micro_batch, 16)
    num_samples: int = 64  # ODE samples per evaluation
    num_steps: int = 20  # ODE steps for evaluation
    seed: int = 1234  # fixed noise for evaluation samples
    metrics: list = field(default_factory=lambda: ["reward"])  # registered evaluators, e.g. [reward, toy]
    grid_samples: int = 16  # images in the saved sample / map grids (0 = none)


@dataclass
class LoggerConfig:
    name: str = "none"  # none | wandb
    project: str = "vipo"  # wandb project
    mode: str = "offline"  # wandb mode: offline | online | disabled
    group: Optional[str] = None  # W&B group; default: the sweep / study part / search the run belongs to
    job_type: Optional[str] = None  # W&B job type; default: the ablation cell (or trial, or method)
    tags: list = field(default_factory=list)  # extra W&B tags besides seed, reward, ablation, experiment, method


@dataclass
class Component:
    name: str  # registered name
    kwargs: dict  # constructor keyword arguments


@dataclass
class Config:
    generator: Component
    reward: Component
    backbone: Component
    sde: SDEConfig
    advantage: AdvantageConfig
    psm: MapConfig
    train: TrainConfig
    eval: EvalConfig
    logger: LoggerConfig
    experiment: str = "custom"  # experiment name (recorded in summary.json)
    run_id: Optional[str] = None  # run folder name; default <experiment>-<timestamp>
    results_root: str = "results/runs"  # where run folders go
    resume: Optional[str] = None  # a run folder to continue from its last checkpoint
    tags: dict = field(default_factory=dict)  # free-form identifying fields (sweep cell, ablation, ...)


_SECTIONS = {
    "sde": SDEConfig,
    "advantage": AdvantageConfig,
    "psm": MapConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "logger": LoggerConfig,
}
