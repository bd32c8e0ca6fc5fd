"""``evaluate(EvalArgs)``: generate with fixed seeds, score in batches, write per-sample and summary records.

Sample ``j`` of prompt ``i`` starts from the ``j``-th standard-normal draw of a generator seeded with
``seed + i``, so scores do not depend on the batch size or on how many samples per prompt are asked for.
Outputs (in ``out``): ``scores.parquet`` (prompt_index, prompt, sample, seed, one column per per-sample
score), ``summary.json`` and ``samples.png``; plus one row per metric appended to ``<run>/eval/summary.jsonl``
(``<out>/../summary.jsonl`` for a base model).
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

from vipo.config import ConfigError, dotlist, section

DEFAULT_NUM_STEPS = 20  # ODE steps for a base model (a run uses its eval.num_steps)


@dataclass
class EvalArgs:
    run: Optional[str] = None  # run folder (config.yaml + checkpoints/last.pt) to evaluate
    checkpoint: Optional[str] = None  # the same as run= (a run folder)
    experiment: Optional[str] = None  # experiment name: its generator when no run is given; its VBench preset
    generator: Optional[dict] = None  # base model instead of a run: generator=<name> generator.<kwarg>=...
    reward: Optional[dict] = None  # reward behind metric "reward" (default: the run's training reward)
    prompts: Optional[str] = None  # prompt set name or text file (default: the run's train.prompts)
    metrics: list = field(default_factory=lambda: ["reward"])  # names in EVALUATORS or REWARDS
    metric_kwargs: dict = field(default_factory=dict)  # metric -> constructor kwargs (metric_kwargs.hps.path_or_id=..)
    samples_per_prompt: int = 1  # samples generated per prompt
    num_steps: Optional[int] = None  # Euler ODE steps (default: the run's eval.num_steps, else 20)
    seed: Optional[int] = None  # prompt i's samples come from a generator seeded with seed + i (default 0)
    batch_size: int = 8  # samples generated and scored together
    use_ema: bool = True  # evaluate the EMA weights when the run kept them
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_prompts: Optional[int] = None  # evaluate only the first N prompts (quick checks)
    grid_samples: int = 16  # images in samples.png (0 = none)
    out: Optional[str] = None  # output folder (default <run>/eval/<prompt set>, or results/eval/<generator>/<set>)
    vbench_results: Optional[list] = None  # VBench result files/folders: totals only, no generation
    vbench: Optional[dict] = None  # metrics=[vbench] options: vbench.dimensions=[...] vbench.prompts=... (vipo.eval.vbench_eval)


COMPONENT_KEYS = ("generator", "reward")  # options given as name=<x> plus <name>.<kwarg>=<y>


def parse_args(argv: list[str]) -> EvalArgs:
    """``key=value`` overrides (``vipo.config.dotlist``; a leading ``+`` is ignored) -> ``EvalArgs``."""
    items = []
    for a in argv:
        key, eq, value = a.lstrip("+").partition("=")
        if not eq:
            raise ConfigError(f"eval option {a!r} is not key=value; options: {', '.join(_fields())}")
        items.append(f"{key}.name={value}" if key in COMPONENT_KEYS else a)  # generator=toy -> generator.name=toy
    return build_args(dotlist(items, "eval option"))


def _fields() -> list[str]:
    return [f.name for f in dataclasses.fields(EvalArgs)]


def build_args(raw: dict) -> EvalArgs:
    raw = {k: [v] if k in ("metrics", "vbench_results") and isinstance(v, str) else v for k, v in raw.items()}
    args = section(EvalArgs, raw, what="eval option")
    if args.checkpoint is not None:
        if args.run is not None and args.run != args.checkpoint:
            raise ConfigError("give one of run=<run folder> or checkpoint=<run folder>, not both")
        args.run = args.checkpoint
    if args.experiment is not None and args.run is None and args.generator is None:
        args.generator = experiment_generator(args.experiment)
    if args.vbench is not None and "vbench" not in args.metrics:
        raise ConfigError("vbench.<option> given but metrics does not list vbench (metrics=[vbench])")
    for key in ("samples_per_prompt", "batch_size"):
        if getattr(args, key) < 1:
            raise ConfigError(f"eval option {key} must be >= 1, got {getattr(args, key)}")
    if args.num_steps is not None and args.num_steps < 1 or args.max_prompts is not None and args.max_prompts < 1:
        raise ConfigError("eval options num_steps and max_prompts must be >= 1")
    if args.vbench_results is None:
        if (args.run is None) == (args.generator is None):
            raise ConfigError("give exactly one of run=<run folder> or generator=<registered generator>")
        if not args.metrics:
            raise ConfigError("metrics is empty; e.g. metrics=[reward]")
    unknown = sorted(set(args.metric_kwargs) - set(args.metrics))
    if unknown:
        raise ConfigError(f"metric_kwargs for metrics that are not evaluated: {unknown} (metrics={args.metrics})")
    return args


def experiment_generator(name: str) -> dict:
    """The generator (``{"name", **kwargs}``) that ``experiments/experiment/<name>.yaml`` trains."""
    from vipo.config import CONFIG_DIR, load

    if not (Path(CONFIG_DIR) / "experiment" / f"{name}.yaml").is_file():
        known = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
        raise ConfigError(f"unknown experiment {name!r}; experiments: {', '.join(known)}")
    cfg, _ = load([f"experiment={name}"])
    return {"name": cfg.generator.name, **cfg.generator.kwargs}


# ------------------------------------------------------------------------------------------ loading
def checkpoint_iteration(run_dir: Path) -> Optional[int]:
    """The iteration stored in ``checkpoints/last.pt`` (memory-mapped, so the weights are not read)."""
    from vipo.checkpoints import CHECKPOINT

    state = torch.load(run_dir / CHECKPOINT, map_location="cpu", mmap=True, weights_only=False)
    return int(state["iteration"]) if "iteration" in state else None


def read_run_config(run: str):
    """A run folder's validated config, or a FileNotFoundError naming what is missing."""
    from omegaconf import OmegaConf

    from vipo.config import validate
    from vipo.checkpoints import CHECKPOINT

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    for need in ("config.yaml", CHECKPOINT):
        if not (run_dir / need).is_file():
            raise FileNotFoundError(f"{run_dir} is not a checkpointed run folder: {run_dir / need} is missing")
    return validate(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))


