"""A weighted sum of registered rewards, itself a reward: ``r = sum_k w_k r_k(images, prompts)``.

Config form (Hydra / YAML)::

    reward:
      name: multi
      rewards:                       # component name -> constructor kwargs (or a built Reward)
        hps: {path_or_id: /ckpt/HPS_v2.1_compressed.pt}
        clip_pick: {name: pickscore} # "name" picks the registered reward when the key is an alias
      weights: {hps: 1.0, clip_pick: 0.05}

The last call's per-component scores are kept in ``last_components`` for logging.
"""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn

from vipo.rewards.base import Reward


class MultiReward(Reward):
    def __init__(self, rewards: Mapping[str, Any], weights: Optional[Mapping[str, float]] = None,
                 registry=None):
        super().__init__()
        if not rewards:
            raise ValueError("MultiReward needs at least one component reward")
        if registry is None:
            from vipo.rewards import REWARDS as registry
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(rewards))
        if unknown:
            raise KeyError(f"MultiReward: weights for unknown components {unknown}; components: {sorted(rewards)}")
        self.components = nn.ModuleDict()
        self.weights: Dict[str, float] = {}
        for key, spec in rewards.items():
            self.components[key] = spec if isinstance(spec, Reward) else self._build(registry, key, spec)
            self.weights[key] = float(weights.get(key, 1.0))
        self.last_components: Dict[str, torch.Tensor] = {}

    @staticmethod
    def _build(registry, key: str, spec: Optional[Mapping[str, Any]]) -> Reward:
        kwargs = dict(spec or {})
        name = kwargs.pop("name", key)
        reward = registry.build(name, **kwargs)
        if not isinstance(reward, Reward):
            raise TypeError(f"MultiReward component {key!r} ({name!r}) is a {type(reward).__name__}, not a Reward")
        return reward

    @contextlib.contextmanager
    def differentiable_path(self) -> Iterator[None]:
        """Every component on its differentiable path."""
        with contextlib.ExitStack() as stack:
            for reward in self.components.values():
                stack.enter_context(reward.differentiable_path())
            yield

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        parts = {k: r(images, prompts) for k, r in self.components.items()}  # each [B] float32
        self.last_components = {k: v.detach() for k, v in parts.items()}
        return sum(self.weights[k] * v.to(images.device) for k, v in parts.items())  # [B]
