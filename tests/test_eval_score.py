"""Sliding-window scoring against a naive per-token reference; exact token and byte counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eval_helpers import eval_cfg, noisy_tiny_model, random_stream, tokenizer_fixture  # noqa: F401

from pgolf.data.bpb import ByteTable
from pgolf.eval.engine import run_eval
from pgolf.runtime import Dist


def naive_nll(model, tokens: np.ndarray, window: int, stride: int) -> np.ndarray:
    """One forward per target, with the public definition's context (windows at 0, S, 2S...)."""
    ids = torch.as_tensor(tokens.astype(np.int64))
    out = []
    n = len(tokens)
    full_end = window + stride * ((n - 1 - window) // stride)
    with torch.no_grad():
        for p in range(1, n):
            if p <= window:
                s = 0
            elif p <= full_end:
                s = stride * math.ceil((p - window) / stride)
            else:  # ragged tail: end-aligned window
                s = n - 1 - window
            logits = model(ids[None, s:p])[0, -1]
            out.append(torch.log_softmax(logits, -1)[ids[p]].neg().item())
    return np.array(out)


@pytest.mark.parametrize("window,stride,n", [(32, 8, 203), (16, 16, 100), (24, 1, 60)])
def test_sliding_window_matches_naive_reference(tokenizer, window, stride, n):
    model = noisy_tiny_model()
    tokens = random_stream(n)
    table = ByteTable.from_model(tokenizer)
    cfg = eval_cfg(window=window, stride=stride, ttt="none", batch_windows=3)
    result = run_eval(model, tokens, table, cfg, Dist(), keep_token_nll=True)
    ref = naive_nll(model, tokens, window, stride)
    np.testing.assert_allclose(result.token_nll(), ref, rtol=1e-5, atol=1e-5)
    assert result.totals.val_loss == pytest.approx(ref.mean(), rel=1e-6)


@pytest.mark.parametrize("ttt", ["none", "two-phase"])
def test_every_token_counted_once_with_exact_bytes(tokenizer, ttt):
    tokens = random_stream(500, seed=3)
    table = ByteTable.from_model(tokenizer)
    cfg = eval_cfg(ttt=ttt, ttt_chunk_tokens=100, ttt_seq_len=32, batch_windows=5)
    result = run_eval(noisy_tiny_model(), tokens, table, cfg, Dist(), keep_token_nll=True)
    t = result.totals
    assert t.tokens == len(tokens) - 1
    assert t.bytes == table.stream_bytes(tokens)
    nll = result.token_nll()
    assert nll.shape == (len(tokens) - 1,)
    assert t.nll_sum == pytest.approx(float(nll.astype(np.float64).sum()), rel=1e-9)
    assert t.val_bpb == pytest.approx(t.nll_sum / math.log(2) / t.bytes)


def test_batch_size_does_not_change_the_score(tokenizer):
    tokens = random_stream(300, seed=5)
    table = ByteTable.from_model(tokenizer)
    model = noisy_tiny_model()
    losses = [
        run_eval(model, tokens, table, eval_cfg(ttt="none", batch_windows=b), Dist()).totals
        for b in (1, 4, 64)
    ]
    for t in losses[1:]:
        assert t.nll_sum == pytest.approx(losses[0].nll_sum, rel=1e-6)
        assert t.bytes == losses[0].bytes
