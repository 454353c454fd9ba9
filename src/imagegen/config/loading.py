"""Configs built from TOML files, `--set key=value` overrides and saved runs: unknown keys refused, each value
checked as its section's type says (values.py), and what a run saved by an earlier version meant kept."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .sections import METHOD_CONFIGS, MODEL_CONFIGS, FlowConfig, GenConfig
from .values import article, coerce

# Settings of the sample section that some methods do not read: a GAN or a VAE draws an image in one network call,
# with no sampler, steps or guidance (but sample.batch_size). A setting given for a method that does not read it
# would do nothing, so `load` refuses it. (The method and model sections are typed by method instead.)
UNET = ("flow", "edm")
READ_BY: dict[str, tuple[str, ...]] = dict.fromkeys(
    ("sample.sampler", "sample.steps", "sample.guidance", "sample.guidance_interval", "sample.eta",
     "sample.autoguidance", "sample.autoguidance_interval", "train.guide_fraction"), UNET)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build dataclass `cls` from a nested dict, rejecting unknown keys, values of the wrong type, choices not on
    the list and numbers out of range."""
    hints = typing.get_type_hints(cls, include_extras=True)
    if hasattr(cls, "section_types"):  # sections whose type depends on another setting (GenConfig's method)
        hints.update(cls.section_types(data))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UsageError(f"unknown config key '{where}{sorted(unknown)[0]}'; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UsageError(f"config key {where}{key} must be a table of settings")
            kwargs[key] = from_dict(hint, value, f"{where}{key}.")
        else:
            kwargs[key] = coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


# Settings of the model and method sections that runs were once saved without: a saved config that lacks one was
# trained with this value (the design before the setting existed), whatever the default has become since.
BEFORE_SETTING: dict[str, dict[str, Any]] = {
    "model": {"noise_scale": 1000.0, "patch": 1, "mid_attention": True, "spectral_norm": False, "minibatch_std": 0,
              "gan_conditioning": "add",  # 2026-11-26: "norm" became the default
              "max_levels": 3},  # 2026-12-03: 64 px GANs and VAEs start from 4x4
    "method": {"d_lr_scale": 1.0, "augment": 0.0},
    "train": {"guide_fraction": 0.0},  # 2026-12-07: runs keep a guide and sample with autoguidance 2
    "sample": {"autoguidance": 1.0,
               "autoguidance_interval": None},  # 2026-12-07: autoguidance left the pure-noise levels (sigma > 10)
}


def saved_config(data: dict[str, Any]) -> GenConfig:
    """A GenConfig saved with a run (config.json, a checkpoint's config) by this version or an earlier one.

    Before 2026-12 the model and method sections held every method's settings, flat, and a run read only its own
    method's: those are kept and the others, which did nothing, dropped. A setting that the run was saved without
    takes the value it was trained with (BEFORE_SETTING). Anything else is checked as `from_dict` checks it."""
    data = copy.deepcopy(data)
    method = data.get("method") if isinstance(data.get("method"), dict) else {}
    name = method.get("name", FlowConfig.name)
    if name not in METHOD_CONFIGS:
        return from_dict(GenConfig, data)  # refused there, with the choices
    for section, family, cls in (("method", METHOD_CONFIGS, METHOD_CONFIGS[name]),
                                 ("model", MODEL_CONFIGS, MODEL_CONFIGS[name])):
        given = data.get(section)
        if not isinstance(given, dict):
            continue
        flat = {f.name for c in family.values() for f in dataclasses.fields(c)}  # the old flat section's keys
        own = {f.name for f in dataclasses.fields(cls)}
        data[section] = {k: v for k, v in given.items() if k in own or k not in flat}
        data[section].update({k: v for k, v in BEFORE_SETTING[section].items() if k in own and k not in given})
    for section in ("train", "sample"):  # typed alike for every method
        if isinstance(data.get(section), dict):
            data[section] = {**BEFORE_SETTING[section], **data[section]}
    return from_dict(GenConfig, data)


def checked(cfg):
    """`cfg` built again from its values: the checks of `from_dict` for a config changed in code after loading."""
    return from_dict(type(cfg), to_dict(cfg))


def read_toml(path: str | Path, what: str) -> dict:
    """The TOML document at `path`, or a UsageError naming `what` ("config file", "space file") and the problem:
    missing, a directory, not UTF-8, not TOML, unreadable."""
    if not str(path):
        raise UsageError(f"{what} '': give the path of a TOML file")
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a directory, not a TOML file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{what} {path} is not valid TOML: {e}") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror or e}") from None


def load(cls, path: str | Path | None = None, overrides: list[str] | None = None, flags: dict | None = None):
    """Defaults <- TOML file <- `flags` (dotted keys, None = not given) <- `key.sub=value` overrides. A GenConfig
    setting given for a method that does not read it is refused: the method and model sections by their types
    (GenConfig.section_types), the sample section by READ_BY."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path, "config file")
    pairs = [(k, v) for k, v in (flags or {}).items() if v is not None]
    for item in overrides or []:
        key, sep, value = item.removeprefix("--").partition("=")
        if not sep:
            raise UsageError(f"override {item!r} must look like key.sub=value")
        pairs.append((key, value))
    for key, value in pairs:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UsageError(f"config key {p} is a value, not a table of settings")
        node[leaf] = value
    cfg = from_dict(cls, data)
    if isinstance(cfg, GenConfig):
        check_read(cfg, _dotted(data))
    return cfg


def check_read(cfg: GenConfig, given) -> None:
    """Refuse a setting among the dotted keys `given` that `cfg`'s method does not read."""
    method = cfg.method.name
    for key in sorted(given):
        readers = READ_BY.get(key)
        if readers is not None and method not in readers:
            raise UsageError(f"{key} is {article(readers[0])} {' and '.join(readers)} setting; the {method} method "
                             "does not read it")


def _dotted(data: dict, where: str = "") -> list[str]:
    """The dotted keys of the values in a nested dict: {"model": {"z_dim": 8}} -> ["model.z_dim"]."""
    keys = []
    for key, value in data.items():
        keys += _dotted(value, f"{where}{key}.") if isinstance(value, dict) else [f"{where}{key}"]
    return keys
