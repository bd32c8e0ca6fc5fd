"""Evaluation during training: when to evaluate, and the fixed-noise ODE samples every evaluation reuses.

When: ``eval.every`` (every k iterations, 0 = off), ``eval.schedule`` (a list of completed-iteration counts,
e.g. dense early and sparse late; 0 means before the first update) and always after the last iteration.
Iteration ``it`` (0-based) is evaluated when ``it + 1`` is due; the before-training evaluation is row -1.

What: ``eval.num_samples`` deterministic Euler ODE samples of ``eval.num_steps`` steps, prompts cycling
through the prompt set, start noise from ``eval.seed``. Prompts, their encodings and the start noise are
built once per run and reused by every evaluation, so successive points differ only by the weights.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from vipo.generators.base import Cond


def due_iterations(every: int, schedule: Sequence[int], iterations: int) -> set[int]:
    """Completed-iteration counts (0 .. iterations) after which to evaluate; 0 is the baseline."""
    due = {n for n in schedule if 0 <= n <= iterations}
    if every > 0:
        due |= {0, *range(every, iterations + 1, every)}
    due.add(iterations)
    return due


class FixedNoiseEval:
    """Samples and scores the generator on the same prompts and start noise at every evaluation."""

    def __init__(self, generator, prompt_set: Sequence[str], num_samples: int, num_steps: int, seed: int,
                 micro_batch: int):
        self.generator, self.num_steps, self.micro_batch = generator, num_steps, micro_batch
        self.prompts = [prompt_set[i % len(prompt_set)] for i in range(num_samples)]
        g = torch.Generator().manual_seed(seed)
        self.noise = torch.randn(num_samples, *generator.latent_shape(), generator=g)  # [N, C, (F), H, W]
        self._cond: Cond | None = None

    def cond(self) -> Cond:
        if self._cond is None:
            with torch.no_grad():
                self._cond = self.generator.encode_prompts(self.prompts)
        return self._cond

    def images(self, weights_ctx=None) -> torch.Tensor:
        """ODE samples decoded to images [N, 3, (F), H, W] in [0, 1] (under ``weights_ctx``, e.g. EMA)."""
        from vipo.rollout import sample_ode

        self.generator.eval()
        with weights_ctx or contextlib.nullcontext():
            lat = sample_ode(self.generator, self.prompts, self.num_steps, None, micro_batch=self.micro_batch,
                             noise=self.noise, cond=self.cond())  # [N, C, (F), H, W]
            with torch.no_grad():
                return torch.cat([self.generator.decode(c) for c in lat.split(self.micro_batch)])
