"""Prompt sets: a registered name or a text file with one prompt per line.

Registered: ``toy`` (the toy world's 16 prompts), ``drawbench-mini`` (30 built-in prompts in the spirit of
DrawBench's categories; works offline), ``hpdv2`` (the 3200 HPDv2 benchmark prompts of HPSv2, styles anime,
concept-art, paintings, photo, in that order) and ``hpdv2-<style>`` (800 each). The HPDv2 files
(``benchmark/<style>.json`` of the hub dataset ``zhwang/HPDv2``) are fetched on first use and cached under
``$VIPO_PROMPT_CACHE`` (default ``~/.cache/vipo/prompts``); offline without a cache is a clear error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

from vipo.registry import Registry

PROMPT_SETS: Registry[Callable[[], list[str]]] = Registry("prompt set")

HPDV2_REPO = "zhwang/HPDv2"  # hub dataset holding benchmark/<style>.json (JSON lists of prompts)
HPDV2_STYLES = ("anime", "concept-art", "paintings", "photo")


class PromptSetUnavailable(RuntimeError):
    """A hub-backed prompt set is neither cached nor downloadable (offline); the message says what to do."""


@PROMPT_SETS.register("toy")
def _toy() -> list[str]:
    from vipo.toy.data import PROMPTS

    return list(PROMPTS)


# Our own short list, one group per DrawBench category (colours, counting, positions, conflicting,
# descriptions, misspellings, rare words, text, creative); for quick offline checks, not a benchmark.
DRAWBENCH_MINI = [
    "A yellow umbrella next to a purple bicycle.",
    "A green apple on top of a red book.",
    "A black cat sitting on a white fence.",
    "Three wooden chairs around a round table.",
    "Two dogs chasing five orange balls in a park.",
    "A single candle on a plate with four cookies.",
    "A teapot to the left of a stack of cups.",
    "A bird flying below a hot air balloon.",
    "A lamp behind a sofa, with a plant in front of the sofa.",
    "An elephant balancing on a tennis ball.",
    "A fish riding a bicycle through the desert.",
    "A snowman relaxing on a sunny tropical beach.",
    "A small cottage with a red door, ivy on the stone walls and smoke rising from the chimney.",
    "A lighthouse on a rocky cliff at dusk, waves crashing below and gulls circling the light.",
    "An old man with a long white beard reading a newspaper in a crowded train.",
    "A bowl of ramen with a soft-boiled egg, spring onions and chopsticks resting on the rim.",
    "A giraff eating leevs from a tall tree.",
    "A bluberry muffin on a porcelin plate.",
    "A pangolin curled up on a mossy log.",
    "An axolotl swimming in a glass aquarium.",
    "A bouquet of protea flowers in a ceramic vase.",
    "A shop sign that says 'OPEN 24 HOURS'.",
    "A birthday cake with the word 'Happy' written in blue icing.",
    "A street poster with the text 'Save the bees'.",
    "A robot painting a self-portrait in a sunlit studio.",
    "A city skyline made entirely of stacked books.",
    "A watercolor painting of a fox in a snowy forest.",
    "A photograph of a vintage car parked on a rainy street at night.",
    "An astronaut playing chess with a panda on the moon.",
    "A cup of coffee whose steam forms the shape of a dragon.",
]


@PROMPT_SETS.register("drawbench-mini")
def _drawbench_mini() -> list[str]:
    return list(DRAWBENCH_MINI)


# ---------------------------------------------------------------------------------------- HPDv2 (hub)
def prompt_cache_dir() -> Path:
    return Path(os.environ.get("VIPO_PROMPT_CACHE") or Path.home() / ".cache" / "vipo" / "prompts")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _parse_prompt_list(text: str, where: str) -> list[str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e}); delete it to fetch it again") from None
    if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
        raise ValueError(f"{where}: expected a JSON list of prompt strings; delete it to fetch it again")
    return data


def hpdv2_prompts(styles: Sequence[str] = HPDV2_STYLES) -> list[str]:
    """The HPDv2 benchmark prompts of ``styles`` (cached JSON files, fetched from the hub when missing)."""
    bad = [s for s in styles if s not in HPDV2_STYLES]
    if bad:
        raise ValueError(f"unknown HPDv2 styles {bad}; known: {', '.join(HPDV2_STYLES)}")
    cache = prompt_cache_dir() / "hpdv2"
    prompts: list[str] = []
    for style in styles:
        path = cache / f"{style}.json"
        if not path.is_file():
            _fetch_hpdv2(style, path)
        prompts += _parse_prompt_list(path.read_text(encoding="utf-8"), str(path))
    return prompts


def _fetch_hpdv2(style: str, dest: Path) -> None:
    how = (f"HPDv2 benchmark prompts are not cached at {dest.parent}. Fetch them once with network access "
           f"(python -c \"from vipo.prompts import load_prompts; load_prompts('hpdv2')\"), or copy the files "
           f"benchmark/{{{','.join(HPDV2_STYLES)}}}.json of the hub dataset {HPDV2_REPO} into {dest.parent} "
           f"(or point $VIPO_PROMPT_CACHE at a folder holding hpdv2/<style>.json); "
           f"offline, use the built-in list prompts=drawbench-mini")
    if _hub_offline():
        raise PromptSetUnavailable(f"{how}. (HF_HUB_OFFLINE is set, so nothing was downloaded.)")
    try:
        from huggingface_hub import hf_hub_download

        src = hf_hub_download(HPDV2_REPO, f"{style}.json", subfolder="benchmark", repo_type="dataset")
    except Exception as e:  # network, auth or hub errors all end the same way
        raise PromptSetUnavailable(f"{how}. (Download failed: {type(e).__name__}: {e})") from e
    from vipo.records import atomic_write_text

    text = Path(src).read_text(encoding="utf-8")
    _parse_prompt_list(text, f"{HPDV2_REPO}:benchmark/{style}.json")  # check before caching
    atomic_write_text(dest, text)


PROMPT_SETS.register("hpdv2")(hpdv2_prompts)
for _style in HPDV2_STYLES:
    PROMPT_SETS.register(f"hpdv2-{_style}")(lambda s=_style: hpdv2_prompts((s,)))


# ---------------------------------------------------------------------------------------------- loading
def prompt_set_name(spec: str) -> str:
    """A short name for output folders: the registered name, or a text file's stem."""
    return spec if spec in PROMPT_SETS else Path(spec).stem


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
