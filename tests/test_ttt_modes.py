"""The leaderboard TTT modes: per-document LoRA, phased global SGD, short documents, long
context, and their config switches (legality is in test_ttt_legality.py)."""

from __future__ import annotations

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
from test_ttt_legality import mode_cfg

from pgolf.config import resolve
from pgolf.config.base import ConfigError
from pgolf.config.eval import EvalConfig
from pgolf.data.bpb import ByteTable
from pgolf.eval.engine import make_forward, run_eval
from pgolf.eval.report import warnings as report_warnings
from pgolf.eval.ttt_lora import LoraTTT
from pgolf.eval.windows import block_bounds, chunk_blocks
from pgolf.runtime import Dist


def nll(tokens, table, cfg, model=None):
    model = model or noisy_tiny_model()
    return run_eval(model, tokens, table, cfg, Dist(), keep_token_nll=True)


def test_fresh_adapters_change_nothing_and_close_restores_the_model():
    model = noisy_tiny_model()
    x = torch.as_tensor(random_stream(40, seed=4)[None].astype(np.int64))
    with torch.no_grad():
        before = model(x)
    cfg = mode_cfg("lora")
    forward, _ = make_forward(model, cfg, torch.device("cpu"))
    lora = LoraTTT(model, forward, torch.as_tensor(x[0]), cfg, Dist())
    lora._set_rows(torch.tensor([2]))  # 4 rows of adapters; this one sequence uses row 2
    assert not any(block.attn.fused_qkv for block in model.blocks)  # hooks need q/k/v calls
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)  # B = 0: a no-op until trained
        for lo in lora.loras:
            lo.B.fill_(0.1)
        assert not torch.allclose(model(x), before)
        lora.close()
        assert torch.equal(model(x), before)
    assert all(block.attn.fused_qkv for block in model.blocks)


def test_lora_resets_per_document_and_adapts_after_the_first_chunk(tokenizer):
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(400, seed=1)  # BOS at 0, 97, 194, 291, 388
    plain = nll(tokens, table, eval_cfg(ttt="none")).token_nll()
    result = nll(tokens, table, mode_cfg("lora"))
    # Resets at the BOS at 97, 194, 291: position 0 is the initial state, and 388 lies in
    # the last chunk, which is only scored.
    assert result.info["ttt_lora_resets"] == 3 and result.ttt_steps > 10
    assert result.info["time_ttt_lora_s"] >= 0 and "time_ttt_phased_s" not in result.info
    adapted = result.token_nll()
    first_chunk = 32  # block 0 (window 32) already holds >= 16 targets
    np.testing.assert_array_equal(plain[:first_chunk], adapted[:first_chunk])
    assert not np.array_equal(plain[first_chunk:], adapted[first_chunk:])