def load_model(args: EvalArgs, cfg, device: torch.device):
    """-> (generator, reward or None, checkpoint iteration or None)."""
    from vipo.config import _component
    from vipo.generators import GENERATORS
    from vipo.rewards import REWARDS
    from vipo.components import build_on, load_run_generator

    iteration = None
    if args.run is not None:
        generator, _ = load_run_generator(args.run, use_ema=args.use_ema, device=str(device))
        iteration = checkpoint_iteration(Path(args.run))
    else:
        generator = build_on(GENERATORS, _component(GENERATORS, args.generator, "generator"), device).eval()
    reward = None
    if "reward" in args.metrics and "model" not in args.metric_kwargs.get("reward", {}):
        if args.reward is not None:
            reward = build_on(REWARDS, _component(REWARDS, args.reward, "reward"), device)
        elif cfg is not None:
            reward = build_on(REWARDS, cfg.reward, device)
        else:
            raise ConfigError("metric 'reward' needs reward=<registered reward> when evaluating a base generator")
    return generator, reward, iteration


def build_metrics(args: EvalArgs, reward, device: torch.device) -> dict:
    from vipo.eval import build_metric

    return {name: build_metric(name, reward=reward, device=device, **args.metric_kwargs.get(name, {}))
            for name in args.metrics}


# ------------------------------------------------------------------------------------- generation
def sample_plan(num_prompts: int, samples_per_prompt: int, seed: int) -> list[tuple[int, int, int]]:
    """(prompt index, sample index, seed) of every sample, prompt-major."""
    return [(i, j, seed + i) for i in range(num_prompts) for j in range(samples_per_prompt)]


def start_noise(plan: list[tuple[int, int, int]], shape: tuple) -> torch.Tensor:
    """Noise [N, *shape] for ``plan`` rows: row (i, j, s) is the j-th draw of a generator seeded with s."""
    out = []
    for i, j, s in plan:
        g = torch.Generator().manual_seed(s)
        for _ in range(j + 1):
            x = torch.randn(*shape, generator=g)  # [C, (F), H, W]
        out.append(x)
    return torch.stack(out)  # [N, C, (F), H, W]


