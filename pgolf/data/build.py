"""``pgolf data build``: text files → tokenizer (trained or given) → challenge-format shards.

Output layout of DIR (matches the challenge's ``datasets/fineweb10B_sp1024/``):

    fineweb_val_000000.bin ...     val = the first ``val_docs`` documents in input order
    fineweb_train_000000.bin ...   train = every other document
    tokenizer.model                the tokenizer the shards were encoded with
    manifest.json                  counts per split, tokenizer sha256, inputs, settings
    config.json                    the resolved run config (written by the CLI)

Every document becomes ``[BOS] + tokens`` (no EOS), and documents run on across shard
boundaries, as in the challenge's shards. Nothing in the outputs depends on time, worker
count or machine, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgolf.config.data import DataConfig
from pgolf.data.bpb import ByteTable
from pgolf.data.corpus import check_inputs, iter_documents, iter_records
from pgolf.data.encode import chunk_records, encode_all, worker_count
from pgolf.data.shards import SPLITS, shard_name, write_shard
from pgolf.data.spm_train import train_tokenizer
from pgolf.data.tokenizer import load_tokenizer, sha256_file
from pgolf.errors import DataError
from pgolf.io import atomic_write_text
from pgolf.logs import Logger

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "pgolf-data-manifest"
MANIFEST_VERSION = 1
TOKENIZER_NAME = "tokenizer.model"


class SplitWriter:
    """Streams one split's tokens into fixed-size shards and counts docs, tokens and bytes."""

    def __init__(self, out_dir: Path, prefix: str, split: str, shard_tokens: int, table: ByteTable):
        self.out_dir, self.prefix, self.split = out_dir, prefix, split
        self.shard_tokens = shard_tokens
        self.table = table
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards: list[dict[str, Any]] = []
        self.docs = self.tokens = self.bytes = self.text_bytes = 0
        self.prev_token: int | None = None

    def add(self, tokens: np.ndarray, docs: int, text_bytes: int) -> None:
        if tokens.size == 0:
            return
        self.docs += docs
        self.text_bytes += text_bytes
        self.tokens += tokens.size
        self._count_bytes(tokens)
        self.buffer.append(tokens)
        self.buffered += tokens.size
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _count_bytes(self, tokens: np.ndarray) -> None:
        # Same as ByteTable.stream_bytes over the whole split, computed piece by piece: every
        # token but the split's first is a target whose predecessor may sit in the last piece.
        if self.prev_token is None:
            self.bytes += self.table.stream_bytes(tokens)
        else:
            prev = np.concatenate(([self.prev_token], tokens[:-1]))
            self.bytes += int(self.table.target_bytes(prev, tokens).sum())
        self.prev_token = int(tokens[-1])

    def _flush(self, count: int) -> None:
        data = np.concatenate(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        head, rest = data[:count], data[count:]
        name = shard_name(self.prefix, self.split, len(self.shards))
        write_shard(self.out_dir / name, head)
        self.shards.append({"name": name, "tokens": int(head.size)})
        self.buffer = [rest] if rest.size else []
        self.buffered = int(rest.size)

    def finish(self) -> dict[str, Any]:
        if self.buffered:
            self._flush(self.buffered)
        return {
            "docs": self.docs,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "text_bytes": self.text_bytes,
            "shards": self.shards,
        }


def remove_stale_shards(out_dir: Path, prefix: str) -> int:
    """Delete shards a previous build left in DIR, so old and new files never mix."""
    removed = 0
    for split in SPLITS:
        for path in out_dir.glob(f"{prefix}_{split}_[0-9][0-9][0-9][0-9][0-9][0-9].bin"):
            path.unlink()
            removed += 1
    return removed


def prepare_tokenizer(
    inputs: Sequence[Path], out_dir: Path, cfg: DataConfig, tokenizer: Path | None, log: Logger
) -> dict[str, Any]:
    """Copy the given tokenizer into DIR, or train one; return the manifest's tokenizer entry."""
    target = out_dir / TOKENIZER_NAME
    if tokenizer is not None:
        load_tokenizer(tokenizer)  # fail on a bad model before copying it anywhere
        if tokenizer.resolve() != target.resolve():
            shutil.copyfile(tokenizer, target)
        entry: dict[str, Any] = {"source": str(tokenizer), "trained": False}
    else:
        started = time.perf_counter()
        train_docs = itertools.islice(
            iter_documents(inputs, cfg.text_field),
            cfg.val_docs,
            cfg.val_docs + cfg.tokenizer_train_docs,
        )
        first = next(train_docs, None)
        if first is None:
            # The tokenizer learns from train documents only; say why there are none.
            raise DataError(
                f"{', '.join(map(str, inputs))}: no documents after the first val_docs="
                f"{cfg.val_docs} (the val split) to train a tokenizer on; lower --val-docs or "
                "add input"
            )
        train_docs = itertools.chain([first], train_docs)
        training = train_tokenizer(
            train_docs, target, cfg.vocab_size, cfg.tokenizer_max_sentence_chars
        )
        log.log(
            "tokenizer_trained",
            vocab_size=cfg.vocab_size,
            docs=training["train_docs"],
            seconds=round(time.perf_counter() - started, 2),
        )
        entry = {"source": None, "trained": True, "training": training}
    sp = load_tokenizer(target)
    if sp.vocab_size() > 65_536:
        raise DataError(
            f"{tokenizer or target}: vocab size {sp.vocab_size()} does not fit uint16 shards (max 65536)"
        )
    if sp.bos_id() < 0:
        raise DataError(f"{tokenizer or target}: tokenizer has no BOS token; documents need one")
    return {
        "path": TOKENIZER_NAME,
        "sha256": sha256_file(target),
        "vocab_size": int(sp.vocab_size()),
        "bos_id": int(sp.bos_id()),
        **entry,
    }


def build(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    cfg: DataConfig,
    tokenizer: str | Path | None = None,
    *,
    log: Logger | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Build shards + manifest in ``out_dir``; returns the manifest."""
    log = log or Logger()
    paths = check_inputs(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The manifest goes first and comes back last: an interrupted build has none, so it can
    # never pass for a complete one.
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    removed = remove_stale_shards(out_dir, cfg.prefix)
    if removed:
        log.log("removed_stale_shards", count=removed, dir=str(out_dir))
    tok = prepare_tokenizer(paths, out_dir, cfg, Path(tokenizer) if tokenizer else None, log)
    started = time.perf_counter()
    splits = _encode_and_write(paths, out_dir, cfg, progress)
    seconds = time.perf_counter() - started
    _check_splits(splits, cfg, paths)
    manifest = _manifest(paths, cfg, tok, splits)
    atomic_write_text(out_dir / MANIFEST_NAME, json_dumps(manifest))
    for split in SPLITS:
        s = splits[split]
        log.log(
            f"split:{split}",
            docs=s["docs"],
            tokens=s["tokens"],
            bytes=s["bytes"],
            shards=len(s["shards"]),
        )
    text_mb = sum(s["text_bytes"] for s in splits.values()) / 1e6
    log.log(
        "build_done",
        out=str(out_dir),
        encode_seconds=round(seconds, 2),
        text_MB=round(text_mb, 3),
        MB_per_s=round(text_mb / max(seconds, 1e-9), 3),
        workers=worker_count(cfg.workers),
    )
    return manifest


def _encode_and_write(
    paths: Sequence[Path], out_dir: Path, cfg: DataConfig, progress: bool | None
) -> dict[str, dict[str, Any]]:
    from tqdm import tqdm

    table = ByteTable.from_model(out_dir / TOKENIZER_NAME)
    writers = {s: SplitWriter(out_dir, cfg.prefix, s, cfg.shard_tokens, table) for s in SPLITS}
    consumed = [0]
    total = sum(p.stat().st_size for p in paths)
    chunks = chunk_records(iter_records(paths, consumed), cfg.val_docs, cfg.chunk_docs)
    workers = worker_count(cfg.workers)
    disable = None if progress is None else not progress
    with tqdm(total=total, unit="B", unit_scale=True, desc="encode", disable=disable) as bar:
        for enc in encode_all(chunks, str(out_dir / TOKENIZER_NAME), cfg.text_field, workers):
            writers[enc.split].add(enc.tokens, enc.docs, enc.text_bytes)
            bar.update(consumed[0] - bar.n)
    return {s: w.finish() for s, w in writers.items()}


def _check_splits(
    splits: dict[str, dict[str, Any]], cfg: DataConfig, paths: Sequence[Path]
) -> None:
    total = splits["val"]["docs"] + splits["train"]["docs"]
    if splits["train"]["docs"] == 0:
        raise DataError(
            f"{', '.join(map(str, paths))}: {total} documents, and val_docs={cfg.val_docs} "
            "leaves none for train; lower --val-docs or add input"
        )


def _manifest(
    paths: Sequence[Path], cfg: DataConfig, tok: dict[str, Any], splits: dict[str, Any]
) -> dict[str, Any]:
    from pgolf.config.base import to_dict

    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "document_layout": "[BOS] + tokens per document, no EOS; documents run across shards",
        "prefix": cfg.prefix,
        "tokenizer": tok,
        "inputs": [{"path": str(p), "bytes": p.stat().st_size} for p in paths],
        # Performance knobs (workers, chunk_docs) never change the output, so they stay out
        # and a parallel build's manifest equals a serial one's.
        "settings": {k: v for k, v in to_dict(cfg).items() if k not in ("workers", "chunk_docs")},
        "splits": splits,
    }


def json_dumps(data: dict[str, Any]) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def load_manifest(data_dir: str | Path) -> dict[str, Any] | None:
    """manifest.json of a build, None when absent (fetched challenge data has none of ours)."""
    import json

    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); rebuild with `pgolf data build`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: not a pgolf data manifest (expected format {MANIFEST_FORMAT!r})")
    if manifest.get("version") != MANIFEST_VERSION:
        raise DataError(
            f"{path}: manifest version {manifest.get('version')!r}, this pgolf reads version "
            f"{MANIFEST_VERSION}; rebuild with `pgolf data build`"
        )
    return manifest
