"""Encoding documents into ``[BOS] + tokens`` streams, in worker processes, in input order.

The main process only reads raw records (zstd decompression and line splitting are cheap);
workers parse JSON and run SentencePiece's C++ batch encoder, which is where the time goes.
Chunks go out through a bounded window of ``apply_async`` calls and come back in
submission order, so the output is identical to a serial run and memory stays bounded
(``Pool.imap`` would drain the whole input iterator up front).
"""

from __future__ import annotations

import collections
import itertools
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pgolf.data.corpus import Record, parse_record
from pgolf.errors import DataError

# In-flight chunks per worker: enough to keep every core busy while the main process reads.
_WINDOW_PER_WORKER = 4


@dataclass
class Chunk:
    split: str
    records: list[Record]


@dataclass
class Encoded:
    split: str
    tokens: np.ndarray  # uint16, every document as [BOS] + ids
    docs: int
    text_bytes: int  # UTF-8 bytes of the documents' text, before tokenization


_STATE: dict[str, Any] = {}


def _init_worker(model_path: str, text_field: str) -> None:
    from pgolf.data.tokenizer import load_tokenizer

    sp = load_tokenizer(model_path)
    _STATE.update(sp=sp, bos=int(sp.bos_id()), text_field=text_field)


def encode_chunk(chunk: Chunk) -> Encoded:
    """Parse and encode one chunk in the current process (after ``_init_worker``)."""
    sp, bos = _STATE["sp"], _STATE["bos"]
    texts = [parse_record(r, _STATE["text_field"]) for r in chunk.records]
    # One C++ call per chunk; threads off because the parallelism is across processes.
    ids = sp.encode(texts, num_threads=1)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    tokens = np.empty(int(lengths.sum()), dtype=np.uint16)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    tokens[starts] = bos
    mask = np.ones(tokens.size, dtype=bool)
    mask[starts] = False
    tokens[mask] = _flatten(ids)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return Encoded(chunk.split, tokens, len(texts), text_bytes)


def _flatten(ids: list[list[int]]) -> np.ndarray:
    total = sum(len(x) for x in ids)
    return np.fromiter(itertools.chain.from_iterable(ids), dtype=np.uint16, count=total)


def chunk_records(records: Iterable[Record], val_docs: int, chunk_docs: int) -> Iterator[Chunk]:
    """Group records into chunks that never straddle the val/train boundary."""
    current: list[Record] = []
    split = "val" if val_docs > 0 else "train"
    for index, record in enumerate(records, start=1):
        current.append(record)
        if len(current) >= chunk_docs or index == val_docs:
            yield Chunk(split, current)
            current = []
            if index >= val_docs:
                split = "train"
    if current:
        yield Chunk(split, current)


def worker_count(requested: int) -> int:
    return requested if requested > 0 else (os.cpu_count() or 1)


def encode_all(
    chunks: Iterable[Chunk], model_path: str, text_field: str, workers: int
) -> Iterator[Encoded]:
    """Encoded chunks in input order; ``workers == 1`` runs serially in this process."""
    if workers <= 1:
        _init_worker(model_path, text_field)
        try:
            for chunk in chunks:
                yield encode_chunk(chunk)
        finally:
            _STATE.clear()
        return
    # spawn, not fork: the caller may hold threads (progress bars, test runners) and fork
    # would copy their locks mid-use.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(model_path, text_field)) as pool:
        pending: collections.deque = collections.deque()
        window = workers * _WINDOW_PER_WORKER
        for chunk in chunks:
            pending.append(pool.apply_async(encode_chunk, (chunk,)))
            if len(pending) >= window:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())


def _result(async_result: Any) -> Encoded:
    try:
        return async_result.get()
    except DataError:
        raise
    except Exception as e:  # a worker crash must still name what failed
        raise DataError(f"encoding worker failed: {type(e).__name__}: {e}") from e