def generate_and_score(generator, prompts: list[str], plan, metrics: dict, num_steps: int, batch_size: int,
                       grid_samples: int) -> tuple[dict, dict, torch.Tensor | None]:
    """-> (per-sample columns {name: [N]}, set-level values, first ``grid_samples`` images)."""
    from vipo.rollout import sample_ode
    from vipo.components import decode

    columns: dict[str, list[torch.Tensor]] = {}
    owner: dict[str, str] = {}
    grid: list[torch.Tensor] = []
    n_batches = (len(plan) + batch_size - 1) // batch_size
    tic = time.perf_counter()
    for b in range(n_batches):
        rows = plan[b * batch_size:(b + 1) * batch_size]
        batch_prompts = [prompts[i] for i, _, _ in rows]
        noise = start_noise(rows, tuple(generator.latent_shape()))  # [n, C, (F), H, W]
        lat = sample_ode(generator, batch_prompts, num_steps, None, micro_batch=batch_size, noise=noise)
        images = decode(generator, lat, batch_size)  # [n, 3, (F), H, W] in [0, 1]
        for name, metric in metrics.items():
            for col, s in metric.scores(images, batch_prompts).items():
                if owner.setdefault(col, name) != name:
                    raise ValueError(f"metrics {owner[col]!r} and {name!r} both write the column {col!r}")
                if s.shape != (len(rows),):
                    raise ValueError(f"metric {name!r} column {col!r}: expected [{len(rows)}] scores, "
                                     f"got shape {tuple(s.shape)}")
                columns.setdefault(col, []).append(s.double().cpu())
        if sum(len(g) for g in grid) < grid_samples:
            grid.append(images[: grid_samples - sum(len(g) for g in grid)].cpu())
        print(f"[vipo.eval] batch {b + 1}/{n_batches}  samples {min(len(plan), (b + 1) * batch_size)}/{len(plan)}"
              f"  {time.perf_counter() - tic:.1f}s", flush=True)
    set_level: dict[str, float] = {}
    for name, metric in metrics.items():
        for key, v in metric.finish().items():
            if key in columns or key in set_level:
                raise ValueError(f"metric {name!r}: set-level value {key!r} clashes with another column")
            set_level[key] = float(v)
    return {c: torch.cat(v) for c, v in columns.items()}, set_level, (torch.cat(grid) if grid else None)


# ------------------------------------------------------------------------------------------ records
def write_parquet(df, path: Path) -> None:
    from vipo.records import atomic_write_bytes

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def default_out(args: EvalArgs, set_name: str) -> Path:
    if args.out:
        return Path(args.out)
    if args.run is not None:
        return Path(args.run) / "eval" / set_name
    return Path("results/eval") / args.generator["name"] / set_name


def records_path(args: EvalArgs, out: Path) -> Path:
    return (Path(args.run) / "eval" if args.run is not None else out.parent) / "summary.jsonl"


