"""``--config-dir D --config-name NAME key=value ...``, as fairseq's hydra_train.py reads them.

The YAML (after its ``defaults:`` parents) and the overrides are merged into OmegaConf
structured configs, which type-check every value and resolve ``${group.key}``; then come
what OmegaConf cannot know: keys fairseq has but hubertkit does not implement, ranges,
and which model goes with which criterion and task.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import (
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from hubertkit.config.model import HubertConfig
from hubertkit.config.keys import describe, rules
from hubertkit.config.train import GROUPS, PAIRS, SECTIONS, TrainConfig, all_sections, section_class
from hubertkit.errors import HubertkitError, did_you_mean
from hubertkit.fileio import read_utf8

log = logging.getLogger(__name__)

# Groups of fairseq's YAMLs that configure hydra itself.
IGNORED_GROUPS = ("hydra",)

# Each key's rules live on its dataclass field (config/keys.py); the loader reads them here.
# fairseq keys hubertkit keeps but implements at one value: any other is refused.
UNSUPPORTED: dict[str, tuple[Any, str]] = rules(all_sections(), "only")
# fairseq keys that change how a run is launched or watched, not what it trains: any value
# loads (fairseq's own YAMLs set them), and one other than the default is named in a warning.
NO_EFFECT: dict[str, str] = rules(all_sections(), "no_effect")
# Values that have a range: refused at load time, not at the first update (or never: a
# zero log_interval divides by zero, update_freq=[0] never steps).
RANGES: dict[str, tuple[Callable, str]] = rules(all_sections(), "check")

def describe_config() -> str:
    """``hubertkit train --help-config``: every key of every group and ``_name`` section,
    with its default and its rules."""
    return describe(all_sections())


# model presets for the Python API: the model section of a shipped config
PRESETS = {"base": "hubert_base_librispeech", "large": "hubert_large_librivox", "xlarge": "hubert_xlarge_librivox",
           "tiny": "demo"}


def config_dir_default() -> Path:
    """The configs shipped inside the package (fairseq's ``examples/hubert/config/pretrain``
    and ours), so an installed wheel finds them as a clone does."""
    return Path(str(resources.files("hubertkit") / "configs"))


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict:
    """A YAML file that must hold a mapping; malformed YAML, other encodings and other
    shapes are errors naming the file (and the line, where YAML says it)."""
    path = Path(path)
    try:
        tree = yaml.safe_load(read_utf8(path, what))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise HubertkitError(f"{what} {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise HubertkitError(f"{what} {path} must be a mapping of keys to values, not a {type(tree).__name__}")
    return tree


def _section_of(group: str, values) -> type | None:
    name = values.get("_name") if isinstance(values, dict) else None
    return SECTIONS[group].get(name) if group in SECTIONS and name is not None else None


def _merge(base: dict, tree: dict) -> dict:
    """``tree`` over ``base``; a group whose ``_name`` picks another section starts afresh
    (the parent's keys of that group belong to the other section)."""
    out = dict(base)
    for group, values in tree.items():
        old = out.get(group)
        if isinstance(values, dict) and isinstance(old, dict):
            fresh = _section_of(group, values) not in (None, _section_of(group, old) or section_class(group, None))
            out[group] = dict(values) if fresh else {**old, **values}
        else:
            out[group] = values
    return out


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A config file; ``defaults: [NAME, ...]`` first merges those configs of the same
    directory (hydra's list syntax, config names only), so a variant lists only what it
    changes."""
    tree = read_yaml_mapping(path)
    parents = tree.pop("defaults", None) or []
    if not isinstance(parents, list) or not all(isinstance(n, str) for n in parents):
        raise HubertkitError(f"{path}: 'defaults' must be a list of config names, got {parents!r}")
    base: dict = {}
    for name in parents:
        parent = path.parent / f"{name}.yaml"
        if not parent.is_file() or parent in seen:
            raise HubertkitError(f"{path}: defaults entry {name!r} " + ("is circular" if parent in seen else f"does not exist ({parent})"))
        base = _merge(base, _read_yaml(parent, seen + (path,)))
    return _merge(base, tree)


def parse_override(text: str) -> tuple[str, Any]:
    """hydra's ``key=value`` (and ``+key=value``), the value read as YAML."""
    if "=" not in text:
        raise HubertkitError(f"override {text!r} is not key=value")
    key, value = text.split("=", 1)
    key = key.lstrip("+")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _all_keys() -> list[str]:
    out = set()
    for group, cls in GROUPS.items():
        for section in SECTIONS.get(group, {}).values() or [cls]:
            out |= {f"{group}.{f.name}" for f in dataclasses.fields(section)}
    return sorted(out)


def _check_keys(tree: dict) -> None:
    for group, values in tree.items():
        if group not in GROUPS:
            raise HubertkitError(f"unknown config group {group!r}{did_you_mean(group, list(GROUPS))}")
        if not isinstance(values, dict):
            raise HubertkitError(f"config group {group!r} must be a mapping of keys")
        name = values.get("_name")
        if group in SECTIONS and name is not None and name not in SECTIONS[group]:
            raise HubertkitError(f"{group}._name={name!r} is not supported; hubertkit has {', '.join(SECTIONS[group])}")
        section = section_class(group, name)
        names = {f.name for f in dataclasses.fields(section)}
        for key in values:
            if key in names:
                continue
            owners = [n for n, cls in SECTIONS.get(group, {}).items() if key in {f.name for f in dataclasses.fields(cls)}]
            if owners:
                raise HubertkitError(f"config key {group}.{key} belongs to {group}._name={' or '.join(owners)}, "
                                     f"not {group}._name={section._name}")
            raise HubertkitError(f"unknown config key '{group}.{key}'{did_you_mean(f'{group}.{key}', _all_keys())}")


def _fit_shapes(tree: dict) -> None:
    """What fairseq's command lines accept and OmegaConf would not: a scalar for a list
    (``lr=0.001``) and integral floats or ``1e5`` for integers."""
    for group, values in tree.items():
        types = {f.name: str(f.type) for f in dataclasses.fields(section_class(group, values.get("_name")))}
        for key, v in values.items():
            t = types[key]
            if t.startswith("list[") and v is not None and not isinstance(v, (list, tuple)):
                values[key] = [v]
            elif t.startswith("int") and isinstance(v, (float, str)):
                try:
                    if float(v) == int(float(v)):
                        values[key] = int(float(v))
                except (ValueError, OverflowError):  # not a number: OmegaConf names the key
                    pass


def build_config(tree: dict) -> TrainConfig:
    """A TrainConfig from a nested dict (YAML + overrides), checking every key."""
    tree = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items() if k not in IGNORED_GROUPS}
    _check_keys(tree)
    _fit_shapes(tree)
    sections = {g: section_class(g, (tree.get(g) or {}).get("_name")) for g in GROUPS}
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig(**{g: cls() for g, cls in sections.items()})), tree)
        OmegaConf.set_readonly(cfg, False)  # the frozen dataclasses make it read-only; the result is frozen again
        for group, values in tree.items():  # a merge keeps a default under "???"; the config asks for a value
            for key in (k for k, v in values.items() if v == "???"):
                setattr(cfg[group], key, "???")
    except OmegaConfBaseException as e:
        raise HubertkitError(f"config key {e.full_key}: {str(e).splitlines()[0]}") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise HubertkitError(f"required config key(s) not set: {', '.join(missing)} (pass them as key=value)")
    try:
        cfg = OmegaConf.to_object(cfg)
    except (InterpolationResolutionError, MissingMandatoryValue) as e:
        raise HubertkitError(f"config key {e.full_key}: {str(e).splitlines()[0]}") from None
    _check_supported(cfg)
    _check_ranges(cfg)
    _check_pairs(cfg)
    return cfg


