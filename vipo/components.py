"""Building a run's parts: the device, registered components placed on it, a checkpoint's trained weights, decoding
in micro-batches, and a finished run's generator rebuilt from its folder (``load_run_generator``). Shared by the
trainer, the evaluator and the figure scripts."""

from __future__ import annotations

from pathlib import Path

import torch

from vipo import checkpoints as ckpts
from vipo import dist
from vipo.generators import GENERATORS


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        spec = f"cuda:{dist.local_rank()}" if torch.cuda.is_available() else "cpu"
    return torch.device(spec)


def build_on(registry, component, device: torch.device):
    """Build a registered component; constructors that take ``device`` load straight onto it."""
    import inspect

    kwargs = dict(component.kwargs)
    target = registry.get(component.name)
    if "device" in inspect.signature(target).parameters and "device" not in kwargs:
        kwargs["device"] = device
    return target(**kwargs).to(device)


def load_trainable(named: dict, weights: dict, path: Path) -> None:
    """Copy a checkpoint's trained weights into the model's trainable parameters (same names required)."""
    differing = set(named) ^ set(weights)
    if differing:
        raise ValueError(f"checkpoint {path} does not match the model: differing parameters {sorted(differing)[:5]}")
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(weights[k])


def decode(generator, latents: torch.Tensor, micro_batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([generator.decode(latents[i:i + micro_batch]) for i in range(0, len(latents), micro_batch)])


def load_run_generator(run_dir: str | Path, use_ema: bool = True, device: str = "auto"):
    """Rebuild a run's generator from its ``config.yaml`` and load ``checkpoints/last.pt``
    (the EMA weights when the run kept them and ``use_ema``). Returns ``(generator, cfg)``."""
    from omegaconf import OmegaConf

    from vipo.config import validate

    run_dir = Path(run_dir)
    missing = [str(run_dir / f) for f, there in (("config.yaml", (run_dir / "config.yaml").exists()),
                                                  (ckpts.CHECKPOINT, ckpts.exists(run_dir))) if not there]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished or checkpointed run: {' and '.join(missing)} "
                                f"{'is' if len(missing) == 1 else 'are'} missing")
    cfg = validate(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))
    dev = resolve_device(device)
    generator = build_on(GENERATORS, cfg.generator, dev)
    state, path = ckpts.load_good(run_dir)
    weights = state["ema"] if use_ema and state.get("ema") else state["trainable"]
    load_trainable({n: p for n, p in generator.named_parameters() if p.requires_grad}, weights, path)
    return generator.eval(), cfg
