"""The causal token n-gram tilt (eval.ngram_tilt): legality, normalisation, exactness, effect.

Legality is audited like tests/test_ttt_legality.py does for TTT: every time targets are
tilted, the audit checks which val positions the n-gram statistics hold (absorbed into the
tables, or counted from the same batch) and fails if any is the target itself or later. Two
mutations (absorbing one target too far before scoring; counting a batch's target for
itself) prove the audit has teeth.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from eval_helpers import (  # noqa: F401
    eval_cfg,
    noisy_tiny_model,
    on_one_and_two_ranks,
    random_stream,
    tokenizer_fixture,
    write_fp32_artifact,
    write_val,
)

from pgolf.data.bpb import ByteTable
from pgolf.eval import ngram
from pgolf.eval.engine import run_eval
from pgolf.eval.ngram import NgramTilt, tilted_logprobs, tilted_nll
from pgolf.runtime import Dist

TTT = dict(
    ttt_chunk_tokens=48,
    ttt_seq_len=32,
    ttt_micro_batch=2,
    ttt_lora_chunk_tokens=16,
    ttt_lora_rank=2,
    ttt_lora_batch_docs=1,  # the tilt needs the stream scored in order
    ttt_phased_prefix_tokens=200,
    ttt_phased_batch_seqs=3,
    ttt_phased_epochs=1,
)


def tilt_cfg(ttt: str = "none", **kw):
    base = dict(ngram_tilt=True, ngram_order=3, ngram_lambda=2.0, ngram_min_count=1)
    base.update(kw)
    return eval_cfg(ttt=ttt, **TTT, **base)


def repeated_stream(period: int = 60, copies: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.tile(rng.integers(4, 512, size=period), copies).astype(np.uint16)


def run(tokens, table, cfg, model=None):
    model = model or noisy_tiny_model()
    return run_eval(model, tokens, table, cfg, Dist(), keep_token_nll=True)


# --- (b) a proper distribution; lambda = 0 is the plain score, exactly ---


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0, 20.0])
def test_tilted_distribution_sums_to_one_and_matches_the_nll(lam):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 512, generator=g) * 3
    q = torch.rand(40, 512, generator=g) * (torch.rand(40, 512, generator=g) < 0.02)
    target = torch.randint(0, 512, (40,), generator=g)
    logp = tilted_logprobs(logits, q, lam).double()
    total = logp.exp().sum(-1)  # over the full vocabulary; 1 up to fp32 rounding
    torch.testing.assert_close(total, torch.ones(40, dtype=torch.float64), rtol=0, atol=1e-6)
    plain = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    got = tilted_nll(logits, target, plain, q, lam)
    want = -logp.gather(-1, target[:, None]).squeeze(-1).float()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if lam == 0:
        assert torch.equal(got, plain)


@pytest.mark.parametrize("ttt", ["none", "two-phase", "lora"])
def test_lambda_zero_is_exactly_the_plain_score(tokenizer, ttt):
    table = ByteTable.from_model(tokenizer)
    tokens = repeated_stream()
    off = run(tokens, table, eval_cfg(ttt=ttt, **TTT))
    zero = run(tokens, table, tilt_cfg(ttt, ngram_lambda=0.0))
    assert zero.totals.nll_sum == off.totals.nll_sum
    assert zero.totals.val_bpb == off.totals.val_bpb
    np.testing.assert_array_equal(zero.token_nll(), off.token_nll())
    assert zero.info["ngram_hits"] > 0  # the statistics did run


# --- the vectorised tilt equals a sequential, per-token reference ---


def sequential_reference(tokens, plain_nll, logits_at, order, lam, min_count):
    """Count (context, next) pairs one target at a time, after scoring it."""
    pairs: dict = defaultdict(int)
    ctxs: dict = defaultdict(int)
    out = []
    for p in range(1, len(tokens)):
        nll = plain_nll[p - 1]
        if p >= order - 1:
            c = tuple(int(t) for t in tokens[p - order + 1 : p])
            if ctxs[c] >= min_count:
                q = torch.zeros(512)
                for v in range(512):
                    q[v] = pairs[(c, v)] / ctxs[c]
                logits = logits_at(p)
                tgt = torch.tensor([int(tokens[p])])
                nll = float(tilted_nll(logits[None], tgt, torch.tensor([nll]), q[None], lam)[0])
            ctxs[c] += 1
            pairs[(c, int(tokens[p]))] += 1
        out.append(nll)
    return np.array(out)


@pytest.mark.parametrize(("batch_windows", "max_rows"), [(1, 8192), (3, 8192), (64, 8192), (3, 40)])
def test_matches_a_sequential_reference(tokenizer, monkeypatch, batch_windows, max_rows):
    """Batches of 1, 3 or all windows (and compacted batches): in-batch counting equals
    one-target-at-a-time."""
    monkeypatch.setattr(NgramTilt, "MAX_ROWS", max_rows)
    table = ByteTable.from_model(tokenizer)
    tokens = repeated_stream(period=40, copies=4, seed=2)
    tokens[::37] = 1  # some variety in contexts
    model = noisy_tiny_model()
    cfg = dict(batch_windows=batch_windows, ngram_order=3, ngram_lambda=1.5, ngram_min_count=2)
    plain = run(tokens, table, eval_cfg(ttt="none", batch_windows=batch_windows), model)
    tilted = run(tokens, table, tilt_cfg(**cfg), model)
    window, stride, n = 32, 8, len(tokens)
    ids = torch.as_tensor(tokens.astype(np.int64))
    full_end = window + stride * ((n - 1 - window) // stride)

    def logits_at(p):
        if p <= window:
            s = 0
        elif p <= full_end:
            s = stride * math.ceil((p - window) / stride)
        else:
            s = n - 1 - window
        with torch.no_grad():
            return model(ids[None, s:p])[0, -1]

    ref = sequential_reference(tokens, plain.token_nll(), logits_at, 3, 1.5, 2)
    np.testing.assert_allclose(tilted.token_nll(), ref, rtol=1e-4, atol=1e-4)


# --- (a) legality: the token-read audit and its mutations ---


class NgramLeak(AssertionError):
    pass


class Audit:
    """What the statistics hold when targets are tilted; raises if it includes a target or later."""

    def __init__(self) -> None:
        self.absorbed_end = 0  # positions < this are in the tables
        self.checks = 0
        self.in_batch_pairs = 0

    def absorbed(self, start: int, end: int) -> None:
        assert start == self.absorbed_end or self.absorbed_end == 0
        self.absorbed_end = max(self.absorbed_end, end)

    def tilting(self, pos: torch.Tensor, scored: torch.Tensor) -> None:
        live = pos[scored] if scored is not None else pos
        if live.numel() == 0:
            return
        self.checks += int(live.numel())
        if self.absorbed_end - 1 >= int(live.min()):
            raise NgramLeak(
                f"statistics hold position {self.absorbed_end - 1} when target "
                f"{int(live.min())} is scored"
            )

    def visible(self, pos: torch.Tensor, matrix: torch.Tensor) -> None:
        rows, cols = torch.nonzero(matrix, as_tuple=True)
        self.in_batch_pairs += int(rows.numel())
        bad = pos[cols] >= pos[rows]
        if bad.any():
            i = int(torch.nonzero(bad)[0])
            raise NgramLeak(
                f"target {int(pos[rows[i]])} counted position {int(pos[cols[i]])} of its batch"
            )


@pytest.fixture
def audit(monkeypatch):
    state = Audit()
    absorb, rows, visible = NgramTilt.absorb_until, NgramTilt._tilt_rows, NgramTilt.in_batch_visible

    def absorb_until(self, end):
        if end > self.frontier:
            state.absorbed(self.frontier, end)
        return absorb(self, end)

    def tilt_rows(self, nll, logits, target, pos, scored=None):
        state.tilting(pos, scored)
        return rows(self, nll, logits, target, pos, scored)

    def in_batch_visible(self, pos, valid):
        matrix = visible(self, pos, valid)
        state.visible(pos, matrix)
        return matrix

    monkeypatch.setattr(NgramTilt, "absorb_until", absorb_until)
    monkeypatch.setattr(NgramTilt, "_tilt_rows", tilt_rows)
    monkeypatch.setattr(NgramTilt, "in_batch_visible", in_batch_visible)
    return state


@pytest.mark.parametrize("ttt", ["none", "two-phase", "lora", "phased"])
def test_statistics_hold_only_earlier_positions(tokenizer, audit, ttt):
    table = ByteTable.from_model(tokenizer)
    tokens = repeated_stream(period=50, copies=8)
    cfg = tilt_cfg(ttt)
    result = run(tokens, table, cfg)
    # Not vacuous: every target was checked, the tables grew to late positions, in-batch
    # counting happened, and the tilt fired.
    assert audit.checks >= len(tokens) - 1 - cfg.ngram_order
    assert audit.absorbed_end > len(tokens) - 3 * cfg.batch_windows * cfg.stride
    assert audit.in_batch_pairs > 0
    assert result.info["ngram_hits"] > 200
    assert cfg.compliant  # the tilt does not change the mode's legality


def test_absorbing_the_target_first_is_caught(tokenizer, audit, monkeypatch):
    """Mutation: the tables absorb the batch's first target before it is scored."""
    original = NgramTilt.absorb_until  # (already the audited wrapper)
    monkeypatch.setattr(NgramTilt, "absorb_until", lambda self, end: original(self, end + 1))
    table = ByteTable.from_model(tokenizer)
    with pytest.raises(NgramLeak):
        run(repeated_stream(), table, tilt_cfg())


