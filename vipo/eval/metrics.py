"""Metric objects behind ``EVALUATORS``: per-sample scores in batches, set-level values at the end.

A metric is called two ways:

- ``metric(images, prompts) -> {name: float}``: one-shot aggregate (what the trainer logs as ``eval/<name>``);
- ``metric.scores(images, prompts) -> {column: [N]}`` batch by batch, then ``metric.finish() -> {name: float}``
  for values that need the whole set (the toy world's Fréchet distance). ``python -m vipo.eval`` does this
  and writes one parquet column per per-sample score.

Every registered reward is also a metric (one registry, one signature): ``RewardMetric`` reports its mean
and population std under the reward's name.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

Scores = Dict[str, torch.Tensor]


class Metric:
    """Base: subclasses implement ``scores``; set-level metrics also ``finish``."""

    def scores(self, images: torch.Tensor, prompts: Sequence[str]) -> Scores:
        raise NotImplementedError

    def finish(self) -> Dict[str, float]:
        """Set-level values over every batch passed to ``scores`` since the last ``finish`` (then reset)."""
        return {}

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for col, s in self.scores(images, list(prompts)).items():
            out[col] = float(s.double().mean())
            out[f"{col}_std"] = float(s.double().std(unbiased=False))
        out.update(self.finish())
        return out


class RewardMetric(Metric):
    """A reward as a metric: column ``name`` = the reward of each sample."""

    def __init__(self, reward, name: str):
        if reward is None:
            raise ValueError(f"metric {name!r} needs a reward; give a run folder (its training reward) or reward=<name>")
        self.reward, self.name = reward, name

    @torch.no_grad()
    def scores(self, images: torch.Tensor, prompts: Sequence[str]) -> Scores:
        return {self.name: self.reward(images, list(prompts)).detach().float().cpu()}  # [N]


def reward_metric_factory(reward_name: str):
    """EVALUATORS factory for the registered reward ``reward_name``.

    ``model``: an already built reward to use; otherwise the training reward is reused when it is an instance
    of the same class and no kwargs are given, else the reward is built from the registry with ``kwargs``.
    """

    def build(reward=None, model=None, device=None, **kwargs) -> RewardMetric:
        import inspect

        from vipo.rewards import REWARDS

        if model is None:
            target = REWARDS.get(reward_name)
            if isinstance(target, type) and isinstance(reward, target) and not kwargs:
                model = reward
            else:
                if device is not None and "device" in inspect.signature(target).parameters:
                    kwargs.setdefault("device", device)
                model = target(**kwargs)
                model = model.to(device) if device is not None else model
        return RewardMetric(model, reward_name)

    build.__name__ = f"reward_metric_{reward_name}"
    return build


class VideoAlignMetric(Metric):
    """VideoAlign's three dimensions and their sum: columns ``videoalign_{vq,mq,ta,overall}``."""

    COLUMNS = {"VQ": "videoalign_vq", "MQ": "videoalign_mq", "TA": "videoalign_ta", "Overall": "videoalign_overall"}

    def __init__(self, model):
        self.model = model  # a vipo.rewards.videoalign.VideoAlign (or anything with .rewards(videos, prompts))

    @torch.no_grad()
    def scores(self, images: torch.Tensor, prompts: Sequence[str]) -> Scores:
        if images.dim() != 5:
            raise ValueError(f"videoalign metric scores videos [N, 3, F, H, W]; got shape {tuple(images.shape)}")
        r = self.model.rewards(images, list(prompts))  # {"VQ", "MQ", "TA", "Overall"} each [N]
        return {col: r[k].detach().float().cpu() for k, col in self.COLUMNS.items()}


class ToyMetric(Metric):
    """Toy-world judge metrics (``vipo.eval.toy``): per-sample shape / colour correctness and rule rewards,
    and the Fréchet distance of the judge features of all samples at ``finish``."""

    def __init__(self, judge_weights: str = "shipped", resolution: int = 32):
        from vipo.eval.toy import ToyEvaluator

        self.ev = ToyEvaluator(judge_weights=judge_weights, resolution=resolution)
        self._features: list[torch.Tensor] = []

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> Dict[str, float]:
        return self.ev.evaluate(images.cpu(), list(prompts))  # the trainer's one-shot path (judge on the CPU)

    @torch.no_grad()
    def scores(self, images: torch.Tensor, prompts: Sequence[str]) -> Scores:
        from vipo.toy.data import prompt_to_label

        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"toy metric expects images [N, 3, H, W], got {tuple(images.shape)}")
        images = images.cpu()  # the judge lives on the CPU
        labels = torch.tensor([prompt_to_label(p) for p in prompts])  # [N, 2] (shape, colour)
        out = self.ev.judge_outputs(images)
        self._features.append(out[self.ev.fd_features].cpu())
        cols = {"shape_acc": (out["shape"].argmax(1).cpu() == labels[:, 0]).float(),  # [N] 0/1
                "colour_acc": (out["colour"].argmax(1).cpu() == labels[:, 1]).float()}
        for name, reward in self.ev.rewards.items():
            cols[f"reward_{name}"] = reward(images.float(), list(prompts)).float().cpu()  # [N]
        return cols

    def finish(self) -> Dict[str, float]:
        if not self._features:
            return {}
        feats, self._features = torch.cat(self._features), []  # [N, D]
        return {"fd": self.ev.fd(feats)}


def toy_metric(judge_weights: str = "shipped", resolution: int = 32, **_) -> ToyMetric:
    return ToyMetric(judge_weights, resolution)


def videoalign_metric(reward=None, model=None, device=None, **kwargs) -> VideoAlignMetric:
    if model is None:
        from vipo.rewards.videoalign import VideoAlign

        if isinstance(reward, VideoAlign) and not kwargs:
            model = reward
        else:
            model = VideoAlign(**kwargs, **({"device": device} if device is not None else {}))
    return VideoAlignMetric(model)


def training_reward_metric(reward=None, model: Optional[object] = None, **_) -> RewardMetric:
    """Metric ``reward``: the run's training reward, column ``reward``."""
    return RewardMetric(model if model is not None else reward, "reward")
