"""``run(cfg)``: the GRPO / ViPO loop for every generator, with run records, checkpoints and resume.

One iteration: pick prompts -> roll out G samples each with the SDE -> decode -> reward -> group
advantages -> maps -> redistribute -> clipped update on a subset of steps. Everything random in an
iteration comes from a generator seeded by (seed, iteration, rank), so a run resumed from its last
checkpoint repeats exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

import torch

from vipo import checkpoints as ckpts
from vipo import dist, environment, lease, stop
from vipo.advantage import redistribute, zero_std_fraction
from vipo.components import build_on, decode, resolve_device
from vipo.config import Config
from vipo.ema import EMA
from vipo.eval import EVALUATORS
from vipo.eval.during import FixedNoiseEval, due_iterations
from vipo.generators import GENERATORS
from vipo.images import save_image_grid, save_map_grid
from vipo.loggers import LOGGERS, tracking_fields
from vipo.maps import make_maps, map_capture
from vipo.prompts import load_prompts
from vipo.records import append_jsonl, atomic_write_json, read_jsonl, read_summary
from vipo.rollout import rollout
from vipo.run_folder import RunExists, check_new, new_run_dir, prepare, write_config  # noqa: F401 (RunExists: cli)
from vipo.threads import resolve_threads
from vipo.train_checkpoints import CheckpointMixin
from vipo.update import NonFiniteError, select_timesteps, update

CHECKPOINT = ckpts.CHECKPOINT


def iteration_generator(seed: int, iteration: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + iteration * 1_009 + rank)


def lr_lambda(cfg: Config):
    t = cfg.train

    def f(it: int) -> float:
        if it < t.warmup_iters:
            return (it + 1) / t.warmup_iters
        if t.lr_schedule == "constant":
            return 1.0
        frac = (it - t.warmup_iters) / max(1, t.iterations - t.warmup_iters)
        return max(0.0, 1.0 - frac) if t.lr_schedule == "linear" else 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    return f


def check_finite(rewards: torch.Tensor, iteration: int, ckpt_note: str) -> None:
    bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteError(f"reward is NaN or infinite for {len(bad)} of {len(rewards)} samples "
                             f"(indices {bad[:8]}) at iteration {iteration}; {ckpt_note}")


class Trainer(CheckpointMixin):
    def __init__(self, cfg: Config, raw: dict, on_eval: Optional[Callable[[int, dict], None]] = None,
                 held: Optional[lease.Lease] = None):
        """``held``: the run folder's lease when the caller already holds it (an Optuna trial); else acquired here."""
        self.cfg, self.raw = cfg, raw
        self.on_eval = on_eval  # called with (iteration, eval metrics) after each evaluation (Optuna pruning)
        dist.init()
        self.threads, self.threads_why = resolve_threads(cfg.train.threads)
        torch.set_num_threads(self.threads)
        self.device = resolve_device(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        from vipo.backbones import BACKBONES
        from vipo.rewards import REWARDS

        self.generator = build_on(GENERATORS, cfg.generator, self.device)
        self.reward = build_on(REWARDS, cfg.reward, self.device)
        needs_backbone = cfg.advantage.mode != "scalar" and cfg.psm.source == "backbone"
        self.backbone = build_on(BACKBONES, cfg.backbone, self.device) if needs_backbone else None
        self.evaluators = {m: EVALUATORS.build(m, reward=self.reward) for m in cfg.eval.metrics}
        self.fixed_eval: Optional[FixedNoiseEval] = None
        self.prompts = load_prompts(cfg.train.prompts)
        self.named = {n: p for n, p in self.generator.named_parameters() if p.requires_grad}
        if not self.named:
            raise ValueError(f"generator {cfg.generator.name!r} has no trainable parameters")
        self.start = 0
        self.lease: Optional[lease.Lease] = held
        if cfg.resume:
            self.run_dir = Path(cfg.resume)
            if not ckpts.exists(self.run_dir):
                raise FileNotFoundError(f"cannot resume: no checkpoint at {self.run_dir / CHECKPOINT}")
            if dist.is_main() and self.lease is None:
                self.lease = lease.acquire(self.run_dir)  # one writer per run folder (raises LeaseHeld)
        else:
            self.run_dir = dist.broadcast_object(self._claim_new(cfg) if dist.is_main() else None)
        try:
            self._setup(cfg, raw)
        except BaseException:
            self.close()
            raise

    def _claim_new(self, cfg: Config) -> Path:
        """The new run's folder, held by this process's lease; checked for an earlier run once held."""
        run_dir = new_run_dir(cfg, check=False)
        if self.lease is None or self.lease.run_dir.resolve() != run_dir.resolve():
            self.close()
            self.lease = lease.acquire(run_dir)
        try:
            check_new(run_dir)  # checked under the lease: a live writer is reported before an earlier run
            return run_dir
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder's lease (``run`` does this when it ends, however it ends)."""
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def _setup(self, cfg: Config, raw: dict) -> None:
        t, state = cfg.train, None
        if dist.is_main():
            prepare(self.run_dir, resume=bool(cfg.resume))
        self.start_max_abs = ckpts.max_abs({k: dist.full(p.detach()) for k, p in self.named.items()})
        if cfg.resume:
            state = self._read_checkpoint()  # loads the trained weights before any sharding
            self.start_max_abs = state.get("start_max_abs", self.start_max_abs)
        self.fsdp = dist.world_size() > 1 and (t.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true")
        if self.fsdp:
            dist.shard(self.generator)
            self.named = {n: p for n, p in self.generator.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(list(self.named.values()), lr=t.lr, betas=tuple(t.betas),
                                           weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.ema = EMA(self.named, t.ema_decay) if t.ema_decay > 0 else None
        self.reference = EMA(self.named, 1.0) if t.kl_coef > 0 else None  # frozen copy of the start weights
        if state is not None:
            self._restore(state)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if dist.is_main():
            write_config(self.run_dir, raw, bool(cfg.resume), self.start)
            environment.record(self.run_dir, self.start)  # env.json: versions, commit; kept (and compared) on resume
        self.logger = LOGGERS.build(cfg.logger.name, run_dir=self.run_dir, run_id=self.run_dir.name, config=raw,
                                    project=cfg.logger.project, mode=cfg.logger.mode,
                                    **tracking_fields(cfg)) if dist.is_main() else LOGGERS.build("none")

    # -- one iteration -----------------------------------------------------------------------------
    def _reference_velocity(self, x, s, cond):
        with self.reference.swapped():
            return self.generator.velocity(x, s, cond)

    def iteration(self, it: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
        cfg, t = self.cfg, self.cfg.train
        gen = iteration_generator(t.seed, it, dist.rank())
        idx = torch.randperm(len(self.prompts), generator=gen)[: t.prompts_per_iter]
        if len(idx) < t.prompts_per_iter:  # fewer prompts than asked for: sample with replacement
            idx = torch.randint(len(self.prompts), (t.prompts_per_iter,), generator=gen)
        prompts = [self.prompts[i] for i in idx.tolist()]
        tic = time.perf_counter()
        self.generator.eval()
        rows = [p for p in prompts for _ in range(t.group_size)]  # the rollout's row order
        source = cfg.psm.source if cfg.advantage.mode != "scalar" else None
        with map_capture(source, self.generator, cfg.psm, rows, cfg.sde.num_steps, cfg.generator.name) as captured:
            ro = rollout(self.generator, prompts, t.group_size, self.generator.sigmas(cfg.sde.num_steps),
                         kind=cfg.sde.kind, noise_level=cfg.sde.noise_level, reduction=cfg.sde.logprob_reduction,
                         micro_batch=t.micro_batch, gen=gen, same_noise_in_group=cfg.sde.same_noise_in_group)
        images = decode(self.generator, ro.latents[-1], t.micro_batch)  # [B, 3, (F), H, W]
        t_sample = time.perf_counter() - tic

        tic = time.perf_counter()
        with torch.no_grad():
            rewards = self.reward(images, ro.prompts).float().to(self.device)  # [B]
        check_finite(rewards, it, self._ckpt_note())
        rewards_all = dist.all_gather_cat(rewards)  # [W*B]
        groups_all = dist.all_gather_cat(ro.group_ids + dist.rank() * t.prompts_per_iter)  # [W*B]
        t_reward = time.perf_counter() - tic

        tic = time.perf_counter()
        grid = self.generator.map_grid()
        maps = None
        if cfg.advantage.mode != "scalar":
            maps = make_maps(cfg.psm.source, images, grid, cfg.psm, backbone=self.backbone, gen=gen,
                             reward=self.reward, prompts=ro.prompts, captured=captured)  # [B, *grid]
        t_map = time.perf_counter() - tic

        maps_all = dist.all_gather_cat(maps) if maps is not None else None
        scores, weights = rewards_all, None
        if cfg.advantage.combine == "advantages":  # each component of the multi reward normalised on its own
            scores = {k: dist.all_gather_cat(v.float().to(self.device)) for k, v in self.reward.last_components.items()}
            weights = self.reward.weights
        adv_all = redistribute(cfg.advantage.mode, scores, groups_all, maps_all, clamp=cfg.advantage.clamp,
                               eps=cfg.advantage.eps, std_mode=cfg.advantage.std_mode,
                               weights=weights)  # [W*B, *grid] or [W*B]
        b = len(rewards)
        adv = adv_all[dist.rank() * b:(dist.rank() + 1) * b].to(self.device)

        tic = time.perf_counter()
        timesteps = select_timesteps(cfg.sde.num_steps, t.timestep_fraction, t.timestep_selection, gen)
        stats: dict = {}
        for _ in range(t.inner_epochs):
            stats = update(self.generator, self.optimizer, ro, adv, timesteps, kind=cfg.sde.kind,
                           noise_level=cfg.sde.noise_level, reduction=cfg.sde.logprob_reduction,
                           clip_range=t.clip_range, micro_batch=t.micro_batch,
                           optimizer_steps=t.optimizer_steps_per_iter, max_grad_norm=t.max_grad_norm,
                           kl_coef=t.kl_coef, reference_velocity=self._reference_velocity if self.reference else None,
                           after_step=self.ema.update if self.ema else None, per_step=adv.ndim == len(grid) + 2)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        t_update = time.perf_counter() - tic

        record = {"iteration": it, "reward_mean": float(rewards_all.mean()),
                  "reward_std": float(rewards_all.std(unbiased=False)),
                  "zero_std_frac": zero_std_fraction(rewards_all, groups_all), "lr": lr, **stats,
                  "map_mean": float(maps.mean()) if maps is not None else 1.0,
                  "map_std": float(maps.std()) if maps is not None else 0.0,
                  "time_sample": t_sample, "time_reward": t_reward, "time_map": t_map, "time_update": t_update,
                  "time_iter": t_sample + t_reward + t_map + t_update}
        return record, images, maps

    # -- evaluation --------------------------------------------------------------------------------
    def evaluate(self, it: int) -> dict:
        e = self.cfg.eval
        if not self.evaluators or not (dist.is_main() or self.fsdp):  # sharded: every rank must run the network
            return {}
        if self.fixed_eval is None:  # prompts, encodings and start noise: built once, reused by every evaluation
            self.fixed_eval = FixedNoiseEval(self.generator, self.prompts, e.num_samples, e.num_steps, e.seed,
                                             e.micro_batch or max(self.cfg.train.micro_batch, 16))
        images = self.fixed_eval.images(self.ema.swapped() if self.ema else None)  # [N, 3, (F), H, W]
        if not dist.is_main():
            return {}
        out, prompts = {}, self.fixed_eval.prompts
        for name, ev in self.evaluators.items():
            out.update({f"eval/{k}": float(v) for k, v in ev(images, prompts).items()})
        if e.grid_samples > 0:
            save_image_grid(images[: e.grid_samples], self.run_dir / f"images/samples_it{it:05d}.png", nrow=8, scale=2)
        return out

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            return self._run()
        finally:
            self.close()

    def _run(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        t0 = time.perf_counter()
        done = read_summary(self.run_dir) if self.start >= t.iterations else None  # an unreadable one is rewritten
        if done is not None:
            print(f"[vipo] {self.run_dir} is already complete", flush=True)
            self.logger.finish()
            return done
        if dist.is_main():
            print(f"[vipo] run folder: {self.run_dir}  ({cfg.generator.name}, reward={cfg.reward.name}, "
                  f"advantage={cfg.advantage.mode}, map={cfg.psm.source}:{cfg.backbone.name}, "
                  f"threads={self.threads} [{self.threads_why}])", flush=True)
        due = due_iterations(cfg.eval.every, cfg.eval.schedule, t.iterations)
        if self.start == 0 and 0 in due:
            baseline = self.evaluate(-1)
            if dist.is_main():
                append_jsonl(self.metrics_path, {"iteration": -1, **baseline})
                self.logger.log(baseline, step=-1)
                self._log_images(-1)
        last_eval: dict = {}
        for it in range(self.start, t.iterations):
            record, images, maps = self.iteration(it)
            final = it == t.iterations - 1
            evaluated = (it + 1) in due
            if evaluated:
                last_eval = self.evaluate(it)
                record.update(last_eval)
                if maps is not None and cfg.eval.grid_samples > 0 and dist.is_main():
                    n = cfg.eval.grid_samples
                    shown = maps[:n] if maps.ndim < images.ndim else maps[:n].mean(1)  # per-step maps: their mean
                    save_map_grid(images[:n], shown, self.run_dir / f"images/maps_it{it:05d}.png", nrow=8, scale=2)
            if dist.is_main():
                if self.lease is not None:
                    self.lease.check()  # taken over while this process stalled: stop writing
                append_jsonl(self.metrics_path, record)
                self.logger.log(record, step=it)
                if evaluated:
                    self._log_images(it)
                if it % t.log_every == 0 or final:
                    self._print(record, t.iterations)
            saved = final or (it + 1) % t.checkpoint_every == 0
            if saved:
                self._save(it, record)
            if evaluated and self.on_eval is not None:
                self.on_eval(it, last_eval)
            if not final and stop.requested(self.device):  # time limit / preemption: checkpoint, then exit
                if not saved:
                    self._save(it, record)
                if dist.is_main():
                    print(f"[vipo] stop requested: checkpoint saved after iteration {it + 1}/{t.iterations}; "
                          f"resume={self.run_dir} continues", flush=True)
                raise stop.StopRequested(f"stopped after iteration {it + 1} of {t.iterations}")
        if not last_eval and self.start >= t.iterations:  # crashed between the last checkpoint and the summary
            last_eval = self.evaluate(t.iterations - 1)
        summary = self._summary(last_eval, time.perf_counter() - t0)
        if dist.is_main():
            atomic_write_json(self.run_dir / "summary.json", summary)
            (self.run_dir / "failed.json").unlink(missing_ok=True)  # an earlier attempt's failure is now history
            self.logger.finish(summary)
            print(f"[vipo] done: {self.run_dir}/summary.json", flush=True)
        return summary

    def _log_images(self, it: int) -> None:
        """The sample and map grids written at evaluation ``it`` go to the tracker too."""
        what = f"iteration {it}" if it >= 0 else "before training"
        self.logger.log_images({"samples": (self.run_dir / f"images/samples_it{it:05d}.png", f"samples, {what}"),
                                "maps": (self.run_dir / f"images/maps_it{it:05d}.png", f"maps, {what}")}, step=it)

    def _print(self, r: dict, total: int) -> None:
        ev = "  ".join(f"{k[5:]} {v:.3f}" for k, v in r.items()
                       if k.startswith("eval/") and not k.startswith(("eval/reward_", "eval/reward_std")))
        # the iteration number of metrics.jsonl and the image files (0-based), then how many of the total are done
        print(f"[vipo] it {r['iteration']:4d} ({r['iteration'] + 1}/{total})  "
              f"reward {r['reward_mean']:.4f} ± {r['reward_std']:.4f}  clipfrac {r['clipfrac']:.3f}  "
              f"kl {r['approx_kl']:.1e}  |  {r['time_iter']:.2f}s "
              f"(sample {r['time_sample']:.2f} reward {r['time_reward']:.2f} map {r['time_map']:.2f} "
              f"update {r['time_update']:.2f})" + (f"  |  eval: {ev}" if ev else ""), flush=True)

    def _summary(self, last_eval: dict, seconds: float) -> dict:
        rows = [r for r in read_jsonl(self.metrics_path) if r["iteration"] >= 0]
        cfg = self.cfg
        return {
            "run_id": self.run_dir.name, "experiment": cfg.experiment, "status": "complete",
            "generator": cfg.generator.name, "reward": cfg.reward.name, "backbone": cfg.backbone.name,
            "advantage_mode": cfg.advantage.mode, "map_source": cfg.psm.source,
            "logprob_reduction": cfg.sde.logprob_reduction, "seed": cfg.train.seed,
            "iterations": cfg.train.iterations, "tags": cfg.tags,
            "train_reward_first": rows[0]["reward_mean"] if rows else None,
            "train_reward_last": rows[-1]["reward_mean"] if rows else None,
            "seconds_per_iteration": (sum(r["time_iter"] for r in rows) / len(rows)) if rows else None,
            "wall_seconds_this_session": seconds, **last_eval,
        }


def run(cfg: Config, raw: Optional[dict] = None) -> dict:
    """Train as configured; returns the summary. Raises ``NonFiniteError`` on NaN rewards or losses."""
    trainer = Trainer(cfg, raw if raw is not None else asdict(cfg))
    try:
        return trainer.run()
    except NonFiniteError as e:
        if dist.is_main():
            last = trainer.run_dir / CHECKPOINT
            atomic_write_json(trainer.run_dir / "failed.json",
                              {"error": str(e), "time": datetime.now().isoformat(timespec="seconds"),
                               "last_good_checkpoint": str(last) if last.exists() else None})
        raise