def test_counting_a_target_for_itself_is_caught(tokenizer, audit, monkeypatch):
    """Mutation: in-batch counting uses <= (each target sees itself before it is scored)."""
    monkeypatch.setattr(
        ngram.NgramTilt,
        "in_batch_visible",
        _audited_visible(audit, lambda pos, valid: (pos[None, :] <= pos[:, None]) & valid[None]),
    )
    table = ByteTable.from_model(tokenizer)
    with pytest.raises(NgramLeak):
        run(repeated_stream(), table, tilt_cfg())


def _audited_visible(audit, rule):
    def in_batch_visible(self, pos, valid):
        matrix = rule(pos, valid)
        audit.visible(pos, matrix)
        return matrix

    return in_batch_visible


def test_the_mutation_really_leaks(tokenizer):
    """The <= variant is not harmless: seeing its own target makes scores better than legal."""
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(300, seed=4)
    legal = run(tokens, table, tilt_cfg()).totals.val_bpb
    with pytest.MonkeyPatch.context() as m:
        m.setattr(
            NgramTilt,
            "in_batch_visible",
            lambda self, pos, valid: (pos[None, :] <= pos[:, None]) & valid[None],
        )
        leaky = run(tokens, table, tilt_cfg()).totals.val_bpb
    assert leaky < legal - 0.05


