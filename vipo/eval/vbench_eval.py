"""``python -m vipo.eval ... metrics=[vbench]``: generate VBench's prompt suite, run VBench, record its scores.

    python -m vipo.eval experiment=wan_videoalign checkpoint=<run> metrics=[vbench] \\
        [vbench.dimensions=[temporal_flickering,...]] [vbench.prompts=standard|<file>] [vbench.samples_per_prompt=5]

1. The suite: VBench's own ``VBench_full_info.json`` (from the VBench environment's package) restricted to the
   requested dimensions, or a text file of prompts (``vipo.eval.vbench_suite``).
2. The sampling settings: ``experiments/vbench/<experiment>.yaml`` (the eval preset, with its source) when it
   exists, under the command line's ``num_steps=``, ``seed=``, ``vbench.samples_per_prompt=``,
   ``vbench.generator.<attr>=``.
3. Videos ``<out>/videos/<prompt>-<j>.mp4`` (VBench's names; sample ``j`` of prompt ``i`` from the ``j``-th
   normal draw of a generator seeded with ``seed + i``, as every vipo evaluation). Each file appears whole
   (written aside, then renamed); a rerun skips the videos already there. Under ``torchrun`` /
   ``accelerate launch`` each rank writes its share of the videos (rows ``rank::world``), then rank 0 scores.
4. VBench itself, in its own environment (``make vbench-env``), as a subprocess (``vipo/eval/vbench_runner.py``):
   one dimension at a time; a dimension whose weight files are absent from ``vbench.cache_dir`` is reported as
   missing with the files it wanted, never downloaded.
5. Records: ``<out>/vbench_summary.json`` and rows ``vbench_<dimension>``, ``vbench_quality`` /
   ``vbench_semantic`` / ``vbench_total`` appended to ``<run>/eval/summary.jsonl``. A total with dimensions
   missing is recorded as ``vbench_<total>_partial`` with the dimensions it covers, unless
   ``vbench.zero_fill=true`` (the published script's zero for an absent dimension).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

import torch

from vipo.config import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[2] / "experiments" / "vbench"
RUNNER = Path(__file__).resolve().with_name("vbench_runner.py")
SUBFOLDER = "vbench"  # <run>/eval/vbench (or <out>)


@dataclass
class VBenchOptions:
    dimensions: Optional[list] = None  # VBench dimensions (default: all 16)
    prompts: str = "standard"  # standard (VBench_full_info.json) | a text file, one prompt per line
    samples_per_prompt: Optional[int] = None  # videos per prompt (default: the preset's, else VBench's 5)
    preset: str = "auto"  # experiments/vbench/<name>.yaml; auto: the experiment's own; none: no preset
    generator: dict = field(default_factory=dict)  # sampling attributes set on the generator (height, width, ...)
    env: str = ".venv-vbench"  # the VBench environment (make vbench-env)
    cache_dir: Optional[str] = None  # VBench's model weights (default: $VBENCH_CACHE_DIR or ~/.cache/vbench)
    info_file: Optional[str] = None  # VBench_full_info.json (default: the one inside the environment's vbench)
    zero_fill: bool = False  # the published script's rule: an absent dimension scores 0 in the totals
    fps: Optional[int] = None  # frames per second written into the mp4 files (default: the preset's, else 16)
    device: Optional[str] = None  # device VBench runs on (default: the evaluation's; cpu when that is cpu)
    max_prompts: Optional[int] = None  # only the first N prompts of the suite (quick checks)


def parse_options(raw: Optional[dict]) -> VBenchOptions:
    from vipo.config import section

    raw = dict(raw or {})
    if isinstance(raw.get("dimensions"), str):
        raw["dimensions"] = [raw["dimensions"]]
    opts = section(VBenchOptions, raw, where="vbench", what="option")
    for key in ("samples_per_prompt", "fps", "max_prompts"):
        v = getattr(opts, key)
        if v is not None and v < 1:
            raise ConfigError(f"vbench.{key} must be >= 1, got {v}")
    return opts


# ------------------------------------------------------------------------------------------ preset
def load_preset(name: str) -> dict:
    """``experiments/vbench/<name>.yaml`` -> dict with keys generator, num_steps, samples_per_prompt, seed, fps."""
    import yaml

    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"vbench.preset={name!r}: no {path}; presets: {', '.join(known) or 'none'}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    allowed = {"generator", "num_steps", "samples_per_prompt", "seed", "fps"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; a preset holds {sorted(allowed)}")
    return data


def resolve_preset(opts: VBenchOptions, experiment: Optional[str]) -> tuple[Optional[str], dict]:
    if opts.preset == "none":
        return None, {}
    if opts.preset == "auto":
        if experiment and (PRESET_DIR / f"{experiment}.yaml").is_file():
            return experiment, load_preset(experiment)
        return None, {}
    return opts.preset, load_preset(opts.preset)


def apply_generator_settings(generator, settings: dict) -> dict:
    """Set sampling attributes (height, width, num_frames, guidance_scale, shift, negative_prompt, ...) on a
    loaded generator; returns what was set. An attribute the generator lacks is an error naming it."""
    applied = {}
    for key, value in settings.items():
        if not hasattr(generator, key):
            raise ConfigError(f"vbench preset sets generator.{key}, which {type(generator).__name__} does not have")
        setattr(generator, key, value)
        applied[key] = value
    if getattr(generator, "is_video", False) and hasattr(generator, "t_scale"):
        if (generator.num_frames - 1) % generator.t_scale:
            raise ConfigError(f"generator.num_frames={generator.num_frames} must be {generator.t_scale}k + 1")
    return applied


# ------------------------------------------------------------------------------------- environment
def env_python(env: str) -> Path:
    """``<env>/bin/python`` (a relative ``env`` from the working folder, else from the repository root)."""
    root = Path(env)
    if not root.is_absolute() and not root.is_dir() and (PRESET_DIR.parents[1] / env).is_dir():
        root = PRESET_DIR.parents[1] / env
    py = root.absolute() / "bin" / "python"
    if not py.is_file():
        raise FileNotFoundError(f"the VBench environment {env} does not exist ({py} is missing): build it with "
                                "`make vbench-env` (or give vbench.env=<folder>)")
    return py


def package_info_file(env: str) -> Path:
    env = str(env_python(env).parents[1])
    found = sorted(glob.glob(os.path.join(env, "lib", "python*", "site-packages", "vbench", "VBench_full_info.json")))
    if not found:
        raise FileNotFoundError(f"VBench_full_info.json not found in the VBench environment {env} "
                                "(make vbench-env, or vbench.info_file=<path>)")
    return Path(found[0])


# --------------------------------------------------------------------------------------- videos
def partial_dir(videos: Path, rank: int = 0) -> Path:
    """Where a rank writes a video before renaming it into ``videos`` (same file system, never read by VBench)."""
    return videos.with_name(videos.name + ".partial") / f"rank{rank}"


def write_mp4(video: torch.Tensor, path: Path, fps: int, tmp_dir: Optional[Path] = None) -> None:
    """video [3, F, H, W] in [0, 1] -> H.264 mp4 (imageio-ffmpeg; libx264, quality 8 as Wan's own
    ``cache_video``). Written to ``tmp_dir`` (default ``<videos>.partial/rank0``) and renamed, so the folder
    VBench reads holds only whole videos."""
    import imageio.v2 as imageio

    frames = (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()  # [F, H, W, 3]
    tmp_dir = tmp_dir or partial_dir(path.parent)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / path.name
    # macro_block_size=1: keep odd sizes as they are (VBench reads the frames, not a padded picture)
    with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                            ffmpeg_log_level="error") as w:
        for f in frames:
            w.append_data(f)
    os.replace(tmp, path)


def generate_videos(generator, suite, plan, videos: Path, num_steps: int, batch_size: int, fps: int,
                    rank: int = 0, world: int = 1) -> int:
    """Write this rank's share (``plan[rank::world]``) of the videos that are not there yet; returns how many."""
    from vipo.eval.run import start_noise
    from vipo.eval.vbench_suite import video_name
    from vipo.rollout import sample_ode
    from vipo.components import decode

    videos.mkdir(parents=True, exist_ok=True)
    mine = [r for r in plan[rank::world] if not (videos / video_name(suite[r[0]].prompt, r[1])).is_file()]
    done = len(plan[rank::world]) - len(mine)
    if done:
        print(f"[vipo.eval] rank {rank}: {done} videos already in {videos}, {len(mine)} to generate", flush=True)
    tic = time.perf_counter()
    n_batches = (len(mine) + batch_size - 1) // batch_size
    for b in range(n_batches):
        rows = mine[b * batch_size:(b + 1) * batch_size]
        prompts = [suite[i].prompt for i, _, _ in rows]
        noise = start_noise(rows, tuple(generator.latent_shape()))  # [n, C, F, H, W]
        lat = sample_ode(generator, prompts, num_steps, None, micro_batch=batch_size, noise=noise)
        frames = decode(generator, lat, batch_size)  # [n, 3, F, H, W] in [0, 1]
        for (i, j, _), video in zip(rows, frames):
            write_mp4(video, videos / video_name(suite[i].prompt, j), fps, partial_dir(videos, rank))
        print(f"[vipo.eval] rank {rank}: videos {min(len(mine), (b + 1) * batch_size)}/{len(mine)}  "
              f"{time.perf_counter() - tic:.1f}s", flush=True)
    return len(mine)


