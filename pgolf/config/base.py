"""Config machinery shared by every section: typed overrides, JSON round trip, presets.

A section is a frozen, keyword-only dataclass. Each field carries a comment in
its section file and is validated in ``__post_init__``. Overrides come from the
command line as ``section.key=value`` strings; values are parsed against the
field's annotated type so ``--set train.lr=abc`` fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from typing import Any, TypeVar

from pgolf.errors import ConfigError

T = TypeVar("T")


def need(cond: bool, msg: str) -> None:
    """Validation step of a section's ``__post_init__``: ValueError with the message if false."""
    if not cond:
        raise ValueError(msg)


def closest(name: str, options: typing.Iterable[str]) -> str:
    """A "did you mean" suffix naming the closest valid option, or the full list."""
    options = sorted(options)
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    hint = f"did you mean '{match[0]}'? " if match else ""
    return f"{hint}valid: {', '.join(options)}"


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse_scalar(text: str, typ: Any, where: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        errors = []
        for arg in args:
            try:
                return _parse_scalar(text, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: cannot parse {text!r} as {typ}")
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise ConfigError(f"{where}: {text!r} is not one of {list(choices)}")
    if origin in (tuple, list):
        inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
        parts = [p for p in text.strip("()[]").split(",") if p.strip()]
        return tuple(_parse_scalar(p.strip(), inner, where) for p in parts)
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected a boolean (true/false), got {text!r}")
    if typ is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"{where}: expected an integer, got {text!r}") from None
    if typ is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {text!r}") from None
        return _finite(value, where)
    if typ is str:
        return text
    raise ConfigError(f"{where}: fields of type {typ} cannot be set from the command line")


def _finite(value: float, where: str) -> float:
    # No knob means anything at inf or nan, and both pass range checks written as
    # `x > 0` (inf) or silently poison arithmetic (nan): reject them for every field at once.
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value}")
    return value


def _coerce_json(value: Any, typ: Any, where: str) -> Any:
    """Accept a JSON value for a field (lists become tuples, ints become floats)."""
    if isinstance(value, str) and typ is not str:
        return _parse_scalar(value, typ, where)
    if isinstance(value, float):
        _finite(value, where)  # JSON configs may carry NaN / Infinity too
    origin = typing.get_origin(typ)
    if origin in (tuple, list) and isinstance(value, list):
        for item in value:
            if isinstance(item, float):
                _finite(item, where)
        return tuple(value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def replace_fields(section: T, updates: dict[str, Any], section_name: str) -> T:
    """dataclasses.replace with a closest-key error and JSON/str coercion."""
    types_ = _field_types(type(section))
    clean = {}
    for key, value in updates.items():
        where = f"{section_name}.{key}"
        if key not in types_:
            raise ConfigError(f"unknown config key '{where}'; {closest(key, types_)}")
        clean[key] = _coerce_json(value, types_[key], where)
    try:
        return dataclasses.replace(section, **clean)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {section_name} config: {e}") from None


def parse_override(text: str) -> tuple[str, str, str]:
    """'section.key=value' -> (section, key, value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, value = text.split("=", 1)
    if "." not in path:
        raise ConfigError(f"override {text!r} must name a section, like model.num_layers=4")
    section, key = path.split(".", 1)
    return section.strip(), key.strip(), value.strip()


def to_dict(section: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def from_dict(cls: type[T], data: dict[str, Any], section_name: str) -> T:
    """Rebuild a section from JSON, rejecting unknown keys (a typo must never pass silently)."""
    return replace_fields(cls(), data, section_name)


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
