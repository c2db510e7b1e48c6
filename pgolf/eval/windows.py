"""Where each val target is scored: sliding-window blocks, TTT chunks, TTT training sequences.

Positions are stream indices. Targets are positions 1..N-1 (the stream's first token is
never a target; nothing precedes it). The targets are cut into *blocks*:

* block 0 = targets 1..min(W, N-1): one window starting at 0 scores all of them, each with
  its whole prefix as context (no window can do better);
* then blocks of S targets (the last may be shorter).

A block [p0, p1) is scored by the window whose inputs are tokens[s : s+W] with
s = max(0, p1-1-W), i.e. the window *ends* at the block's last target. Every target p in
a later block thus sees at least W-S+1 tokens of context, the tail needs no special case,
and every window has the same shape (block 0 and streams shorter than W+1 tokens are
right-padded; a causal model never looks right, so padding changes nothing scored).

TTT groups consecutive blocks into *chunks* of about ``chunk_tokens`` targets; a chunk is
scored in full before the model may learn from it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Windows:
    """A batch plan: window i reads tokens[starts[i] : starts[i]+W] and scores rows [lo, hi)."""

    starts: np.ndarray  # int64: first input position of each window
    lo: np.ndarray  # int64: first scored row (row j predicts stream position starts+j+1)
    hi: np.ndarray  # int64: one past the last scored row

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def targets(self) -> int:
        return int((self.hi - self.lo).sum())

    def slice(self, a: int, b: int) -> Windows:
        return Windows(self.starts[a:b], self.lo[a:b], self.hi[a:b])


def block_bounds(n_tokens: int, window: int, stride: int) -> np.ndarray:
    """Boundaries b of the target blocks: block i is targets [b[i], b[i+1]); b[0]=1, b[-1]=N."""
    if n_tokens < 2:
        return np.array([1], dtype=np.int64)
    first_end = 1 + min(window, n_tokens - 1)
    rest = np.arange(first_end, n_tokens, stride, dtype=np.int64)
    return np.concatenate([[1], rest, [n_tokens]]).astype(np.int64)


def windows_for_blocks(bounds: np.ndarray, window: int) -> Windows:
    """One window per block, ending at the block's last target (see module docstring)."""
    p0, p1 = bounds[:-1], bounds[1:]
    starts = np.maximum(0, p1 - 1 - window)
    return Windows(starts=starts, lo=p0 - 1 - starts, hi=p1 - 1 - starts)


def chunk_blocks(bounds: np.ndarray, chunk_tokens: int | None) -> list[tuple[int, int]]:
    """Group blocks into chunks [block_a, block_b) of >= chunk_tokens targets (last may be less).

    ``None`` gives a single chunk (no TTT). Chunk edges fall on block edges, so a block is
    never split and every window keeps its full context.
    """
    n_blocks = bounds.size - 1
    if chunk_tokens is None or n_blocks == 0:
        return [(0, n_blocks)]
    chunks, a = [], 0
    while a < n_blocks:
        # First block b with bounds[b] - bounds[a] >= chunk_tokens, i.e. enough targets.
        b = int(np.searchsorted(bounds, bounds[a] + chunk_tokens, side="left"))
        b = min(max(b, a + 1), n_blocks)
        chunks.append((a, b))
        a = b
    return chunks


def train_starts(c0: int, c1: int, seq_len: int) -> tuple[np.ndarray, int]:
    """Input starts and length of TTT sequences covering targets [c0, c1) and nothing later.

    Sequence s reads inputs tokens[s : s+T] and targets tokens[s+1 : s+T+1]; the last one ends
    exactly at target c1-1 (the chunk's last scored token) and the others tile backwards, the
    first possibly reaching into earlier (already scored) chunks for full length. Returns
    (starts ascending, T); T shrinks only when fewer than ``seq_len`` targets exist at all.
    """
    assert 1 <= c0 < c1, (c0, c1)
    length = min(seq_len, c1 - 1)
    last = c1 - 1 - length
    count = -(-(c1 - c0) // length)  # ceil: enough sequences to cover every chunk target
    starts = last - length * np.arange(count, dtype=np.int64)[::-1]
    return np.maximum(starts, 0), length
