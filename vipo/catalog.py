"""What ``--help`` lists, read from the config folders and the registries (never a hand-kept list).

    python train.py --help     # config groups and their options, experiments, registered components
    python sweep.py --help     # ablation files with their cells, studies with their parts, Optuna searches
"""

from __future__ import annotations

from pathlib import Path

from vipo.config import CONFIG_DIR

SWEEP_FOLDERS = ("ablation", "study")  # config folders that sweep.py reads; train.py composes the others
WIDTH = 118


def first_comment(path: Path) -> str:
    """The first sentence of a YAML file's opening comment (without Hydra's ``@package`` line, a ``Table:`` /
    ``Study:`` label, or the ``Run:`` lines)."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("@package"):
            continue
        if text.startswith(("Run:", "Results:")) or (not text and words):
            break
        for label in ("Table:", "Study:"):
            text = text[len(label):].strip() if text.startswith(label) else text
        words.append(text)
    text = " ".join(words)
    cuts = [i for i in (text.find(". "), text.find(" (")) if i > 20]  # the first sentence, before any aside
    return text[:min(cuts)].rstrip(".:,;") if cuts else text.rstrip(".")


def _wrap(head: str, items: list[str], indent: int = 4) -> list[str]:
    """``head`` then the items joined by ", ", wrapped at WIDTH with continuation lines indented."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > WIDTH and line.strip():
            lines.append(line)
            line = " " * indent + piece
        else:
            line = f"{line} {piece}" if line.strip() else line + piece
    lines.append(line)
    return lines


def _para(head: str, text: str) -> list[str]:
    """``head`` + ``text`` wrapped at WIDTH, continuation lines aligned under the text."""
    import textwrap

    return textwrap.wrap(text, WIDTH, initial_indent=head, subsequent_indent=" " * len(head)) or [head.rstrip()]


def _seeds(seeds) -> str:
    """``4`` -> "seeds 4"; ``[1000, ..., 1015]`` -> "16 seeds 1000-1015" (a list that is not a range: its count)."""
    if seeds is None:
        return "the ablation's seeds"
    if isinstance(seeds, int):
        return f"seeds {seeds}"
    seeds = list(seeds)
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{len(seeds)} seeds {seeds[0]}-{seeds[-1]}"
    return f"{len(seeds)} seeds"


def groups() -> dict[str, list[str]]:
    """Config group -> its options (the YAML files of ``experiments/<group>/``)."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir() and d.name not in SWEEP_FOLDERS}


def registries() -> dict[str, list[str]]:
    """Registered names a config can pick (``generator.name=...``, ``psm.source=...``, ...)."""
    from vipo.advantage import ADVANTAGE_MODES
    from vipo.backbones import BACKBONES
    from vipo.eval import EVALUATORS
    from vipo.generators import GENERATORS
    from vipo.loggers import LOGGERS
    from vipo.maps import MAP_SOURCES
    from vipo.rewards import REWARDS
    from vipo.sde import SDE_STEPS

    return {"generator.name": GENERATORS.names(), "reward.name": REWARDS.names(),
            "backbone.name": BACKBONES.names(), "psm.source": MAP_SOURCES.names(),
            "advantage.mode": ADVANTAGE_MODES.names(), "sde.kind": SDE_STEPS.names(),
            "eval.metrics": EVALUATORS.names(), "logger.name": LOGGERS.names()}


def train_help() -> str:
    out = ["Config groups (pick one with <group>=<option>; `python train.py <overrides> --cfg` prints the result):"]
    for group, options in groups().items():
        if group != "experiment":
            out += _wrap(f"  {group + ':':<12}", options, 15)
    out.append("\nExperiments (experiment=<name>):")
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        out += _para(f"  {path.stem:<26} ", first_comment(path))
    out.append("\nRegistered components (set with <key>=<name>):")
    for key, names in registries().items():
        out += _wrap(f"  {key + ':':<16}", names, 19)
    out.append("\nEvery field, its default and its comment: experiments/config.yaml and the group files above;"
               "\nsweeps, studies and searches: python sweep.py --help")
    return "\n".join(out)


def ablations() -> dict[str, tuple[str, list[str]]]:
    """Ablation file -> (its table title, its cells in file order)."""
    from vipo.sweep import cell_names, load_ablation

    out = {}
    for path in sorted((CONFIG_DIR / "ablation").glob("*.yaml")):
        spec = load_ablation(path.stem)
        out[path.stem] = (str(spec.get("table") or first_comment(path)), cell_names(spec))
    return out


def sweep_help() -> str:
    from vipo.hpo import SPEC_DIR, load_spec
    from vipo.study import load_study

    out = ["Ablation files (ablation=<name>; experiments/ablation/), their cells:"]
    for name, (title, cells) in ablations().items():
        out += _para(f"  {name:<18} ", title)
        out += _wrap(" " * 21 + "cells:", cells, 21)
    out.append("\nStudies (study=<name>; experiments/study/), their parts (ablation x rewards x seeds):")
    for path in sorted((CONFIG_DIR / "study").glob("*.yaml")):
        spec = load_study(path.stem)
        out += _para(f"  {path.stem:<18} ", spec.get("title") or first_comment(path))
        parts = [f"{p['ablation']}{' [' + ' '.join(p['cells']) + ']' if p.get('cells') else ''} "
                 f"({_seeds(p.get('seeds'))})" for p in spec["parts"]]
        out += _wrap(" " * 21 + f"rewards {', '.join(spec['rewards'])}; parts:", parts, 21)
    out.append("\nOptuna searches (search=<name>; sweeps/):")
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        spec = load_spec(str(path))
        out += _para(f"  {path.stem:<18} ", f"{spec.n_trials} trials, {spec.direction} {spec.metric}; "
                     f"space: {', '.join(spec.space)}")
    return "\n".join(out)