def test_rows_start_fresh_and_the_first_row_is_the_stream_in_order(tokenizer):
    """4 rows side by side: row k's first chunk is scored by fresh adapters (= no TTT), and
    row 0 (which starts where one row would) scores its span as one row does, up to float
    rounding (its forwards are batched with the other rows')."""
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(400, seed=1)
    cfg = mode_cfg("lora")
    assert cfg.ttt_lora_batch_docs == 4
    plain = nll(tokens, table, eval_cfg(ttt="none")).token_nll()
    rows = nll(tokens, table, cfg)
    one = nll(tokens, table, mode_cfg("lora", ttt_lora_batch_docs=1))
    assert rows.ttt_steps > 10 and rows.info["ttt_lora_batches"] < one.info["ttt_lora_batches"]
    bounds = block_bounds(tokens.size, cfg.window, cfg.stride)
    chunks = chunk_blocks(bounds, cfg.chunk_tokens())
    m = len(chunks)
    for k in range(4):
        a, b = chunks[m * k // 4]
        first = slice(bounds[a] - 1, bounds[b] - 1)  # entry i is target i+1
        np.testing.assert_array_equal(rows.token_nll()[first], plain[first])
    row0 = bounds[chunks[m // 4][0]] - 1
    np.testing.assert_allclose(rows.token_nll()[:row0], one.token_nll()[:row0], rtol=1e-5)
    assert not np.allclose(rows.token_nll()[row0:], one.token_nll()[row0:], rtol=1e-5)
    assert rows.totals.val_bpb == pytest.approx(one.totals.val_bpb, rel=0.01)


def test_short_documents_take_no_lora_step(tokenizer):
    """ttt_lora_min_doc_tokens above every document's length: LoRA never steps (PR #2014)."""
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(300, seed=1)
    plain = nll(tokens, table, eval_cfg(ttt="none")).token_nll()
    result = nll(tokens, table, mode_cfg("lora", ttt_lora_min_doc_tokens=97))
    assert result.ttt_steps == 0
    np.testing.assert_array_equal(result.token_nll(), plain)


def test_phased_pauses_once_per_boundary_then_only_scores(tokenizer):
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(400, seed=1)
    plain = nll(tokens, table, eval_cfg(ttt="none")).token_nll()
    result = nll(tokens, table, mode_cfg("phased"))
    # Boundaries at 67, 134, 201 targets; chunk edges at 49, 97, 145, 193, 241 (window 32 +
    # 48-target chunks of stride-8 blocks): three pauses, each on every target scored so far.
    assert result.info["ttt_phased_pauses"] == 3
    seqs = [3, 5, 8]  # ceil((edge - 1) / 32) sequences at edges 97, 145, 241
    assert result.ttt_steps == sum(-(-n // 3) for n in seqs)  # batches of 3 sequences, 1 epoch
    adapted = result.token_nll()
    np.testing.assert_array_equal(plain[:96], adapted[:96])  # before the first pause
    assert not np.array_equal(plain[96:], adapted[96:])


def test_longer_eval_window_than_training_uses_ntk_rope(tokenizer):
    """PR #1953: window > train_seq_len runs (NTK-scaled RoPE) and still scores each target."""
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(300, seed=1)
    short = noisy_tiny_model(train_seq_len=16)
    result = nll(tokens, table, mode_cfg("lora", window=64, stride=16), model=short)
    assert result.totals.tokens == tokens.size - 1
    same = noisy_tiny_model(train_seq_len=64)  # same weights, no NTK scaling
    plain = nll(tokens, table, mode_cfg("lora", window=64, stride=16), model=same)
    assert not np.array_equal(result.token_nll(), plain.token_nll())


def test_switches_are_validated_and_presets_resolve():
    with pytest.raises(ValueError, match="ttt_lora_targets"):
        eval_cfg(ttt="lora", ttt_lora_targets="q,head")
    with pytest.raises(ValueError, match="ttt_lora_batch_docs must be >= 1"):
        eval_cfg(ttt="lora", ttt_lora_batch_docs=0)
    with pytest.raises(ValueError, match="ttt_lora_batch_docs=1"):
        eval_cfg(ttt="phased-lora", ngram_tilt=True, ttt_lora_batch_docs=2)
    eval_cfg(ttt="two-phase", ngram_tilt=True, ttt_lora_batch_docs=2)  # LoRA off: no matter
    with pytest.raises(ValueError, match="ttt_phases"):
        eval_cfg(ttt="phased", ttt_phases=0)
    for frac in (0.0, 1.5):
        with pytest.raises(ValueError, match="ttt_phased_prefix_max_frac must be in"):
            eval_cfg(ttt="phased", ttt_phased_prefix_max_frac=frac)
    default = EvalConfig()  # unchanged: two-phase on 32,768-target chunks
    assert default.ttt == "two-phase" and default.chunk_tokens() == 32_768
    for name in ("record", "record-tiny"):
        cfg = resolve(name).eval
        assert cfg.ttt == "phased" and not cfg.uses_lora and cfg.compliant
    with pytest.raises(ConfigError):
        resolve("tiny").with_overrides(["eval.ttt=lora-everything"])


@pytest.mark.parametrize("ttt", ["lora", "phased-lora"])
def test_one_and_two_ranks_agree(tmp_path, tokenizer, ttt):
    """LoRA rows are split over ranks (2 each here), phased steps are shared."""
    tokens = random_stream(403, seed=11)
    data = write_val(tmp_path / "data", tokens)
    art = write_fp32_artifact(tmp_path / "m.pgolf", noisy_tiny_model(), tokenizer)
    fast = ["--preset", "tiny", "--ttt", ttt]
    for key, value in {
        "window": 32, "stride": 8, "device": "cpu", "batch_windows": 3, "ttt_seq_len": 32,
        "ttt_micro_batch": 1, "ttt_lora_chunk_tokens": 16, "ttt_lora_rank": 2,
        "ttt_lora_batch_docs": 4,
        "ttt_lora_lr": 0.01, "ttt_phases": 2, "ttt_phased_prefix_tokens": 200,
        "ttt_phased_batch_seqs": 3, "ttt_phased_epochs": 1, "ttt_phased_lr": 0.02,
    }.items():  # fmt: skip
        fast += ["--set", f"eval.{key}={value}"]
    out = on_one_and_two_ranks(tmp_path, art, data, tokenizer, fast)
    (r1, n1), (r2, n2) = out[1], out[2]
    assert r2["world_size"] == 2 and r1["compliant"] and r2["compliant"]
    assert r1["ttt_steps"] == r2["ttt_steps"] > 0 and r1["time_ttt_lora_s"] > 0
    assert r1["ttt_lora_resets"] == r2["ttt_lora_resets"] > 0
    if ttt == "phased-lora":
        assert r2["ttt_phased_pauses"] == 2 and r1["time_ttt_phased_s"] > 0
    assert r2["val_bpb"] == pytest.approx(r1["val_bpb"], rel=1e-5)
    np.testing.assert_allclose(n2, n1, rtol=1e-4, atol=1e-5)


def _phased_report(tokenizer, prefix: int, max_frac: float = 1.0) -> dict:
    table = ByteTable.from_model(tokenizer)
    tokens = random_stream(400, seed=1)
    cfg = mode_cfg("phased", ttt_phased_prefix_tokens=prefix, ttt_phased_prefix_max_frac=max_frac)
    result = nll(tokens, table, cfg)
    fields = {k: v for k, v in vars(cfg).items() if k.startswith("ttt")}
    return {**fields, **result.info, "full_split": True, "val_tokens": tokens.size}


def test_a_phased_prefix_longer_than_the_split_is_warned_about(tokenizer):
    # 399 targets: a 900-target prefix puts its boundaries at 301, 601 and 901, so only the
    # first of three pauses runs (bench-300's 1.04 M targets against the 2.5 M prefix).
    report = _phased_report(tokenizer, prefix=900)
    assert report["ttt_phased_pauses"] == 1
    (line,) = report_warnings(report)
    assert "paused 1 of 3 times" in line and "(900)" in line and "(399 targets)" in line
    assert report_warnings(_phased_report(tokenizer, prefix=200)) == []
    assert report_warnings({**report, "full_split": False}) == []  # a prefix run: expected


def test_the_phased_prefix_is_capped_at_a_fraction_of_the_split(tokenizer):
    # 399 targets, cap 0.4: the 900-target prefix becomes 159, so all three pauses run
    # (boundaries 54, 107, 160) and no warning is due; a prefix under the cap is kept.
    capped = _phased_report(tokenizer, prefix=900, max_frac=0.4)
    assert capped["ttt_phased_prefix_used"] == 159
    assert capped["ttt_phased_pauses"] == 3
    assert report_warnings(capped) == []
    kept = _phased_report(tokenizer, prefix=120, max_frac=0.4)
    assert kept["ttt_phased_prefix_used"] == 120 and kept["ttt_phased_pauses"] == 3
    uncapped = _phased_report(tokenizer, prefix=900)
    assert uncapped["ttt_phased_prefix_used"] == 900 and uncapped["ttt_phased_pauses"] == 1
