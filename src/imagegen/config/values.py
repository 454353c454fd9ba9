"""The values of a config, checked against their type hints: whole numbers, numbers in their ranges
(`Range`), choices (`Literal`), unions, comma lists and tuples, from TOML or from `--set key=value` text, each
refusal one line naming the key."""

from __future__ import annotations

import math
import types
import typing
from typing import Annotated, Literal

from ..errors import UsageError


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def coerce(value, hint, key: str):
    """Accept a value of the hinted type, or a string that parses as one (from the command line)."""
    origin = typing.get_origin(hint)
    if origin is Annotated:  # a scalar and its rules: Range, CommaList
        base, *rules = typing.get_args(hint)
        value = _scalar(value, base, key, finite=not any(getattr(r, "inf", False) for r in rules))
        for rule in rules:
            rule.check(value, key)
        return value
    if origin is tuple:
        return _coerce_tuple(value, typing.get_args(hint)[0], key)
    if origin is Literal:
        return choose(value, typing.get_args(hint), key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), key)
    return _scalar(value, hint, key)


def _coerce_union(value, options: tuple, key: str):
    """The first of `options` that accepts `value`; None (or "none") where None is one of them."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if type(None) in options:
            return None
        raise UsageError(f"config key {key} may not be empty")
    members = [t for t in options if t is not type(None)]
    errors = []
    for t in members:
        try:
            return coerce(value, t, key)
        except UsageError as e:
            errors.append(e)
    if len(members) == 1:  # e.g. `Positive | None`: that type's own message (its range)
        raise errors[0]
    words = [w for t in members for w in _choices(t)]
    raise UsageError(f"config key {key} must be one of {', '.join(words)}; got {value!r}")


def _choices(t) -> list[str]:
    """How a member of a union reads in an error message: a bool is true or false, a Literal its values."""
    if t is bool:
        return ["true", "false"]
    if typing.get_origin(t) is Literal:
        return [str(c) for c in typing.get_args(t)]
    return [getattr(typing.get_origin(t) or t, "__name__", str(t))]


def choose(value, choices: tuple, key: str):
    """One of a Literal's `choices`, given as itself or as its text (from the command line)."""
    for c in choices:
        if (type(value) is type(c) and value == c) or (isinstance(value, str) and value == str(c)):
            return c
    raise UsageError(f"config key {key} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _scalar(value, t: type, key: str, finite: bool = True):
    """A bool, int, float or str from itself or its text; a float is never NaN, and infinite only if `finite` is
    False."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        raise UsageError(f"config key {key} may not be empty")
    out = _parse(value, t)
    if out is None:
        raise UsageError(f"config key {key} must be {_KINDS.get(t, t.__name__)}; got {value!r}")
    if t is float and math.isnan(out):
        raise UsageError(f"config key {key} must be a number; got {value!r}")
    if t is float and finite and math.isinf(out):
        raise UsageError(f"config key {key} must be a finite number; got {value!r}")
    return out


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _parse(value, t: type):
    """`value` as type `t`, or None when it is not one (a bool is not an int; an int is a float)."""
    if isinstance(value, bool):
        return value if t is bool else None
    if isinstance(value, t) or (t is float and isinstance(value, int)):
        try:
            return t(value)
        except OverflowError:  # a TOML integer of 400 digits is no float
            return None
    if not isinstance(value, str):
        return None
    if t is bool:
        text = value.lower()
        return text in ("true", "1", "yes") if text in ("true", "1", "yes", "false", "0", "no") else None
    try:
        return t(value)
    except ValueError:
        return None


def _coerce_tuple(value, item, key: str) -> tuple:
    """A tuple from a TOML list or a comma-separated string ("32,64,64")."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise UsageError(f"config key {key} must be a non-empty list, e.g. 32,64,64")
    return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