def _value(cfg: TrainConfig, key: str):
    group, name = key.split(".")
    return getattr(getattr(cfg, group), name, None), hasattr(getattr(cfg, group), name)


def _check_supported(cfg: TrainConfig) -> None:
    for key, (implemented, why) in UNSUPPORTED.items():
        value, present = _value(cfg, key)
        if present and value != implemented:
            raise HubertkitError(f"{key}={value!r} is not supported by hubertkit ({why}); "
                                 f"remove it or set {key}={implemented}")
    default = TrainConfig()
    unused = []
    for key, why in NO_EFFECT.items():
        value, present = _value(cfg, key)
        if present and value != _value(default, key)[0]:  # keys of this config's sections only
            unused.append(f"{key}={value} ({why})")
    if unused:
        log.warning("accepted, with no effect in hubertkit: %s", "; ".join(unused))


def _check_ranges(cfg: TrainConfig) -> None:
    for key, (ok, what) in RANGES.items():
        value, present = _value(cfg, key)
        if present and not ok(value):
            raise HubertkitError(f"{key}={value!r} is out of range: it must be {what}")


def _check_pairs(cfg: TrainConfig) -> None:
    m = cfg.model._name
    criteria, task = PAIRS[m]
    if cfg.criterion._name not in criteria:
        raise HubertkitError(f"model._name={m} needs criterion._name={' or '.join(criteria)}, got {cfg.criterion._name}")
    if cfg.task._name != task:
        raise HubertkitError(f"model._name={m} and task._name={cfg.task._name} do not go together: "
                             f"model._name={m} is trained by task._name={task}")
    if task == "hubert_pretraining" and cfg.task.fine_tuning != (m == "hubert_ctc"):
        raise HubertkitError(f"task.fine_tuning={cfg.task.fine_tuning} but model._name={m}: hubertkit fine-tunes "
                             "exactly when model._name=hubert_ctc")
    if isinstance(cfg.model, HubertConfig):
        cfg.model.validate()
    _check_length(cfg)