def evaluate(args: EvalArgs) -> dict:
    """Run the evaluation described by ``args``; returns the summary (also written to ``<out>/summary.json``)."""
    import pandas as pd

    from vipo.images import save_image_grid
    from vipo.prompts import load_prompts, prompt_set_name
    from vipo.records import append_jsonl_atomic, atomic_write_json
    from vipo.components import resolve_device

    from vipo.eval import metric_names

    known = metric_names()
    unknown = [m for m in args.metrics if m not in known]
    if unknown:
        close = [c for m in unknown for c in difflib.get_close_matches(m, known, n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(f"unknown metric(s) {unknown}{hint}; known metrics: {', '.join(known)}")
    cfg = read_run_config(args.run) if args.run is not None else None
    spec = args.prompts or (cfg.train.prompts if cfg is not None else None)
    if spec is None:
        raise ConfigError("prompts=<set name or text file> is required when evaluating a base generator")
    prompts = load_prompts(spec)[: args.max_prompts]  # before loading the model: fail fast
    device = resolve_device(args.device)
    generator, reward, iteration = load_model(args, cfg, device)
    metrics = build_metrics(args, reward, device)
    set_name = prompt_set_name(spec)
    num_steps = args.num_steps or (cfg.eval.num_steps if cfg is not None else DEFAULT_NUM_STEPS)
    out = default_out(args, set_name)
    plan = sample_plan(len(prompts), args.samples_per_prompt, args.seed or 0)
    source = str(args.run) if args.run is not None else f"generator:{args.generator['name']}"
    print(f"[vipo.eval] {source}: {len(prompts)} prompts ({set_name}) x {args.samples_per_prompt} samples, "
          f"{num_steps} steps, metrics {list(metrics)} -> {out}", flush=True)

    columns, set_level, images = generate_and_score(generator, prompts, plan, metrics, num_steps, args.batch_size,
                                                    args.grid_samples)
    table = {"prompt_index": [i for i, _, _ in plan], "prompt": [prompts[i] for i, _, _ in plan],
             "sample": [j for _, j, _ in plan], "seed": [s for _, _, s in plan]}
    df = pd.DataFrame({**table, **{c: v.numpy() for c, v in columns.items()}})
    write_parquet(df, out / "scores.parquet")
    if images is not None and args.grid_samples > 0:
        save_image_grid(images, out / "samples.png", nrow=8, scale=2 if images.shape[-1] <= 64 else 1)

    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results = {c: {"value": float(v.mean()), "std": float(v.std(unbiased=False)), "n": len(v)}
               for c, v in columns.items()}
    results.update({k: {"value": v, "std": None, "n": len(plan)} for k, v in set_level.items()})
    meta = {"source": source, "prompt_set": set_name, "prompts_spec": spec, "iteration": iteration,
            "num_prompts": len(prompts), "samples_per_prompt": args.samples_per_prompt, "num_steps": num_steps,
            "seed": args.seed or 0, "use_ema": args.use_ema if args.run is not None else None, "timestamp": stamp,
            "out": str(out), "metrics": list(metrics)}
    summary = {**meta, "results": results}
    atomic_write_json(out / "summary.json", summary)
    rows = [{"metric": name, **r, **{k: meta[k] for k in ("prompt_set", "iteration", "timestamp", "source",
                                                          "num_steps", "samples_per_prompt", "seed", "use_ema",
                                                          "out")}}
            for name, r in results.items()]
    append_jsonl_atomic(records_path(args, out), rows)
    for name, r in results.items():
        std = f" ± {r['std']:.4f}" if r["std"] is not None else ""
        print(f"[vipo.eval] {name:>24s}: {r['value']:.4f}{std}  (n={r['n']})", flush=True)
    print(f"[vipo.eval] wrote {out / 'scores.parquet'}, {out / 'summary.json'}; appended {len(rows)} rows to "
          f"{records_path(args, out)}", flush=True)
    return summary


def evaluate_vbench(args: EvalArgs) -> dict:
    """VBench Quality / Semantic / Total from per-dimension results files (no generation)."""
    from vipo.eval.vbench import read_vbench_results, vbench_totals
    from vipo.records import append_jsonl_atomic, atomic_write_json

    dims = read_vbench_results(args.vbench_results)
    totals = vbench_totals({d: r["score"] for d, r in dims.items()})
    first = Path(args.vbench_results[0])
    out = Path(args.out) if args.out else (Path(args.run) / "eval" / "vbench" if args.run is not None
                                           else (first if first.is_dir() else first.parent))
    iteration = checkpoint_iteration(Path(args.run)) if args.run is not None else None
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary = {"source": args.run, "prompt_set": "vbench", "iteration": iteration, "timestamp": stamp,
               "results": {f"vbench_{k}": {"value": v, "std": None, "n": None} for k, v in totals.items()},
               "dimensions": dims}
    atomic_write_json(out / "vbench_summary.json", summary)
    rows = [{"metric": k, **r, "prompt_set": "vbench", "iteration": iteration, "timestamp": stamp,
             "source": args.run, "out": str(out)} for k, r in summary["results"].items()]
    append_jsonl_atomic((Path(args.run) / "eval" if args.run is not None else out) / "summary.jsonl", rows)
    for k, v in totals.items():
        print(f"[vipo.eval] VBench {k:>8s}: {100 * v:.2f}%", flush=True)
    return summary
