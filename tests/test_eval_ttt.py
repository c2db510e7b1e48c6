"""Score-first TTT: a token's NLL depends only on the artifact and the tokens before it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import eval_cfg, noisy_tiny_model, random_stream, tokenizer_fixture  # noqa: F401

from pgolf.data.bpb import ByteTable
from pgolf.eval.engine import run_eval
from pgolf.eval.ttt import control_params, phase2_params
from pgolf.runtime import Dist

# Small chunks so phase 1, the hand-over and phase 2 all happen within a few hundred tokens;
# high learning rates so adaptation visibly changes later scores.
TTT = dict(
    ttt="two-phase",
    ttt_chunk_tokens=48,
    ttt_seq_len=32,
    ttt_micro_batch=2,
    ttt_phase1_chunks=3,
    ttt_phase2_from_chunk=2,
    ttt_phase1_lr=0.05,
    ttt_phase2_lr=0.2,
    ttt_phase2_blocks=2,
)


def token_nll(tokens, table, **kw) -> np.ndarray:
    result = run_eval(
        noisy_tiny_model(), tokens, table, eval_cfg(**kw), Dist(), keep_token_nll=True
    )
    return result.token_nll()


@pytest.mark.parametrize("t", [40, 137, 250])
def test_future_tokens_never_change_past_scores(tokenizer, t):
    """Streams equal up to position t, different after: identical NLL for every target <= t."""
    table = ByteTable.from_model(tokenizer)
    a = random_stream(400, seed=1)
    b = a.copy()
    b[t + 1 :] = random_stream(400 - t - 1, seed=2)
    assert (a[t + 1 :] != b[t + 1 :]).any()
    nll_a, nll_b = token_nll(a, table, **TTT), token_nll(b, table, **TTT)
    # Entry i is target i+1: targets 1..t are entries 0..t-1.
    np.testing.assert_array_equal(nll_a[:t], nll_b[:t])
    assert not np.array_equal(nll_a[t:], nll_b[t:])


def test_ttt_actually_adapts_after_the_first_chunk(tokenizer):
    """Not vacuous: TTT leaves chunk 0 untouched and changes every later chunk's scores."""
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(400, seed=1)
    plain, adapted = token_nll(tokens, table, ttt="none"), token_nll(tokens, table, **TTT)
    first_chunk = 32 + 16  # block 0 (window 32) + two stride-8 blocks reach 48 targets
    np.testing.assert_array_equal(plain[:first_chunk], adapted[:first_chunk])
    assert np.abs(plain[first_chunk:] - adapted[first_chunk:]).min() > 0


def test_research_mode_learns_before_scoring_and_is_marked(tokenizer):
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(300, seed=1)
    cfg = eval_cfg(**{**TTT, "ttt": "pre-train-on-val"})
    assert not cfg.compliant and eval_cfg(**TTT).compliant
    research = run_eval(noisy_tiny_model(), tokens, table, cfg, Dist(), keep_token_nll=True)
    plain = token_nll(tokens, table, ttt="none")
    assert not np.array_equal(research.token_nll()[:40], plain[:40])  # even chunk 0 changed


def test_phase_parameter_sets():
    model = noisy_tiny_model()
    names = {id(p): n for n, p in model.named_parameters()}
    p1 = {names[id(p)] for p in control_params(model)}
    assert p1 and all(model.get_parameter(n).numel() <= 4 * model.cfg.model_dim for n in p1)
    assert not any(n.endswith(("q.weight", "fc.weight")) or n == "tok_emb.weight" for n in p1)
    p2 = {names[id(p)] for p in phase2_params(model, 2)}
    last = len(model.blocks) - 2
    assert p1 <= p2 and "tok_emb.weight" in p2
    assert f"blocks.{last}.mlp.fc.weight" in p2 and "blocks.0.mlp.fc.weight" not in p2
    assert not {"bigram.embed.weight", "bigram.proj.weight", "value_embed.embed.weight"} & p2


def test_ttt_leaves_requires_grad_and_the_caller_model_usable(tokenizer):
    table = ByteTable.from_model(tokenizer)
    model = noisy_tiny_model()
    run_eval(model, random_stream(200), table, eval_cfg(**TTT), Dist())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training
    with torch.no_grad():
        assert torch.isfinite(model(torch.ones(1, 8, dtype=torch.long))).all()