# ------------------------------------------------------------------------------------------ VBench
def run_vbench(env: str, videos: Path, out: Path, dimensions: List[str], mode: str, device: str, cache_dir: str,
               skip: Dict[str, List[str]], info_file: Optional[Path]) -> dict:
    """Run the runner in the VBench environment; returns its report ``{dimension: {...}}``."""
    from vipo.eval.vbench_suite import EXTRA_MODULES

    out.mkdir(parents=True, exist_ok=True)
    request = {"videos": str(videos.resolve()), "out": str(out.resolve()), "dimensions": dimensions, "mode": mode,
               "device": device, "cache_dir": str(Path(cache_dir).expanduser().resolve()), "skip": skip,
               "full_info": str(info_file.resolve()) if info_file else None,
               "modules": {d: list(EXTRA_MODULES.get(d, ())) for d in dimensions}}
    req_path = (out / "request.json").resolve()  # the runner starts in out/
    req_path.write_text(json.dumps(request, indent=1), encoding="utf-8")
    env_vars = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    cmd = [str(env_python(env)), str(RUNNER), str(req_path)]
    print(f"[vipo.eval] VBench: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, env=env_vars, cwd=str(out))
    report_path = out / "report.json"
    if not report_path.is_file():
        raise RuntimeError(f"VBench's run ended (exit code {proc.returncode}) without writing {report_path}")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if proc.returncode != 0:
        print(f"[vipo.eval] VBench's run exited with code {proc.returncode}; recording the dimensions it finished",
              flush=True)
        for d in dimensions:
            report.setdefault(d, {"status": "error", "error": f"VBench's run exited with code {proc.returncode}"})
    return report


def records(report: dict, zero_fill: bool) -> tuple[Dict[str, dict], Dict[str, dict]]:
    """-> (per-dimension records, totals) from the runner's report and VBench's own result files."""
    from vipo.eval.vbench import canonical_dimension, read_vbench_results, vbench_totals_covering

    dims: Dict[str, dict] = {}
    for dim, r in report.items():
        if r["status"] == "ok":
            res = read_vbench_results(r["file"])[canonical_dimension(dim)]
            dims[dim] = {"status": "ok", "value": res["score"], "n": res["n"], "file": r["file"],
                         "seconds": r.get("seconds")}
        else:
            dims[dim] = dict(r)
    scores = {d: r["value"] for d, r in dims.items() if r["status"] == "ok"}
    totals = vbench_totals_covering(scores, zero_fill=zero_fill) if scores else {}
    return dims, totals


def total_metric(name: str, t: dict) -> str:
    """``vbench_total`` for the published number (every dimension present, or zero-filled on request);
    ``vbench_total_partial`` for a mean over the dimensions present."""
    return f"vbench_{name}" if t["complete"] or t["zero_filled"] else f"vbench_{name}_partial"


# ------------------------------------------------------------------------------------------- main
def evaluate_vbench_suite(args) -> dict:
    """``metrics=[vbench]``: see the module docstring. ``args`` is a ``vipo.eval.run.EvalArgs``."""
    from vipo import dist
    from vipo.eval.run import checkpoint_iteration, load_model, read_run_config, records_path, sample_plan
    from vipo.eval.vbench_suite import (SuiteError, check_dimensions, custom_suite, default_cache_dir,
                                        missing_weights, read_full_info, standard_suite)
    from vipo.records import append_jsonl_atomic, atomic_write_json
    from vipo.components import resolve_device

    if list(args.metrics) != ["vbench"]:
        raise ConfigError(f"metrics=[vbench] generates its own videos; evaluate {[m for m in args.metrics if m != 'vbench']} "
                          "in a separate call")
    opts = parse_options(args.vbench)
    cfg = read_run_config(args.run) if args.run is not None else None
    experiment = args.experiment or (cfg.experiment if cfg is not None else None)
    preset_name, preset = resolve_preset(opts, experiment)
    num_steps = args.num_steps or preset.get("num_steps") or (cfg.eval.num_steps if cfg is not None else 20)
    spp = opts.samples_per_prompt or preset.get("samples_per_prompt") or 5
    seed = args.seed if args.seed is not None else preset.get("seed", 0)
    fps = opts.fps or preset.get("fps") or 16
    gen_settings = {**(preset.get("generator") or {}), **opts.generator}

    # everything that can fail without the model, first
    try:
        dimensions = check_dimensions(opts.dimensions)
        if opts.prompts == "standard":
            info_file = Path(opts.info_file) if opts.info_file else package_info_file(opts.env)
            suite, mode = standard_suite(read_full_info(info_file), dimensions), "vbench_standard"
        else:
            info_file = Path(opts.info_file) if opts.info_file else None
            suite, mode = custom_suite(opts.prompts, dimensions), "custom_input"
    except SuiteError as e:
        raise ConfigError(str(e)) from None
    env_python(opts.env)
    cache_dir = opts.cache_dir or default_cache_dir()
    missing = missing_weights(dimensions, cache_dir)
    runnable = [d for d in dimensions if d not in missing]
    for d, wanted in missing.items():
        print(f"[vipo.eval] VBench {d}: weights missing, reported as missing (wanted {', '.join(wanted)})", flush=True)
    suite = [p for p in suite if set(p.dimensions) & set(runnable)][: opts.max_prompts]
    if spp > 5 and mode == "vbench_standard":
        raise ConfigError(f"vbench.samples_per_prompt={spp}: VBench's standard mode reads at most 5 videos a prompt")

    out = Path(args.out) if args.out else (Path(args.run) / "eval" / SUBFOLDER if args.run is not None
                                           else Path("results/eval") / args.generator["name"] / SUBFOLDER)
    videos = out / "videos"
    dist.init()
    device = resolve_device(args.device)
    plan = sample_plan(len(suite), spp, seed)
    source = str(args.run) if args.run is not None else f"generator:{args.generator['name']}"
    if dist.is_main():
        print(f"[vipo.eval] {source}: VBench {mode}, {len(dimensions)} dimensions ({len(runnable)} with weights), "
              f"{len(suite)} prompts x {spp} videos, {num_steps} steps, seed {seed}, preset {preset_name} -> {out}",
              flush=True)
    iteration = checkpoint_iteration(Path(args.run)) if args.run is not None else None
    applied: dict = {}
    if suite and any(not (videos / _name(suite, i, j)).is_file() for i, j, _ in plan):
        generator, _, _ = load_model(args, cfg, device)
        if not getattr(generator, "is_video", False):
            raise ConfigError(f"metrics=[vbench] scores videos; {type(generator).__name__} generates images")
        applied = apply_generator_settings(generator, gen_settings)
        if dist.is_main() and applied:
            print(f"[vipo.eval] sampling settings: {applied}", flush=True)
        generate_videos(generator, suite, plan, videos, num_steps, args.batch_size, fps, dist.rank(),
                        dist.world_size())
        del generator
    dist.barrier()
    if not dist.is_main():
        return {}
    shutil.rmtree(videos.with_name(videos.name + ".partial"), ignore_errors=True)  # every rank has finished

    vb_device = opts.device or ("cpu" if device.type == "cpu" else "cuda")
    report = run_vbench(opts.env, videos, out / "results", dimensions, mode, vb_device, cache_dir, missing,
                        info_file if mode == "vbench_standard" else None)
    dims, totals = records(report, opts.zero_fill)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta = {"source": source, "prompt_set": "vbench" if mode == "vbench_standard" else f"vbench:{Path(opts.prompts).stem}",
            "iteration": iteration, "timestamp": stamp, "num_steps": num_steps, "samples_per_prompt": spp,
            "seed": seed, "use_ema": args.use_ema if args.run is not None else None, "out": str(out)}
    summary = {**meta, "mode": mode, "preset": preset_name, "sampling": {**applied, "fps": fps},
               "num_prompts": len(suite), "cache_dir": cache_dir, "zero_fill": opts.zero_fill,
               "dimensions": dims, "totals": totals}
    atomic_write_json(out / "vbench_summary.json", summary)
    rows = [{"metric": f"vbench_{d}", "value": r["value"], "std": None, "n": r["n"], "file": r["file"], **meta}
            for d, r in dims.items() if r["status"] == "ok"]
    rows += [{"metric": total_metric(k, t), "value": t["value"], "std": None, "n": None, "covers": t["covers"],
              "missing": t["missing"], "zero_filled": t["zero_filled"], **meta}
             for k, t in totals.items() if t["value"] is not None]
    if rows:
        append_jsonl_atomic(records_path(args, out), rows)
    for d, r in dims.items():
        if r["status"] == "ok":
            print(f"[vipo.eval] VBench {d:>24s}: {100 * r['value']:.4f}%  (n={r['n']}, {r['file']})", flush=True)
        elif r["status"] == "missing":
            print(f"[vipo.eval] VBench {d:>24s}: missing (wanted {', '.join(r['wanted'])})", flush=True)
        else:
            print(f"[vipo.eval] VBench {d:>24s}: error: {r['error']}", flush=True)
    for k, t in totals.items():
        if t["value"] is None:
            print(f"[vipo.eval] VBench {k:>8s}: not computed (no dimension of it scored)", flush=True)
            continue
        note = ("all dimensions" if t["complete"] else
                f"zero-filled {t['zero_filled']}" if t["zero_filled"] else
                f"PARTIAL, not VBench's number: covers {t['covers']}, {len(t['missing'])} missing")
        print(f"[vipo.eval] {total_metric(k, t):>22s}: {100 * t['value']:.2f}%  ({note})", flush=True)
    print(f"[vipo.eval] wrote {out / 'vbench_summary.json'}; appended {len(rows)} rows to {records_path(args, out)}",
          flush=True)
    return summary


def _name(suite, i: int, j: int) -> str:
    from vipo.eval.vbench_suite import video_name

    return video_name(suite[i].prompt, j)
