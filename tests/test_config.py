"""Config machinery: presets, typed --set overrides, closest-key errors, JSON round trip."""

from __future__ import annotations

import json

import pytest

from pgolf.config import PRESET_NAMES, DataConfig, RunConfig, from_json, load, preset, resolve
from pgolf.config.base import closest, parse_override
from pgolf.errors import ConfigError


def test_default_preset_is_dataclass_defaults():
    assert resolve() == RunConfig()
    assert resolve().data == DataConfig()
    assert {"default", "tiny"} <= set(PRESET_NAMES)


def test_tiny_preset_refines_sections():
    tiny = preset("tiny")
    assert tiny.preset == "tiny"
    assert tiny.data.val_docs == 64 and tiny.data.vocab_size == 512
    assert tiny.model != RunConfig().model  # the tiny preset shrinks the model too


def test_unknown_preset_names_closest():
    with pytest.raises(ConfigError, match="unknown preset 'tiyn'; did you mean 'tiny'"):
        preset("tiyn")


def test_set_parses_by_field_type():
    cfg = resolve(
        "default",
        [
            "data.val_docs=1_000",  # int with underscores
            "data.shard_tokens=1e6",  # integral float text for an int field
            "data.prefix=myset",  # str
            "train.train_seconds=12.5",  # float
            "eval.compile=false",  # bool
            "eval.ttt=none",  # Literal
            "model.value_embed_layers=0,1",  # tuple[int, ...]
        ],
    )
    assert cfg.data.val_docs == 1000 and cfg.data.shard_tokens == 1_000_000
    assert cfg.data.prefix == "myset" and cfg.train.train_seconds == 12.5
    assert cfg.eval.compile is False and cfg.eval.ttt == "none"
    assert cfg.model.value_embed_layers == (0, 1)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("data.val_docs=abc", "data.val_docs: expected an integer, got 'abc'"),
        ("data.val_docs=1.5", "expected an integer"),
        ("train.train_seconds=fast", "train.train_seconds: expected a number"),
        ("eval.compile=maybe", "expected a boolean"),
        ("eval.ttt=sometimes", r"'sometimes' is not one of \["),
    ],
)
def test_set_type_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        resolve("default", [override])


def test_unknown_key_names_closest_key():
    with pytest.raises(
        ConfigError, match="unknown config key 'data.val_doc'; did you mean 'val_docs'"
    ):
        resolve("default", ["data.val_doc=5"])
    with pytest.raises(ConfigError, match="did you mean 'shard_tokens'"):
        resolve("default", ["data.shard_token=5"])


def test_unknown_section_names_closest_section():
    with pytest.raises(ConfigError, match="unknown config section 'dta'; did you mean 'data'"):
        resolve("default", ["dta.val_docs=5"])


@pytest.mark.parametrize("text", ["data.val_docs", "val_docs=3"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="must"):
        parse_override(text)


def test_validation_errors_become_config_errors():
    with pytest.raises(ConfigError, match="invalid data config: val_docs must be >= 1"):
        resolve("default", ["data.val_docs=-1"])
    with pytest.raises(ConfigError, match="vocab_size must be in"):
        resolve("default", ["data.vocab_size=70000"])
    with pytest.raises(ConfigError, match="workers must be >= 0"):
        resolve("default", ["data.workers=-2"])


def test_overrides_are_all_or_nothing():
    base = resolve()
    with pytest.raises(ConfigError):
        base.with_overrides(["data.val_docs=5", "data.nope=1"])
    assert base.data.val_docs == DataConfig().val_docs  # frozen: nothing half-applied


def test_json_round_trip(tmp_path):
    cfg = resolve("tiny", ["data.val_docs=7", "model.value_embed_layers=1,2"])
    again = from_json(cfg.to_json())
    assert again == cfg
    path = tmp_path / "config.json"
    cfg.save(path)
    assert load(path) == cfg
    data = json.loads(path.read_text())
    assert data["preset"] == "tiny" and data["data"]["val_docs"] == 7
    assert data["model"]["value_embed_layers"] == [1, 2]  # tuples are JSON lists


def test_json_rejects_unknown_sections_and_keys():
    with pytest.raises(ConfigError, match="unknown config sections"):
        from_json({"dataa": {}})
    with pytest.raises(ConfigError, match="unknown config key 'data.bogus'"):
        from_json({"data": {"bogus": 1}})
    assert from_json({}) == RunConfig()  # missing sections take defaults


def test_frozen_and_keyword_only():
    cfg = DataConfig()
    with pytest.raises(AttributeError):
        cfg.val_docs = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        DataConfig(5)  # type: ignore[misc]


def test_closest_lists_options_when_nothing_is_close():
    assert closest("zzz", ["alpha", "beta"]).endswith("valid: alpha, beta")
