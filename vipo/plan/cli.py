"""``python -m vipo.plan experiment=<name> [overrides...] [gpus=8] [gpu=h100] [mfu=0.4] [fsdp=N] [margin=1.5]``.
``python -m vipo.plan all [...]``: every experiment file in one table.

Prints the run's parameters, FLOPs per iteration (rollout, reward, map, update), peak memory per GPU with its
verdict on the chosen GPU, and time per iteration and GPU-hours at the stated MFU; writes the same as JSON
(``results/plans/<experiment>.json``, or ``out=<file>``). ``sweep.py ablation=<name> plan`` and
``sweep.py study=<name> plan`` do it for every run of an ablation or study (``plan_runs``), adding the sum and
the SLURM resources each run needs, written beside the sweep's or study's results as ``plan.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from vipo.plan.arch import PlanError
from vipo.plan.estimate import RunCost, estimate, memory_with
from vipo.plan.gpus import DEFAULT_MFU, gpu_spec, seconds, slurm_resources

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ("gpus", "gpu", "mfu", "fsdp", "margin", "out")


def split_options(argv: Sequence[str]) -> tuple[dict, list[str]]:
    """Planner options (``gpus=``, ``gpu=``, ``mfu=``, ``fsdp=``, ``margin=``, ``out=``) and Hydra overrides."""
    opts, rest = {}, []
    for a in argv:
        key = a.split("=", 1)[0]
        if key in OPTIONS and "=" in a:
            opts[key] = a.split("=", 1)[1]
        else:
            rest.append(a)
    try:
        out = {"gpus": int(opts.get("gpus", 8)), "gpu": opts.get("gpu", "h100"),
               "mfu": float(opts.get("mfu", DEFAULT_MFU)), "fsdp": int(opts["fsdp"]) if "fsdp" in opts else None,
               "margin": float(opts.get("margin", 1.5)), "out": opts.get("out")}
    except ValueError as e:
        raise PlanError(f"plan error: bad planner option ({e}); gpus/fsdp are integers, mfu/margin numbers") from None
    if out["gpus"] < 1:
        raise PlanError(f"plan error: gpus must be >= 1, got {out['gpus']}")
    gpu_spec(out["gpu"])
    return out, rest


def verdict(cost: RunCost, memory_gb: float, gpus: int) -> str:
    """'fits on 80 GB with ...' or what it would take (FSDP degree, micro-batch 1, gradient checkpointing)."""
    s = cost.settings
    how = (f"{'LoRA r' + str(s['lora_rank']) if s['lora_rank'] else 'full fine-tuning'}, {s['dtype']}, "
           f"micro-batch {s['micro_batch']}, checkpointing {'on' if s['gradient_checkpointing'] else 'off'}, "
           f"FSDP {s['fsdp']}")
    need = cost.memory["required"] / 1e9
    if need <= memory_gb:
        return f"fits on {memory_gb:g} GB with {how} ({need:.1f} GB)"
    for degree in sorted({d for d in (2, 4, 8, 16, 32, gpus) if s["fsdp"] < d <= gpus}):
        for mb, ck in ((s["micro_batch"], s["gradient_checkpointing"]), (1, True)):
            req = memory_with(cost, degree, mb, ck) / 1e9
            if req <= memory_gb:
                extra = "" if (mb, ck) == (s["micro_batch"], s["gradient_checkpointing"]) else \
                    ", micro-batch 1, gradient checkpointing"
                return (f"does not fit on {memory_gb:g} GB with {how} ({need:.1f} GB); fits with FSDP over "
                        f"{degree} GPUs{extra} ({req:.1f} GB)")
    req = memory_with(cost, max(s["fsdp"], gpus), 1, True) / 1e9
    return (f"does not fit on {memory_gb:g} GB with {how} ({need:.1f} GB), nor with FSDP over all {gpus} GPUs, "
            f"micro-batch 1 and checkpointing ({req:.1f} GB)")


def summarise(cost: RunCost, gpus: int, gpu: str, mfu: float, margin: float) -> dict:
    spec = gpu_spec(gpu)
    f = cost.flops
    t_iter = seconds(f["total"], gpu, mfu)
    t_eval = seconds(f["eval"], gpu, mfu)
    hours = (cost.iterations * t_iter + cost.evaluations * t_eval) / 3600
    weights = cost.memory["weights"] * cost.settings["fsdp"] + cost.memory["frozen"]  # one full copy per process
    host_gb = 32 + min(gpus, 8) * weights / 1e9
    return {
        "experiment": cost.experiment, "generator": cost.generator, "family": cost.family,
        "params": {"total": cost.params_total, "trainable": cost.params_trainable},
        "flops_per_gpu_per_iteration": {k: f[k] for k in ("rollout", "reward", "map", "update", "total")},
        "flops_per_evaluation": f["eval"], "evaluations": cost.evaluations, "iterations": cost.iterations,
        "memory_bytes_per_gpu": {k: v for k, v in cost.memory.items() if not k.startswith("_")},
        "gpu": {"name": gpu, **spec}, "gpus": gpus, "mfu": mfu,
        "seconds_per_iteration": t_iter, "seconds_per_evaluation": t_eval,
        "hours_wall": hours, "gpu_hours": hours * gpus,
        "verdict": verdict(cost, spec["memory_gb"], gpus),
        "slurm": slurm_resources(gpus, hours, host_gb, margin),
        "settings": cost.settings, "notes": cost.notes,
    }


def _e(x: float) -> str:
    return f"{x / 1e15:.3f} PFLOP"


def render(s: dict) -> str:
    f = s["flops_per_gpu_per_iteration"]
    m = s["memory_bytes_per_gpu"]
    st = s["settings"]
    lines = [
        f"{s['experiment']}: {s['generator']} ({st['height']}x{st['width']}"
        + (f", {st['frames']} frames" if st["frames"] > 1 else "") + f", {st['tokens']} image tokens, "
        f"{st['text_tokens']} text tokens)",
        f"  parameters: {s['params']['total'] / 1e9:.3f} B total, {s['params']['trainable'] / 1e9:.4f} B trainable",
        f"  per GPU per iteration ({st['samples_per_gpu']} samples, {st['steps']} steps, {st['trained_steps']} trained"
        f"{', CFG' if st['cfg'] else ''}): rollout {_e(f['rollout'])}, reward {_e(f['reward'])}, map {_e(f['map'])}, "
        f"update {_e(f['update'])}, total {_e(f['total'])}",
        f"  evaluation: {_e(s['flops_per_evaluation'])} x {s['evaluations']}",
        "  memory per GPU: " + ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in m.items()
                                          if "/" not in k and k not in ("total", "required"))
        + f"; total {m['total'] / 1e9:.1f} GB, with context and slack {m['required'] / 1e9:.1f} GB",
        f"  {s['verdict']}",
        f"  at {s['mfu']:.0%} MFU on {s['gpu']['name']} ({s['gpu']['bf16_tflops']} TFLOPS bf16): "
        f"{s['seconds_per_iteration']:.1f} s/iteration, {s['seconds_per_evaluation']:.1f} s/evaluation; "
        f"{s['iterations']} iterations on {s['gpus']} GPUs: {s['hours_wall']:.2f} h, {s['gpu_hours']:.1f} GPU-hours",
        "  slurm: " + " ".join(f"{k}={v}" for k, v in s["slurm"].items()),
        *(f"  note: {n}" for n in s.get("notes", [])),
    ]
    return "\n".join(lines)


def plan_one(overrides: Sequence[str], opts: dict, cache: Optional[dict] = None) -> dict:
    """Plan the run ``overrides`` compose to. ``cache``: reuse the estimate of a run that differs only in what
    costs nothing (seed, run folder, tags, PSM settings other than the map source)."""
    from vipo.config import load

    cfg, raw = load(list(overrides))
    key = json.dumps({k: raw.get(k) for k in ("generator", "reward", "backbone", "sde", "eval", "experiment")}
                     | {"train": {k: v for k, v in raw["train"].items() if k != "seed"},
                        "advantage": raw["advantage"]["mode"], "map": raw["psm"].get("source")}, sort_keys=True,
                     default=str)
    if cache is not None and key in cache:
        cost = cache[key]
    else:
        cost = estimate(cfg, fsdp=opts["fsdp"], gpus=opts["gpus"])
        if cache is not None:
            cache[key] = cost
    return summarise(cost, opts["gpus"], opts["gpu"], opts["mfu"], opts["margin"])


def plan_runs(runs: Sequence[tuple[str, list[str]]], opts: dict, title: str, out: Path) -> dict:
    """Plan every ``(label, overrides)`` run (identical configs are planned once); print a table and the sum,
    and write ``out`` (JSON)."""
    cache: dict = {}
    rows = []
    for i, (label, ov) in enumerate(runs):
        print(f"[plan] {i + 1}/{len(runs)} {label}", file=sys.stderr, flush=True)
        rows.append({"run": label, **plan_one(ov, opts, cache)})
    total = {"runs": len(rows), "gpu_hours": sum(r["gpu_hours"] for r in rows),
             "flops": sum(r["flops_per_gpu_per_iteration"]["total"] * r["iterations"] * r["gpus"]
                          + r["flops_per_evaluation"] * r["evaluations"] for r in rows)}
    doc = {"title": title, "gpu": opts["gpu"], "gpus_per_run": opts["gpus"], "mfu": opts["mfu"], "total": total,
           "runs": rows}
    print(table(rows, title))
    print(f"sum over {total['runs']} runs: {total['gpu_hours']:.1f} GPU-hours")
    print("\nmemory verdicts:")
    groups: dict = {}
    for r in rows:  # runs with the same verdict on one line
        groups.setdefault(r["verdict"] + "".join(f" [{n}]" for n in r.get("notes", [])), []).append(r["run"])
    for line, names in groups.items():
        who = names[0] if len(names) == 1 else f"{len(names)} runs ({names[0]} ... {names[-1]})"
        print(f"- {who}: {line}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"wrote {out}")
    return doc


def _seeds(value: Optional[str], default) -> list[int]:
    if value is None:
        return list(default or [0])
    if value.startswith("["):
        return [int(v) for v in value.strip("[]").split(",") if v.strip()]
    return list(range(int(value)))


def plan_sweep(argv: Sequence[str]) -> int:
    """``sweep.py ablation=<name>|study=<name> plan [seeds=N] [overrides] [gpus= gpu= mfu= ...]``: the cost of
    every run before launch, written beside the sweep's or study's results as ``plan.json``."""
    from vipo.config import ConfigError

    argv = list(argv)
    named = {k: next((a.split("=", 1)[1] for a in argv if a.startswith(k + "=")), None)
             for k in ("ablation", "study", "seeds")}
    argv = [a for a in argv if a.split("=", 1)[0] not in named]
    try:
        opts, extra = split_options(argv)
        if named["study"]:
            from vipo.study import load_study, plan_study, study_root

            spec = load_study(named["study"])
            runs, _ = plan_study(named["study"], extra)
            items = [(f"{r.reward}/{r.cell.run_dir.name}", [*r.cell.overrides, f"train.seed={r.cell.seed}"])
                     for r in runs]
            out, title = study_root(spec) / "plan.json", f"study {named['study']}: {len(items)} runs"
        elif named["ablation"]:
            from vipo.sweep import cell_overrides, default_root, load_ablation, plan

            name = named["ablation"]
            spec = load_ablation(name)
            root = default_root(name, extra)
            cells = plan(name, _seeds(named["seeds"], spec.get("seeds")), extra, root)
            items = [(f"{c.name}-s{c.seed}", cell_overrides(c, name, root, extra)) for c in cells]
            out = root / "plan.json"
            title = f"ablation {name}: {len(items)} runs ({spec.get('table', name)})"
        else:
            print("sweep.py plan needs ablation=<name> or study=<name>", file=sys.stderr)
            return 2
        plan_runs(items, opts, title, Path(opts["out"]) if opts["out"] else out)
    except (PlanError, ConfigError) as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


def table(rows: Sequence[dict], title: str) -> str:
    head = ("| run | generator | trainable | PFLOP/iter/GPU | s/iter | GB/GPU | fits | GPU-h | slurm |\n"
            "|---|---|---|---|---|---|---|---|---|")
    body = []
    for r in rows:
        sl = r["slurm"]
        body.append(f"| {r['run']} | {r['generator'].split('/')[-1]} | {r['params']['trainable'] / 1e9:.3f} B | "
                    f"{r['flops_per_gpu_per_iteration']['total'] / 1e15:.2f} | {r['seconds_per_iteration']:.1f} | "
                    f"{r['memory_bytes_per_gpu']['required'] / 1e9:.1f} | "
                    f"{'yes' if r['verdict'].startswith('fits') else 'no'} | {r['gpu_hours']:.1f} | "
                    f"{sl['nodes']}x{sl['gpus_per_node']} GPU, {sl['timeout_min']} min, {sl['mem_gb']} GB |")
    return f"{title}\n\n{head}\n" + "\n".join(body)


def plan_experiments(argv: Sequence[str]) -> int:
    """``python -m vipo.plan all [gpus= gpu= mfu= ...] [overrides]``: every experiment file, one table
    (results/plans/experiments.json)."""
    from vipo.config import CONFIG_DIR, ConfigError

    try:
        opts, extra = split_options(argv)
        names = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
        out = Path(opts["out"]) if opts["out"] else ROOT / "results" / "plans" / "experiments.json"
        plan_runs([(n, [f"experiment={n}", *extra]) for n in names], opts,
                  f"What each experiment costs ({opts['gpus']} x {opts['gpu']}, {opts['mfu']:.0%} MFU)", out)
    except (PlanError, ConfigError) as e:
        print(str(e), file=sys.stderr)
        return 2
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from vipo.config import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    if argv[:1] == ["all"]:
        return plan_experiments(argv[1:])
    try:
        opts, overrides = split_options(argv)
        s = plan_one(overrides, opts)
    except (PlanError, ConfigError) as e:
        print(str(e), file=sys.stderr)
        return 2
    print(render(s))
    out = Path(opts["out"] or ROOT / "results" / "plans" / f"{s['experiment']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(s, indent=1, default=str))
    print(f"wrote {out}")
    return 0


