"""Config composition and validation (the schemas themselves: ``vipo.schema``, re-exported here).

Hydra composes YAML files from ``experiments/`` (see ``compose``); ``validate`` then turns the plain dict
into typed dataclasses. An unknown key or a value of the wrong type stops the run with one message that
names the key (``ConfigError``). Sections whose fields depend on a registered component (``generator``,
``reward``, ``backbone``) hold ``name`` plus keyword arguments that are checked against the component's
constructor signature.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

from vipo.registry import Registry
from vipo.schema import (_SECTIONS, AdvantageConfig, Component, Config, EvalConfig,  # noqa: F401 (re-exported)
                         LoggerConfig, MapConfig, SDEConfig, TrainConfig)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "experiments"


class ConfigError(ValueError):
    """A bad config key or value; the message names it."""


def suggest(key: str, known: Sequence[str]) -> str:
    """The tail of an unknown-key message: the closest known key, else the list of known keys."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"


def unknown_name(kind: str, name: str, known: Sequence[str]) -> ConfigError:
    """``config error: unknown ablation 'psm_kk'; did you mean 'psm_k'? known: ...`` (the closest known name)."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    hint = f" did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"config error: unknown {kind} {name!r};{hint} known: {', '.join(sorted(known))}")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against type hint ``tp`` (Optional, bool, int, float, str, list, dict, a dataclass
    section); a ConfigError naming ``where`` when it does not fit."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return coerce(value, args[0], where)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):  # a nested section, e.g. psm.saliency
        return section(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config error: {where} must be true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config error: {where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config error: {where} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config error: {where} must be a string, got {value!r}")
    if tp in (list, tuple):
        if isinstance(value, (list, tuple)):
            return tp(value)
        raise ConfigError(f"config error: {where} must be a list, got {value!r}")
    if tp is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"config error: {where} must be a mapping, got {value!r}")
    return value


def section(cls: type, raw: Any, where: str = "", what: str = "key") -> Any:
    """A plain mapping -> dataclass ``cls``, every key known and every value of its field's type; a ConfigError
    naming the key (``<where>.<key>``, or the bare key when ``where`` is empty) otherwise. ``what`` names a key
    in the messages (e.g. "eval option")."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {where or cls.__name__} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"config error: unknown {what} '{name}'{suggest(key, fields)}")
        kwargs[key] = coerce(value, hints[key], name)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"config error in '{where or cls.__name__}': {e}") from None


