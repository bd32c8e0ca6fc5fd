"""Exponential moving average of the trained parameters (used for evaluation)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from vipo.dist import copy_full_, full


class EMA:
    def __init__(self, named_params: dict[str, nn.Parameter], decay: float):
        self.decay = decay  # weight of the old average per update
        self.params = named_params
        self.shadow = {k: p.detach().clone() for k, p in named_params.items()}

    @torch.no_grad()
    def update(self) -> None:
        for k, p in self.params.items():
            self.shadow[k].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """Temporarily load the averaged weights into the model."""
        backup = {k: p.detach().clone() for k, p in self.params.items()}
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(backup[k])

    def state_dict(self) -> dict:
        """Whole tensors on the CPU (gathered from all ranks when the parameters are sharded)."""
        return {k: full(v).cpu() for k, v in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            copy_full_(self.shadow[k], v)
