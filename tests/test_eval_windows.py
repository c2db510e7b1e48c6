"""Window and chunk planning: every target scored exactly once, with the most context."""

from __future__ import annotations

import numpy as np
import pytest

from pgolf.eval.windows import block_bounds, chunk_blocks, train_starts, windows_for_blocks

CASES = [
    # (N tokens, window, stride)
    (2, 1, 1),
    (9, 8, 8),  # exactly one window
    (10, 8, 8),  # one window + a 1-target tail
    (5, 8, 4),  # stream shorter than a window (padded)
    (100, 16, 1),
    (100, 16, 5),  # stride does not divide anything
    (1000, 64, 32),
    (1001, 64, 64),
    (777, 128, 64),
]


def scored_targets(n, window, stride):
    w = windows_for_blocks(block_bounds(n, window, stride), window)
    for s, lo, hi in zip(w.starts, w.lo, w.hi, strict=True):
        for row in range(lo, hi):
            yield s, row, s + row + 1  # window start, row, stream position of the target


@pytest.mark.parametrize("n,window,stride", CASES)
def test_every_target_scored_once_in_order(n, window, stride):
    targets = [p for _, _, p in scored_targets(n, window, stride)]
    assert targets == list(range(1, n))


@pytest.mark.parametrize("n,window,stride", CASES)
def test_windows_fit_and_give_max_context(n, window, stride):
    w = windows_for_blocks(block_bounds(n, window, stride), window)
    assert (w.hi <= window).all() and (w.lo >= 0).all() and (w.lo < w.hi).all()
    for s, row, p in scored_targets(n, window, stride):
        assert p <= n - 1  # the target exists
        context = p - s  # tokens s..p-1
        assert context == row + 1
        # Whole prefix inside the first window, else at least window - stride + 1 tokens.
        assert context == p if p <= window else context >= window - stride + 1
    # Later windows only score (at most) their last `stride` rows.
    later = w.starts > 0
    assert (w.hi[later] == window).all() and (w.lo[later] >= window - stride).all()


def test_matches_the_public_sliding_window_definition():
    """Windows start at 0, S, 2S, ...; window k>0 scores its last S targets.

    The ragged tail (fewer than S targets left) is end-aligned instead: its window ends at the
    last token, so the tail keeps full context rather than running off the stream.
    """
    n, window, stride = 600, 64, 16
    full_end = window + stride * ((n - 1 - window) // stride)
    for s, _, p in scored_targets(n, window, stride):
        if p <= window:
            assert s == 0
        elif p <= full_end:
            assert s == stride * -(-(p - window) // stride)
        else:
            assert s == n - 1 - window


@pytest.mark.parametrize("chunk", [1, 10, 64, 100, 5000])
def test_chunks_partition_blocks_in_order(chunk):
    bounds = block_bounds(1000, 64, 16)
    chunks = chunk_blocks(bounds, chunk)
    assert chunks[0][0] == 0 and chunks[-1][1] == bounds.size - 1
    for (a, b), (c, _) in zip(chunks, chunks[1:], strict=False):
        assert b == c and bounds[b] - bounds[a] >= chunk
    assert chunk_blocks(bounds, None) == [(0, bounds.size - 1)]


@pytest.mark.parametrize(
    "c0,c1,seq", [(1, 65, 64), (1, 10, 64), (65, 129, 32), (100, 1000, 64), (500, 530, 64)]
)
def test_train_sequences_cover_chunk_and_never_pass_its_end(c0, c1, seq):
    starts, length = train_starts(c0, c1, seq)
    assert length == min(seq, c1 - 1)
    covered = set()
    for s in starts:
        assert s >= 0
        covered.update(range(s + 1, s + length + 1))  # target positions
    assert max(covered) == c1 - 1  # learns up to the chunk's last scored target, not beyond
    assert set(range(c0, c1)) <= covered
    assert np.all(np.diff(starts) >= 0)
