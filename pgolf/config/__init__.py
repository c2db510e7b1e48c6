"""Resolved configuration: one frozen section per concern, named presets, CLI overrides.

Sections live one per file (data, model, train, pack, eval) so each concern owns
its knobs. A preset is a name every section may refine: ``tiny`` shrinks the model
and the step counts together. Sections that do not mention a preset keep their
defaults, so ``default`` is always just the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pgolf.config.base import closest, dumps, from_dict, parse_override, replace_fields, to_dict
from pgolf.config.data import PRESETS as DATA_PRESETS
from pgolf.config.data import DataConfig
from pgolf.config.eval import PRESETS as EVAL_PRESETS
from pgolf.config.eval import EvalConfig
from pgolf.config.model import PRESETS as MODEL_PRESETS
from pgolf.config.model import ModelConfig
from pgolf.config.pack import PRESETS as PACK_PRESETS
from pgolf.config.pack import PackConfig
from pgolf.config.train import PRESETS as TRAIN_PRESETS
from pgolf.config.train import TrainConfig
from pgolf.errors import ConfigError

SECTIONS: dict[str, tuple[type, dict[str, dict[str, Any]]]] = {
    "data": (DataConfig, DATA_PRESETS),
    "model": (ModelConfig, MODEL_PRESETS),
    "train": (TrainConfig, TRAIN_PRESETS),
    "pack": (PackConfig, PACK_PRESETS),
    "eval": (EvalConfig, EVAL_PRESETS),
}
PRESET_NAMES = sorted({"default"} | {name for _, p in SECTIONS.values() for name in p})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    pack: PackConfig = dataclasses.field(default_factory=PackConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    # Name of the preset this config started from (informational, kept in run dirs).
    preset: str = "default"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset}
        for name in SECTIONS:
            out[name] = to_dict(getattr(self, name))
        return out

    def to_json(self) -> str:
        return dumps(self.to_dict())

    def save(self, path: str | Path) -> None:
        from pgolf.io import atomic_write_text

        atomic_write_text(path, self.to_json())

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> RunConfig:
        """Apply ``section.key=value`` strings; all-or-nothing, typed, closest-key errors."""
        grouped: dict[str, dict[str, str]] = {}
        for text in overrides:
            section, key, value = parse_override(text)
            if section not in SECTIONS:
                raise ConfigError(
                    f"unknown config section '{section}'; {closest(section, SECTIONS)}"
                )
            grouped.setdefault(section, {})[key] = value
        updates = {
            section: replace_fields(getattr(self, section), values, section)
            for section, values in grouped.items()
        }
        return dataclasses.replace(self, **updates)


def preset(name: str) -> RunConfig:
    if name not in PRESET_NAMES:
        raise ConfigError(f"unknown preset '{name}'; {closest(name, PRESET_NAMES)}")
    sections = {}
    for section, (cls, presets) in SECTIONS.items():
        sections[section] = replace_fields(cls(), presets.get(name, {}), section)
    return RunConfig(preset=name, **sections)


def resolve(preset_name: str = "default", overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    return preset(preset_name).with_overrides(list(overrides))


def from_json(data: dict[str, Any] | str) -> RunConfig:
    """Rebuild a RunConfig written by ``to_json``; missing sections take defaults."""
    if isinstance(data, str):
        data = json.loads(data)
    unknown = set(data) - set(SECTIONS) - {"preset"}
    if unknown:
        raise ConfigError(f"unknown config sections {sorted(unknown)}; valid: {sorted(SECTIONS)}")
    sections = {
        name: from_dict(cls, data.get(name, {}), name) for name, (cls, _) in SECTIONS.items()
    }
    return RunConfig(preset=data.get("preset", "default"), **sections)


def load(path: str | Path) -> RunConfig:
    return from_json(Path(path).read_text())


__all__ = [
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "PackConfig",
    "EvalConfig",
    "PRESET_NAMES",
    "preset",
    "resolve",
    "from_json",
    "load",
]
