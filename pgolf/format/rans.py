"""Static interleaved rANS over bytes, vectorized with numpy across lanes and streams.

Why: quantized weights are close to i.i.d. given their tensor, so an order-0 coder with an
exactly fitted per-stream histogram reaches the empirical entropy; zstd's Huffman literals
stay ~0.8% above it (measured, docs/BENCHMARKS.md, Appendix B). A Python loop over 27 M symbols
would take minutes, so each stream is split into K lanes (symbol i goes to lane i % K) and
one numpy step advances every lane of every stream at once: ~4k steps decode a whole model.

Stream layout (little-endian; formats/artifact-v1.md §6):
    u32 n | u16 K | u16 P | u8[P] symbols (ascending) | u16[P] freqs (sum 2**15)
    | u32[K] initial decoder states | u16[...] renormalisation words
State x lives in [2**16, 2**32); 16-bit words; probability precision 15 bits.
"""

from __future__ import annotations

import struct

import numpy as np

from pgolf.format import errors as E
from pgolf.format import spec

PREC = 15
M = 1 << PREC
L = 1 << 16
STEPS = 4096  # encoder target steps per lane: fewer lanes (4 bytes each) vs more numpy steps
_HEAD = struct.Struct("<IHH")
# Decode batches: the symbol lookup table costs M bytes a stream and the per-lane work
# arrays ~100 bytes a lane, so both stay bounded (32 MiB, 50 MiB) however many streams a
# file holds. A real model (~70 streams, ~7k lanes) decodes in one batch.
BATCH_STREAMS = 1024
BATCH_LANES = 1 << 19


