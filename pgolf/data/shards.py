"""The challenge's token shard format.

Layout (little-endian): 256 int32 header words — magic 20240520, version 1, token
count, the rest zero — then ``count`` uint16 tokens. Reads are memory-mapped so a
100M-token shard costs no RAM until touched.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pgolf.errors import DataError
from pgolf.io import atomic_open

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
TOKEN_DTYPE = np.dtype("<u2")
SPLITS = ("train", "val")


class ShardError(DataError):
    """A shard file whose header or size disagrees with the format."""


def shard_name(prefix: str, split: str, index: int) -> str:
    return f"{prefix}_{split}_{index:06d}.bin"


def write_shard(path: str | Path, tokens: np.ndarray) -> None:
    """Write tokens (any integer dtype, all < 65536) atomically in the challenge format."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 0xFFFF):
        raise ShardError(
            f"{path}: token ids must fit in uint16, got range {tokens.min()}..{tokens.max()}"
        )
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, tokens.size
    with atomic_open(path) as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())


def read_header(path: str | Path) -> int:
    """Validate a shard's header and size; return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror})") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path}: file is {size} bytes, shorter than the {HEADER_BYTES}-byte shard header"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(
            f"{path}: bad magic {int(header[0])}, expected {MAGIC} (not a FineWeb-format shard)"
        )
    if header[1] != VERSION:
        raise ShardError(
            f"{path}: unsupported shard version {int(header[1])}, this reader handles version {VERSION}"
        )
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ShardError(
            f"{path}: header says {count} tokens ({expected} bytes) but the file is {size} bytes "
            "(truncated or corrupted; rebuild it with `pgolf data build`)"
        )
    return count


def read_shard(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """Memory-mapped uint16 tokens of one shard; checks ids < vocab_size when given."""
    count = read_header(path)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))
    if vocab_size is not None and count:
        top = int(tokens.max())
        if top >= vocab_size:
            where = int(np.argmax(tokens >= vocab_size))
            raise ShardError(
                f"{path}: token id {top} at position {where} is >= vocab size {vocab_size} "
                "(shards built with a different tokenizer?)"
            )
    return tokens


def list_shards(data_dir: str | Path, split: str, prefix: str | None = None) -> list[Path]:
    """Shard paths of one split in index order; any prefix is accepted when none is given."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found (build one with `pgolf data build`)")
    pattern = re.compile(rf"^(?P<prefix>.+)_{split}_(?P<index>\d{{6}})\.bin$")
    found, prefixes = [], set()
    for p in data_dir.iterdir():
        m = pattern.match(p.name)
        if m and (prefix is None or m["prefix"] == prefix):
            found.append((int(m["index"]), p))
            prefixes.add(m["prefix"])
    if len(prefixes) > 1:
        # Two builds in one directory would interleave by index into one corrupt stream.
        raise DataError(
            f"{data_dir}: {split} shards with several prefixes ({', '.join(sorted(prefixes))}); "
            "keep one build per directory"
        )
    if not found:
        raise DataError(
            f"{data_dir}: no {split} shards (*_{split}_NNNNNN.bin); build them with `pgolf data build`"
        )
    return [p for _, p in sorted(found)]


def load_split(
    data_dir: str | Path, split: str, vocab_size: int | None = None, max_tokens: int | None = None
) -> np.ndarray:
    """All tokens of a split concatenated in shard order (a copy; meant for val-sized splits)."""
    parts, total = [], 0
    for path in list_shards(data_dir, split):
        tokens = read_shard(path, vocab_size)
        if max_tokens is not None:
            tokens = tokens[: max_tokens - total]
        parts.append(np.asarray(tokens))
        total += tokens.size
        if max_tokens is not None and total >= max_tokens:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=TOKEN_DTYPE)
