"""The challenge shard format: round trip, memory-mapped reads, one test per error path."""

from __future__ import annotations

import numpy as np
import pytest

from pgolf.data.shards import (
    HEADER_BYTES,
    MAGIC,
    ShardError,
    list_shards,
    load_split,
    read_header,
    read_shard,
    shard_name,
    write_shard,
)
from pgolf.errors import DataError


def _header(magic=MAGIC, version=1, count=0) -> bytes:
    h = np.zeros(256, dtype="<i4")
    h[0], h[1], h[2] = magic, version, count
    return h.tobytes()


def test_round_trip_and_exact_layout(tmp_path):
    tokens = np.array([1, 2, 65535, 0, 1023], dtype=np.int64)
    path = tmp_path / "fineweb_val_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    assert raw[:HEADER_BYTES] == _header(count=5)
    assert raw[HEADER_BYTES:] == tokens.astype("<u2").tobytes()
    assert read_header(path) == 5
    back = read_shard(path)
    assert isinstance(back, np.memmap) and back.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(back, tokens)


def test_empty_shard(tmp_path):
    path = tmp_path / "x.bin"
    write_shard(path, np.zeros(0, dtype=np.uint16))
    assert read_header(path) == 0 and read_shard(path, vocab_size=4).size == 0


def test_write_rejects_ids_outside_uint16(tmp_path):
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "x.bin", np.array([70000]))
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "x.bin", np.array([-1]))
    assert not (tmp_path / "x.bin").exists()


def test_bad_magic(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(_header(magic=12345))
    with pytest.raises(ShardError, match=rf"bad\.bin: bad magic 12345, expected {MAGIC}"):
        read_header(path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "v2.bin"
    path.write_bytes(_header(version=2))
    with pytest.raises(ShardError, match=r"v2\.bin: unsupported shard version 2"):
        read_shard(path)


def test_size_disagrees_with_header(tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(_header(count=10) + b"\0\0" * 9)
    with pytest.raises(
        ShardError, match=r"short\.bin: header says 10 tokens .* file is 1042 bytes"
    ):
        read_header(path)
    path.write_bytes(_header(count=1) + b"\0\0" * 2)  # too long is as wrong as too short
    with pytest.raises(ShardError, match="header says 1 tokens"):
        read_header(path)


def test_negative_count(tmp_path):
    path = tmp_path / "neg.bin"
    path.write_bytes(_header(count=-1))
    with pytest.raises(ShardError, match="header says -1 tokens"):
        read_header(path)


def test_file_shorter_than_header(tmp_path):
    path = tmp_path / "tiny.bin"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(
        ShardError, match=r"tiny\.bin: file is 10 bytes, shorter than the 1024-byte"
    ):
        read_header(path)


def test_missing_file(tmp_path):
    with pytest.raises(ShardError, match=r"nope\.bin: cannot read shard"):
        read_header(tmp_path / "nope.bin")


def test_token_id_not_below_vocab(tmp_path):
    path = tmp_path / "ids.bin"
    write_shard(path, np.array([1, 5, 1024, 3]))
    assert read_shard(path, vocab_size=1025).size == 4
    with pytest.raises(
        ShardError, match=r"ids\.bin: token id 1024 at position 2 is >= vocab size 1024"
    ):
        read_shard(path, vocab_size=1024)


def test_list_and_load_split(tmp_path):
    for i, chunk in enumerate(([1, 2, 3], [4, 5], [6])):
        write_shard(tmp_path / shard_name("fineweb", "train", i), np.array(chunk))
    (tmp_path / "fineweb_train_1.bin").write_bytes(b"")  # not NNNNNN: ignored
    names = [p.name for p in list_shards(tmp_path, "train")]
    assert names == [f"fineweb_train_{i:06d}.bin" for i in range(3)]
    np.testing.assert_array_equal(load_split(tmp_path, "train"), [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(load_split(tmp_path, "train", max_tokens=4), [1, 2, 3, 4])
    np.testing.assert_array_equal(load_split(tmp_path, "train", vocab_size=7), [1, 2, 3, 4, 5, 6])
    with pytest.raises(ShardError, match="vocab size 6"):
        load_split(tmp_path, "train", vocab_size=6)


def test_mixed_prefixes_are_refused_unless_one_is_named(tmp_path):
    write_shard(tmp_path / shard_name("fineweb", "train", 0), np.array([1]))
    write_shard(tmp_path / shard_name("other", "train", 0), np.array([2]))
    with pytest.raises(DataError, match="several prefixes"):
        list_shards(tmp_path, "train")
    assert [p.name for p in list_shards(tmp_path, "train", prefix="other")] == [
        "other_train_000000.bin"
    ]


def test_list_shards_errors(tmp_path):
    with pytest.raises(DataError, match="no val shards"):
        list_shards(tmp_path, "val")
    with pytest.raises(DataError, match="data directory not found"):
        list_shards(tmp_path / "missing", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        list_shards(tmp_path, "test")