def _check_length(cfg: TrainConfig) -> None:
    """A run needs an end, and a schedule a length: fairseq's max_update 0 means no limit,
    which trains forever without max_epoch, and its schedules assert a length above 0."""
    o, s = cfg.optimization, cfg.lr_scheduler
    if not o.max_update and not o.max_epoch:
        raise HubertkitError("set optimization.max_update or optimization.max_epoch: with both 0 (fairseq's defaults) "
                             "the run would never end")
    if s._name == "polynomial_decay" and int(s.total_num_update) <= 0:
        raise HubertkitError("lr_scheduler.total_num_update must be > 0 (it follows optimization.max_update, which is "
                             "0: no limit); set it to the number of updates the decay spans")
    if s._name == "tri_stage" and s.phase_ratio and not o.max_update:
        raise HubertkitError("lr_scheduler.phase_ratio divides optimization.max_update, which is 0 (no limit): set "
                             "max_update, or give warmup_steps, hold_steps and decay_steps")


def config_path(config_name: str, config_dir: str | os.PathLike | None = None) -> Path:
    directory = Path(config_dir) if config_dir else config_dir_default()
    path = directory / (config_name if config_name.endswith(".yaml") else f"{config_name}.yaml")
    if not path.is_file():
        available = sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []
        raise HubertkitError(f"config {path} does not exist" + (f"; available: {', '.join(available)}" if available else ""))
    return path


def load_config(config_name: str, overrides: list[str] = (), config_dir: str | os.PathLike | None = None) -> TrainConfig:
    """``--config-dir D --config-name NAME key=value ...`` as fairseq's hydra_train.py."""
    tree = _read_yaml(config_path(config_name, config_dir))
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] in IGNORED_GROUPS:
            continue
        *parents, last = key.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise HubertkitError(f"unknown config key {key!r}")
        node[last] = value
    return build_config(tree)


def preset(name: str, **overrides) -> HubertConfig:
    """A published architecture (``base``, ``large``, ``xlarge``) or ``tiny`` (the demo's),
    read from the model section of its config (``normalize`` from its task's, as training
    sets it), with ``overrides``."""
    if name not in PRESETS:
        raise HubertkitError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    tree = _read_yaml(config_path(PRESETS[name]))
    model = {k: v for k, v in tree.get("model", {}).items() if k != "_name" and v != "???"}
    model["normalize"] = bool(tree.get("task", {}).get("normalize", False))
    return HubertConfig(**{**model, **overrides}).validate()
