"""Building a dataclass from parsed YAML, with a rule per field, and the rules config.py uses.

Generic: it knows nothing of Parley's sections (engine/config.py). A key the dataclass lacks, a
value of the wrong type or one its field's rule refuses raises one ConfigError naming the key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable


class ConfigError(ValueError):
    """The config file is invalid; the message names the key."""


def check(predicate: Callable[[Any], bool], rule: str) -> dict:
    return {"check": predicate, "rule": rule}


def choice(*options: str) -> dict:
    return check(lambda v: v in options, "one of " + ", ".join(options))


def positive() -> dict:
    return check(lambda v: v > 0, "> 0")


def at_least(low: float) -> dict:
    return check(lambda v: v >= low, f">= {low}")


def between(low: float, high: float, low_open: bool = False) -> dict:
    if low_open:
        return check(lambda v: low < v <= high, f"in ({low}, {high}]")
    return check(lambda v: low <= v <= high, f"in [{low}, {high}]")


# ---- building ------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {type(value).__name__}")
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list, got {type(value).__name__}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping, got {type(value).__name__}")
        return {str(k): _convert(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # ids like 1234567890 written without quotes
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def build(cls: type, data: dict, prefix: str) -> Any:
    """`cls` from mapping `data`; `prefix` is the key path of `data` in error messages."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            where = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing (required)")
            continue
        value = _convert(data[name], hints[name], key)
        check = f.metadata.get("check")
        if check is not None and value is not None and not check(value):
            raise ConfigError(f"{key}: must be {f.metadata['rule']}, got {value!r}")
        kwargs[name] = value
    return cls(**kwargs)