@pytest.mark.parametrize("ttt", ["none", "two-phase"])
@pytest.mark.parametrize("t", [57, 190])
def test_future_tokens_never_change_past_scores(tokenizer, ttt, t):
    table = ByteTable.from_model(tokenizer)
    a = repeated_stream(period=50, copies=6)
    b = a.copy()
    b[t + 1 :] = random_stream(len(a) - t - 1, seed=2)
    nll_a = run(a, table, tilt_cfg(ttt)).token_nll()
    nll_b = run(b, table, tilt_cfg(ttt)).token_nll()
    np.testing.assert_array_equal(nll_a[:t], nll_b[:t])  # entry i is target i+1


# --- (c) it helps where text repeats ---


@pytest.mark.parametrize("ttt", ["none", "two-phase"])
def test_tilt_lowers_bpb_on_repeated_text(tokenizer, ttt):
    table = ByteTable.from_model(tokenizer)
    tokens = repeated_stream(period=80, copies=5, seed=7)
    off = run(tokens, table, eval_cfg(ttt=ttt, **TTT)).totals.val_bpb
    on = run(tokens, table, tilt_cfg(ttt, ngram_order=4, ngram_min_count=1)).totals.val_bpb
    assert on < off - 0.5, (on, off)


def test_one_and_two_ranks_give_the_same_tilted_score(tmp_path, tokenizer):
    # each rank builds its tables from the same already-scored targets: without TTT the two
    # runs score every target identically (as the plain score is, issue 16)
    tokens = random_stream(403, seed=11)
    tokens[200:400] = tokens[0:200]  # a repeat the tilt can use
    data = write_val(tmp_path / "data", tokens)
    art = write_fp32_artifact(tmp_path / "m.pgolf", noisy_tiny_model(), tokenizer)
    fast = ["--preset", "tiny", "--ttt", "none"]
    for key, value in {
        "window": 32, "stride": 8, "device": "cpu", "batch_windows": 3, "ngram_tilt": "true",
        "ngram_order": 3, "ngram_lambda": 2.0, "ngram_min_count": 1, "ngram_table_bits": 12,
    }.items():  # fmt: skip
        fast += ["--set", f"eval.{key}={value}"]
    out = on_one_and_two_ranks(tmp_path, art, data, tokenizer, fast)
    (r1, n1), (r2, n2) = out[1], out[2]
    assert r2["world_size"] == 2 and r1["ngram_hits"] == r2["ngram_hits"] > 0
    assert r2["val_bpb"] == r1["val_bpb"]
    np.testing.assert_array_equal(n2, n1)
