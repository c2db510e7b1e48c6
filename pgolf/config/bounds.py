"""Exact types and upper bounds of the model config, checked before any model is built.

A model config arrives from ``--set``, a run's config.json or an artifact header that
someone else wrote. ``ModelConfig.__post_init__`` holds the lower bounds and cross-field
rules; this module adds what protects the machine: every field has its annotated type
(11.5 layers is no model, and a float would fail deep inside ``GPT``), floats are finite,
and every size has an upper bound, so no config can make ``GPT(cfg)`` loop or allocate
without limit (``num_layers: 100000`` used to grow until the memory cap).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from typing import Any

from pgolf.config.base import need

# Upper bounds, far above any model that fits 16 MB (the record models have 9-13 layers of
# width 512) yet small enough that building the model on the meta device stays instant.
MODEL_MAX: dict[str, float] = {
    "num_layers": 256,
    "model_dim": 16_384,
    "num_heads": 256,
    "num_kv_heads": 256,
    "mlp_mult": 64.0,
    "train_seq_len": 1 << 20,
    "bigram_buckets": 1 << 20,
    "bigram_dim": 16_384,
    "value_embed_dim": 16_384,
    "recur_passes": 64,  # depth recurrence: forward cost grows with it (records use 2-3)
}
MAX_ITEMS = 1024  # elements of a tuple-valued field (value_embed_layers)


def check_model(cfg: Any) -> None:
    """ValueError (one line, the field named) unless every field has its type and bound."""
    for name, typ in _field_types(type(cfg)).items():
        value = getattr(cfg, name)
        need(_has_type(value, typ), f"{name} must be {_describe(typ)}, got {value!r}")
        cap = MODEL_MAX.get(name)
        if cap is not None:
            need(value <= cap, f"{name} must be at most {cap:g}, got {value}")


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _has_type(value: Any, typ: Any) -> bool:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(typ))
    if origin is typing.Literal:
        return value in typing.get_args(typ)
    if origin in (tuple, list):
        item = next((a for a in typing.get_args(typ) if a is not Ellipsis), Any)
        return (
            isinstance(value, (tuple, list))
            and len(value) <= MAX_ITEMS
            and all(_has_type(v, item) for v in value)
        )
    if typ is type(None):
        return value is None
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if typ is float:
        return (
            isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        )
    if typ is str:
        return isinstance(value, str)
    return True  # a type this module has no rule for: __post_init__ owns it


def _describe(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(typ))
    if origin in (tuple, list):
        return f"a list of at most {MAX_ITEMS} items, each {_describe(typing.get_args(typ)[0])}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(typ))
    words = {
        int: "an integer",
        float: "a finite number",
        bool: "true or false",
        str: "a string",
        type(None): "null",
    }
    return words.get(typ, str(typ))