def normalize(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Present symbols and their frequencies summing to M (each >= 1), deterministically."""
    symbols = np.flatnonzero(counts).astype(np.uint8)
    if symbols.size == 0:
        return symbols, np.zeros(0, dtype=np.int64)
    c = counts[symbols].astype(np.float64)
    freqs = np.maximum(1, np.round(c * M / c.sum())).astype(np.int64)
    diff = M - int(freqs.sum())
    order = np.argsort(-freqs, kind="stable")
    i = 0
    while diff != 0:  # move the rounding error onto the most frequent symbols
        j = order[i % len(order)]
        step = diff if diff > 0 else max(diff, 1 - int(freqs[j]))
        freqs[j] += step
        diff -= step
        i += 1
    return symbols, freqs


class _Tables:
    """Per-stream tables flattened so one gather serves every lane of every stream."""

    def __init__(self, tables: list[tuple[np.ndarray, np.ndarray]]) -> None:
        s = len(tables)
        self.freq = np.zeros(s * 256, dtype=np.uint64)
        self.cum = np.zeros(s * 256, dtype=np.uint64)
        self.lut = np.zeros(s * M, dtype=np.uint8)
        for i, (symbols, freqs) in enumerate(tables):
            if len(symbols) == 0:
                continue
            starts = np.concatenate([[0], np.cumsum(freqs)[:-1]])
            self.freq[i * 256 + symbols.astype(np.int64)] = freqs
            self.cum[i * 256 + symbols.astype(np.int64)] = starts
            self.lut[i * M : (i + 1) * M] = np.repeat(symbols, freqs)


def _lanes(sizes: list[int], lanes: list[int]):
    """Per-lane arrays: stream id, symbol count, output position at step 0, stride."""
    sid = np.repeat(np.arange(len(sizes)), lanes)
    local = np.concatenate([np.arange(k) for k in lanes]) if sum(lanes) else np.zeros(0, int)
    n = np.asarray(sizes, dtype=np.int64)[sid]
    k = np.asarray(lanes, dtype=np.int64)[sid]
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)[sid]
    count = (n - local + k - 1) // np.maximum(k, 1)
    return sid, count, base + local, k


def encode_many(streams: list[np.ndarray]) -> list[bytes]:
    """Encode several uint8 arrays at once (one histogram each)."""
    sizes = [int(a.size) for a in streams]
    lanes = [min(65535, -(-n // STEPS)) for n in sizes]
    tables = [normalize(np.bincount(a, minlength=256)) for a in streams]
    tab = _Tables(tables)
    data = np.concatenate(streams).astype(np.int64) if streams else np.zeros(0, np.int64)
    sid, count, pos0, stride = _lanes(sizes, lanes)
    x = np.full(sid.size, L, dtype=np.uint64)
    tbase = sid * 256
    words, who = [], []
    for t in range(int(count.max(initial=0)) - 1, -1, -1):
        active = count > t
        pos = np.where(active, pos0 + t * stride, 0)
        s = data[pos] if data.size else pos
        f = tab.freq[tbase + s]
        emit = active & (x >= (f << np.uint64(32 - PREC)))
        idx = np.flatnonzero(emit)
        words.append((x[idx] & np.uint64(0xFFFF)).astype(np.uint16))
        who.append(idx)
        x[idx] >>= np.uint64(16)
        fs = np.maximum(f, np.uint64(1))
        new = ((x // fs) << np.uint64(PREC)) + (x % fs) + tab.cum[tbase + s]
        x = np.where(active, new, x)
    words_all = np.concatenate(words[::-1]) if words else np.zeros(0, np.uint16)
    who_all = np.concatenate(who[::-1]) if who else np.zeros(0, np.int64)
    order = np.argsort(sid[who_all], kind="stable")
    words_all, owner = words_all[order], sid[who_all][order]
    per_stream = np.bincount(owner, minlength=len(streams))
    bounds = np.concatenate([[0], np.cumsum(per_stream)])
    lane_bounds = np.concatenate([[0], np.cumsum(lanes)])
    out = []
    for i, (symbols, freqs) in enumerate(tables):
        head = _HEAD.pack(sizes[i], lanes[i], len(symbols))
        states = x[lane_bounds[i] : lane_bounds[i + 1]].astype("<u4")
        body = words_all[bounds[i] : bounds[i + 1]].astype("<u2")
        out.append(
            head
            + symbols.tobytes()
            + freqs.astype("<u2").tobytes()
            + states.tobytes()
            + body.tobytes()
        )
    return out


def encode(data: np.ndarray) -> bytes:
    return encode_many([np.ascontiguousarray(data, dtype=np.uint8)])[0]


def _parse(blob: bytes, raw_length: int, what: str):
    if len(blob) < _HEAD.size:
        raise E.CorruptStream(f"{what}: rans stream shorter than its {_HEAD.size}-byte head")
    n, k, p = _HEAD.unpack_from(blob)
    if n > raw_length:
        raise E.DecompressedSizeExceeded(
            f"{what}: rans stream holds {n} symbols, header declares {raw_length} bytes"
        )
    if n < raw_length:
        raise E.CorruptStream(f"{what}: rans stream holds {n} symbols, expected {raw_length}")
    if (n == 0) != (k == 0 and p == 0) or k > n or p > 256:
        raise E.CorruptStream(f"{what}: rans lanes {k} / alphabet {p} invalid for {n} symbols")
    if n and _steps(n, k) > spec.MAX_RANS_LANE_SYMBOLS:
        raise E.RansLaneTooLong(
            f"{what}: rans stream puts {_steps(n, k)} of its {n} symbols in one of {k} lanes, "
            f"at most {spec.MAX_RANS_LANE_SYMBOLS} are allowed; re-pack with this pgolf"
        )
    off = _HEAD.size
    need = off + p + 2 * p + 4 * k
    if len(blob) < need or (len(blob) - need) % 2:
        raise E.CorruptStream(f"{what}: rans stream length {len(blob)} does not fit its tables")
    symbols = np.frombuffer(blob, np.uint8, p, off)
    freqs = np.frombuffer(blob, "<u2", p, off + p).astype(np.int64)
    states = np.frombuffer(blob, "<u4", k, off + 3 * p).astype(np.uint64)
    words = np.frombuffer(blob, "<u2", (len(blob) - need) // 2, need).astype(np.uint64)
    if n and (np.any(np.diff(symbols.astype(int)) <= 0) or freqs.min() < 1 or freqs.sum() != M):
        raise E.CorruptStream(f"{what}: rans frequency table invalid (must sum to {M})")
    if np.any(states < L):
        raise E.CorruptStream(f"{what}: rans initial state below 2**16")
    return n, k, (symbols, freqs), states, words


def _steps(n: int, k: int) -> int:
    """Symbols in the longest lane: the number of vectorised decode steps."""
    return -(-n // k) if k else 0


def decode_many(blobs: list[bytes], raw_lengths: list[int], whats: list[str]) -> list[np.ndarray]:
    """Decode several streams in vectorized passes; every failure is a FormatError."""
    # Every head is checked (R12, R13, R29) before a single symbol is decoded.
    parsed = [_parse(b, n, w) for b, n, w in zip(blobs, raw_lengths, whats, strict=True)]
    out: list[np.ndarray] = [np.zeros(0, np.uint8)] * len(parsed)
    for batch in _batches(parsed):
        decoded = _decode_batch([parsed[i] for i in batch], [whats[i] for i in batch])
        for i, arr in zip(batch, decoded, strict=True):
            out[i] = arr
    return out


def _batches(parsed: list) -> list[list[int]]:
    """Stream indices grouped within BATCH_STREAMS / BATCH_LANES, longest lanes first.

    Sorting by lane length makes a batch's step count (its longest lane) no longer than any
    lane of the batch before, so all batches together take at most the longest lane plus
    total symbols / BATCH_STREAMS steps: many short streams cannot multiply the loop.
    """
    order = sorted(range(len(parsed)), key=lambda i: -_steps(parsed[i][0], parsed[i][1]))
    batches: list[list[int]] = []
    lanes = 0
    for i in order:
        k = parsed[i][1]
        if not batches or len(batches[-1]) == BATCH_STREAMS or lanes + k > BATCH_LANES:
            batches.append([])
            lanes = 0
        batches[-1].append(i)
        lanes += k
    return batches


def _decode_batch(parsed: list, whats: list[str]) -> list[np.ndarray]:
    sizes = [p[0] for p in parsed]
    lanes = [p[1] for p in parsed]
    tab = _Tables([p[2] for p in parsed])
    sid, count, pos0, stride = _lanes(sizes, lanes)
    # int64 throughout: states stay below 2**32, and mixing uint64 with int64 indices
    # would make numpy cast on every step.
    x = np.concatenate([p[3] for p in parsed]).astype(np.int64) if parsed else np.zeros(0, int)
    words = np.concatenate([p[4] for p in parsed]).astype(np.int64) if parsed else x[:0]
    nwords = np.asarray([p[4].size for p in parsed], dtype=np.int64)
    wend = np.cumsum(nwords)
    ptr = wend - nwords
    out = np.zeros(sum(sizes), dtype=np.uint8)
    tbase, lbase = sid * 256, sid * M
    freq, cum, lut = tab.freq.astype(np.int64), tab.cum.astype(np.int64), tab.lut
    all_active = int(count.min(initial=0))  # steps where every lane still has symbols
    for t in range(int(count.max(initial=0))):
        slot = x & (M - 1)
        s = lut[lbase + slot].astype(np.int64)
        new = freq[tbase + s] * (x >> PREC) + slot - cum[tbase + s]
        if t < all_active:
            x = new
            out[pos0 + t * stride] = s
            low = x < L
        else:
            active = count > t
            x = np.where(active, new, x)
            out[(pos0 + t * stride)[active]] = s[active]
            low = active & (x < L)
        idx = np.flatnonzero(low)
        if idx.size:
            st = sid[idx]
            got = np.bincount(st, minlength=len(parsed))
            first = np.cumsum(got) - got
            at = ptr[st] + np.arange(idx.size) - first[st]
            if np.any(at >= wend[st]):
                raise E.CorruptStream(f"{whats[int(st[0])]}: rans stream runs out of words")
            x[idx] = (x[idx] << 16) | words[at]
            ptr += got
    bad = [i for i in range(len(parsed)) if ptr[i] != wend[i]]
    if bad or np.any(x != L):
        i = bad[0] if bad else int(sid[np.flatnonzero(x != L)[0]])
        raise E.CorruptStream(f"{whats[i]}: rans stream does not end in its initial state")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [out[bounds[i] : bounds[i + 1]] for i in range(len(parsed))]


def decode(blob: bytes, raw_length: int, what: str = "stream") -> np.ndarray:
    return decode_many([blob], [raw_length], [what])[0]


def entropy_bytes(counts: np.ndarray) -> float:
    """Order-0 entropy of a histogram in bytes: what rANS reaches, for cheap size estimates."""
    c = counts[counts > 0].astype(np.float64)
    n = c.sum()
    return float(-(c * np.log2(c / n)).sum() / 8) if n else 0.0
