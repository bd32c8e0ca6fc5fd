"""Prompt sets: a registered name (``toy``) or a text file with one prompt per line."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vipo.registry import Registry

PROMPT_SETS: Registry[Callable[[], list[str]]] = Registry("prompt set")


@PROMPT_SETS.register("toy")
def _toy() -> list[str]:
    from vipo.toy.data import PROMPTS

    return list(PROMPTS)


def load_prompts(spec: str) -> list[str]:
    if spec in PROMPT_SETS:
        prompts = PROMPT_SETS.get(spec)()
    elif Path(spec).is_file():
        prompts = [ln.strip() for ln in Path(spec).read_text(encoding="utf-8").splitlines() if ln.strip()]
    else:
        raise FileNotFoundError(f"prompt set {spec!r} is neither a registered set "
                                f"({', '.join(PROMPT_SETS.names())}) nor an existing text file")
    if not prompts:
        raise ValueError(f"prompt set {spec!r} is empty")
    return prompts