def dotlist(items: Sequence[str], what: str = "override") -> dict:
    """``key=value`` strings (``a.b=1``, ``xs=[1,2]``; a leading ``+`` is dropped) -> a nested plain dict with the
    values parsed as YAML, as Hydra's overrides are; a ConfigError naming a bad item."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    items = [str(a).lstrip("+") for a in items]
    for a in items:
        if "=" not in a:
            raise ConfigError(f"config error: {what} {a!r} is not key=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(items), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"config error in {what}s {items}: " + " ".join(str(e).split())) from None


def _component(registry: Registry, raw: Any, where: str) -> Component:
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"config error: {where} needs a 'name' (one of: {', '.join(registry.names())})")
    raw = dict(raw)
    name = raw.pop("name")
    if name not in registry:
        raise ConfigError(f"config error: {where}.name={name!r} is not a registered {registry.kind}; "
                          f"known: {', '.join(registry.names())}")
    target = registry.get(name)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = [k for k in params if k != "self"]
        for key in raw:
            if key not in allowed:
                raise ConfigError(f"config error: unknown key '{where}.{key}' for {registry.kind} {name!r}"
                                  f"{suggest(key, allowed)}")
    return Component(name=name, kwargs=raw)


def validate(raw: dict) -> Config:
    """Plain dict (e.g. from ``OmegaConf.to_container``) -> ``Config``, or ``ConfigError``."""
    from vipo.backbones import BACKBONES
    from vipo.generators import GENERATORS
    from vipo.rewards import REWARDS

    raw = dict(raw)
    top = {f.name for f in dataclasses.fields(Config)}
    for key in raw:
        if key not in top:
            raise ConfigError(f"config error: unknown top-level key '{key}'{suggest(key, top)}")
    for key in ("generator", "reward", "backbone"):
        if key not in raw:
            raise ConfigError(f"config error: missing section '{key}'")
    sections = {k: section(cls, raw.get(k), k) for k, cls in _SECTIONS.items()}
    scalars = {k: raw[k] for k in ("experiment", "run_id", "results_root", "resume", "tags") if k in raw}
    hints = typing.get_type_hints(Config)
    scalars = {k: coerce(v, hints[k], k) for k, v in scalars.items()}
    cfg = Config(
        generator=_component(GENERATORS, raw["generator"], "generator"),
        reward=_component(REWARDS, raw["reward"], "reward"),
        backbone=_component(BACKBONES, raw["backbone"], "backbone"),
        **sections,
        **scalars,
    )
    _check_choices(cfg)
    return cfg


def _check_choices(cfg: Config) -> None:
    from vipo.advantage import ADVANTAGE_MODES
    from vipo.maps import MAP_CHECKS, MAP_SOURCES
    from vipo.sde import SDE_STEPS

    def choose(where: str, value: str, options: Sequence[str]) -> None:
        if value not in options:
            raise ConfigError(f"config error: {where}={value!r}; choose one of: {', '.join(options)}")

    choose("sde.kind", cfg.sde.kind, SDE_STEPS.names())
    choose("sde.logprob_reduction", cfg.sde.logprob_reduction, ["position", "sample"])
    choose("advantage.mode", cfg.advantage.mode, ADVANTAGE_MODES.names())
    choose("advantage.std_mode", cfg.advantage.std_mode, ["local", "global"])
    choose("advantage.combine", cfg.advantage.combine, ["rewards", "advantages"])
    if cfg.advantage.combine == "advantages" and cfg.reward.name != "multi":
        raise ConfigError("config error: advantage.combine=advantages needs reward.name=multi (a weighted "
                          f"combination of rewards), got reward.name={cfg.reward.name!r}")
    choose("psm.source", cfg.psm.source, MAP_SOURCES.names())
    if cfg.advantage.mode != "scalar" and cfg.psm.source in MAP_CHECKS:
        try:
            MAP_CHECKS.get(cfg.psm.source)(cfg)
        except ValueError as e:
            raise ConfigError(f"config error: {e}") from None
    choose("train.lr_schedule", cfg.train.lr_schedule, ["constant", "linear", "cosine"])
    choose("train.timestep_selection", cfg.train.timestep_selection, ["random", "first"])
    choose("logger.name", cfg.logger.name, ["none", "wandb"])
    t = cfg.train
    positive = {"train.iterations": t.iterations, "train.prompts_per_iter": t.prompts_per_iter,
                "train.micro_batch": t.micro_batch, "train.optimizer_steps_per_iter": t.optimizer_steps_per_iter,
                "train.inner_epochs": t.inner_epochs, "sde.num_steps": cfg.sde.num_steps,
                "eval.num_steps": cfg.eval.num_steps, "train.checkpoint_every": t.checkpoint_every}
    for where, value in positive.items():
        if value < 1:
            raise ConfigError(f"config error: {where} must be >= 1, got {value}")
    bad = [n for n in cfg.eval.schedule if not isinstance(n, int) or isinstance(n, bool) or n < 0]
    if bad:  # counts past train.iterations are allowed (a shortened run keeps its preset) and never reached
        raise ConfigError(f"config error: eval.schedule holds iteration counts >= 0 (0 = before training), got {bad}")
    if cfg.eval.micro_batch < 0:
        raise ConfigError(f"config error: eval.micro_batch must be >= 0 (0 = automatic), got {cfg.eval.micro_batch}")
    if t.group_size < 2:
        raise ConfigError(f"config error: train.group_size must be >= 2 for group statistics, got {t.group_size}")
    if not 0.0 < t.timestep_fraction <= 1.0:
        raise ConfigError(f"config error: train.timestep_fraction must be in (0, 1], got {t.timestep_fraction}")
    if t.lr <= 0 or t.clip_range <= 0:
        raise ConfigError("config error: train.lr and train.clip_range must be > 0")
    if cfg.sde.noise_level <= 0:
        raise ConfigError("config error: sde.noise_level must be > 0 for training (the log-probs need noise)")
    if cfg.advantage.mode == "scalar" and cfg.sde.logprob_reduction != "sample":
        raise ConfigError("config error: advantage.mode=scalar needs sde.logprob_reduction=sample "
                          "(per-position ratios with a scalar advantage is advantage.mode=ones)")


def yaml_error(e: Exception, path: str | Path) -> ConfigError:
    """One line for a YAML syntax error: the file, the line and the parser's own words."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f" line {mark.line + 1}" if mark is not None else ""
    what = " ".join(str(getattr(e, "problem", None) or e).split())
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None and mark is not None and start.line != mark.line:
        context += f" that starts on line {start.line + 1}"
    return ConfigError(f"config error: YAML syntax error in {path}{where}: {what}" + (f" ({context})" if context else ""))


def read_yaml(path: str | Path):
    """``OmegaConf.load(path)`` with a one-line ``ConfigError`` for a file that is not valid YAML."""
    import yaml
    from omegaconf import OmegaConf

    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise yaml_error(e, path) from None


def _find_yaml_error(config_dir: Path) -> Optional[ConfigError]:
    """The first config file under ``config_dir`` that is not valid YAML, as a one-line error (Hydra's own error
    does not name the file)."""
    import yaml

    for path in sorted(config_dir.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            return yaml_error(e, path.relative_to(config_dir.parent) if path.is_relative_to(config_dir.parent) else path)
    return None


def compose(overrides: Sequence[str] = (), config_name: str = "config", config_dir: str | Path | None = None):
    """Compose ``experiments/<config_name>.yaml`` with Hydra overrides -> OmegaConf DictConfig."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def load(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> tuple[Config, dict]:
    """Compose and validate: returns the typed config and the resolved plain dict (for config.yaml)."""
    raw = compose_dict(overrides, config_dir)
    return validate(raw), raw


def compose_dict(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> dict:
    """Compose with Hydra overrides -> the resolved plain dict, not validated (an override of a key the file lacks
    is retried as ``+key=value``, so ``reward.quantize=false`` works on a reward file that only names the reward)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    import yaml

    overrides = list(overrides)
    try:
        raw = OmegaConf.to_container(compose(overrides, config_dir=config_dir), resolve=True)
    except yaml.YAMLError as e:
        raise (_find_yaml_error(Path(config_dir or CONFIG_DIR).resolve()) or yaml_error(e, "a config file")) from None
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        missing = re.match(r"Could not override '([^']+)'", msg)
        if missing:  # a key that does not exist: let the schema say which keys do
            key = missing.group(1)
            retry = [f"+{o}" if o.split("=", 1)[0] == key else o for o in overrides]
            if retry != overrides:
                return compose_dict(retry, config_dir)
        raise ConfigError("config error: " + msg) from None
    raw.pop("hydra", None)
    return raw
