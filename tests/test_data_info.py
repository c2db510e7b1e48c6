"""`pgolf data info`: per-split docs/tokens/bytes, checked against shards and manifest."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.config import DataConfig
from pgolf.data.bpb import ByteTable
from pgolf.data.build import build
from pgolf.data.demo import topic_documents
from pgolf.data.info import data_info
from pgolf.data.shards import shard_name, write_shard
from pgolf.errors import DataError
from pgolf.logs import Logger


@pytest.fixture()
def built(tmp_path, demo_tokenizer):
    docs = [t for _, t in itertools.islice(topic_documents(), 40)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "data"
    cfg = DataConfig(val_docs=8, shard_tokens=2048, workers=1)
    manifest = build([src], out, cfg, demo_tokenizer, log=Logger(stream=io.StringIO()))
    return out, manifest


def test_info_matches_manifest(built):
    out, manifest = built
    info = data_info(out)
    for split in ("val", "train"):
        rec = manifest["splits"][split]
        assert info[f"{split}_docs"] == rec["docs"]
        assert info[f"{split}_tokens"] == rec["tokens"]
        assert info[f"{split}_bytes"] == rec["bytes"]
        assert info[f"{split}_shards"] == len(rec["shards"])
    assert info["manifest_check"] == "ok"
    assert info["val_docs"] == 8 and info["train_shards"] > 1


def test_cli_prints_key_value_lines(built, demo_tokenizer):
    out, manifest = built
    result = CliRunner().invoke(cli, ["data", "info", str(out), "--tokenizer", str(demo_tokenizer)])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(":", 1) for line in result.output.splitlines())
    assert int(lines["val_tokens"]) == manifest["splits"]["val"]["tokens"]
    assert int(lines["val_bytes"]) == manifest["splits"]["val"]["bytes"]
    assert int(lines["train_tokens"]) == manifest["splits"]["train"]["tokens"]
    assert int(lines["train_bytes"]) == manifest["splits"]["train"]["bytes"]
    assert lines["manifest_check"] == "ok"


def test_info_without_manifest_counts_bos(tmp_path, shared_dir):
    # Fetched challenge data: shards + tokenizer, no manifest of ours.
    tok = shared_dir / "tokenizers" / "fineweb_1024_bpe.model"
    the = 4  # "▁t": has a leading space
    write_shard(tmp_path / shard_name("fineweb", "val", 0), np.array([1, the, the, 1, the]))
    write_shard(tmp_path / shard_name("fineweb", "train", 0), np.array([1, the]))
    info = data_info(tmp_path, tok)
    assert info["val_docs"] == 2 and info["val_tokens"] == 5 and "manifest_check" not in info
    assert (
        info["val_bytes"] == ByteTable.from_model(tok).stream_bytes(np.array([1, 4, 4, 1, 4])) == 4
    )


def test_bytes_carry_across_shard_boundaries(tmp_path, shared_dir):
    tok = shared_dir / "tokenizers" / "fineweb_1024_bpe.model"
    write_shard(tmp_path / shard_name("fineweb", "train", 0), np.array([1, 4]))
    write_shard(tmp_path / shard_name("fineweb", "train", 1), np.array([4]))  # mid-document
    write_shard(tmp_path / shard_name("fineweb", "val", 0), np.array([1, 4, 4]))
    info = data_info(tmp_path, tok)
    assert info["train_bytes"] == info["val_bytes"] == 1 + 2


def test_info_errors(built, tmp_path, shared_dir):
    out, _ = built
    other = shared_dir / "tokenizers" / "fineweb_1024_bpe.model"
    with pytest.raises(DataError, match="differs from the tokenizer"):
        data_info(out, other)
    with pytest.raises(DataError, match="data directory not found"):
        data_info(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no tokenizer.model here; pass --tokenizer"):
        data_info(empty)
    with pytest.raises(DataError, match="empty: no shards"):
        data_info(empty, other)


def test_info_detects_modified_directory(built):
    out, manifest = built
    last = manifest["splits"]["train"]["shards"][-1]["name"]
    (out / last).unlink()
    with pytest.raises(DataError, match="manifest.json records"):
        data_info(out)


def test_info_rejects_bad_manifest_and_shards(built):
    out, manifest = built
    write_shard(out / manifest["splits"]["val"]["shards"][0]["name"], np.array([1, 60000]))
    with pytest.raises(DataError, match="is >= vocab size 512"):
        data_info(out)
    (out / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        data_info(out)
    (out / "manifest.json").write_text(json.dumps({"format": "pgolf-data-manifest", "version": 9}))
    with pytest.raises(DataError, match="manifest version 9"):
        data_info(out)
    (out / "manifest.json").write_text("[]")
    with pytest.raises(DataError, match="not a pgolf data manifest"):
        data_info(out)


def test_cli_info_error_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "error:" in result.output
