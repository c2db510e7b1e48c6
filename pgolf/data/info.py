"""``pgolf data info``: what a data directory holds, counted the way the evaluator counts it.

Per split: shards, documents (BOS tokens), tokens, and bytes as the bpb tables count them
(``ByteTable.stream_bytes`` of the split's whole token stream). Every shard header is
validated and every id checked against the vocabulary on the way. When the directory
has our manifest.json the figures are checked against it, and the tokenizer's sha256
against the one the shards were built with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pgolf.data.bpb import ByteTable
from pgolf.data.build import TOKENIZER_NAME, load_manifest
from pgolf.data.shards import SPLITS, list_shards, read_shard
from pgolf.data.tokenizer import load_tokenizer, sha256_file
from pgolf.errors import DataError

# Val first: it is the split people look for.
ORDER = ("val", "train")
# Tokens per slice when scanning a shard: bounds the int64 temporaries to ~100 MB.
_SLICE = 1 << 23


def split_stats(data_dir: Path, split: str, sp: Any, table: ByteTable) -> dict[str, Any]:
    bos = int(sp.bos_id())
    stats = {"shards": 0, "docs": 0, "tokens": 0, "bytes": 0}
    prev: int | None = None
    try:
        paths = list_shards(data_dir, split)
    except DataError:
        return stats  # e.g. fetched with --train-shards 0; data_info fails if nothing is there
    for path in paths:
        tokens = read_shard(path, vocab_size=table.vocab_size)
        stats["shards"] += 1
        stats["tokens"] += int(tokens.size)
        for start in range(0, tokens.size, _SLICE):
            piece = np.asarray(tokens[start : start + _SLICE])
            stats["docs"] += int(np.count_nonzero(piece == bos))
            if prev is None:
                stats["bytes"] += table.stream_bytes(piece)
            else:
                prevs = np.concatenate(([prev], piece[:-1]))
                stats["bytes"] += int(table.target_bytes(prevs, piece).sum())
            prev = int(piece[-1])
    return stats


def resolve_tokenizer(data_dir: Path, tokenizer: str | Path | None) -> Path:
    if tokenizer is not None:
        return Path(tokenizer)
    local = data_dir / TOKENIZER_NAME
    if local.is_file():
        return local
    raise DataError(
        f"{data_dir}: no {TOKENIZER_NAME} here; pass --tokenizer PATH to the .model the shards "
        "were encoded with"
    )


def data_info(data_dir: str | Path, tokenizer: str | Path | None = None) -> dict[str, Any]:
    """Flat ``{val_tokens, val_bytes, ...}`` figures of a data directory, checked."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found (build one with `pgolf data build`)")
    tok_path = resolve_tokenizer(data_dir, tokenizer)
    sp = load_tokenizer(tok_path)
    table = ByteTable.from_processor(sp)
    manifest = load_manifest(data_dir)
    sha = sha256_file(tok_path)
    out: dict[str, Any] = {
        "dir": str(data_dir),
        "tokenizer": str(tok_path),
        "tokenizer_sha256": sha,
        "vocab_size": table.vocab_size,
    }
    for split in ORDER:
        for key, value in split_stats(data_dir, split, sp, table).items():
            out[f"{split}_{key}"] = value
    if not any(out[f"{split}_shards"] for split in ORDER):
        raise DataError(
            f"{data_dir}: no shards (*_val_NNNNNN.bin, *_train_NNNNNN.bin); "
            "build them with `pgolf data build`"
        )
    for split in ORDER:
        if out[f"{split}_bytes"]:
            out[f"{split}_tokens_per_byte"] = out[f"{split}_tokens"] / out[f"{split}_bytes"]
    if manifest is not None:
        check_against_manifest(data_dir, manifest, out)
        out["manifest_check"] = "ok"
    return out


def check_against_manifest(data_dir: Path, manifest: dict[str, Any], info: dict[str, Any]) -> None:
    built_with = manifest.get("tokenizer", {}).get("sha256")
    if built_with and built_with != info["tokenizer_sha256"]:
        raise DataError(
            f"{info['tokenizer']}: sha256 {info['tokenizer_sha256'][:12]}… differs from the "
            f"tokenizer {data_dir} was built with ({built_with[:12]}…); pass the right --tokenizer"
        )
    for split in SPLITS:
        recorded = manifest.get("splits", {}).get(split, {})
        for key in ("docs", "tokens", "bytes"):
            want, got = recorded.get(key), info[f"{split}_{key}"]
            if want is not None and want != got:
                raise DataError(
                    f"{data_dir}: {split} shards hold {got} {key} but manifest.json records "
                    f"{want}; the directory was modified after the build, rebuild it"
                )
        shards = recorded.get("shards")
        if shards is not None and len(shards) != info[f"{split}_shards"]:
            raise DataError(
                f"{data_dir}: {info[f'{split}_shards']} {split} shards on disk but manifest.json "
                f"lists {len(shards)}; rebuild the directory"
            )
