"""The GPT: causality of every feature, BOS isolation, XSA, RoPE, QAT grid, call contract."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
import torch.nn.functional as F
from model_helpers import noisy_model

from pgolf.config import resolve
from pgolf.format.grid import dequantize_rows, quantize_rows
from pgolf.model import GPT, attend, param_groups, resolve_backend
from pgolf.model.attention import exclusive_self_attention
from pgolf.model.extras import BigramHash

TINY = resolve("tiny").model


FEATURE_OFF = {
    "all_on": {},
    "xsa_all": {"xsa_last_n": 4},
    "no_rope": {"rope_dims": 0},
    "full_rope": {"rope_dims": 16},
    "no_qk_norm": {"qk_norm": False},
    "no_resid_mix": {"resid_mix": False},
    "no_unet": {"unet_skips": False},
    "no_bigram": {"bigram_buckets": 0},
    "no_smear": {"smear_gate": False},
    "no_value_embed": {"value_embed_dim": 0},
    "untied": {"tie_embeddings": False},
    "no_softcap": {"logit_softcap": 0.0},
    "mha": {"num_kv_heads": 4},
    "odd_layers": {"num_layers": 3, "xsa_last_n": 1, "value_embed_layers": (2,)},
    "unfused_qkv": {"fused_qkv": False},
}


@pytest.mark.parametrize("name", sorted(FEATURE_OFF))
def test_changing_a_future_token_never_changes_past_logits(name):
    cfg = dataclasses.replace(TINY, **FEATURE_OFF[name])
    model = noisy_model(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (2, 40), generator=g)
    with torch.no_grad():
        base = model(ids)
        for t in (0, 7, 20, 38):
            changed = ids.clone()
            changed[:, t + 1] = (changed[:, t + 1] + 1 + torch.arange(2)) % cfg.vocab_size
            out = model(changed)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
            # ...and the change is visible from position t+1 on (the test can fail).
            assert (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-4


def test_causal_beyond_train_length_with_ntk_rope():
    cfg = dataclasses.replace(TINY, train_seq_len=16)
    model = noisy_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (1, 48))
    with torch.no_grad():
        base = model(ids)
        changed = ids.clone()
        changed[0, 30] = (changed[0, 30] + 5) % cfg.vocab_size
        torch.testing.assert_close(model(changed)[:, :30], base[:, :30], rtol=0, atol=1e-5)


def test_ntk_scaling_changes_only_long_contexts():
    attn = GPT(TINY).blocks[0].attn
    cos_short, _ = attn.rotary.tables(TINY.train_seq_len, torch.device("cpu"))
    cos_long, _ = attn.rotary.tables(2 * TINY.train_seq_len, torch.device("cpu"))
    n = TINY.train_seq_len
    # Highest frequency (index 0) is unchanged by the base scaling, lower ones slow down.
    torch.testing.assert_close(cos_long[:n, :, 0], cos_short[:, :, 0])
    assert not torch.allclose(cos_long[:n, :, -1], cos_short[:, :, -1])


def test_bigram_and_smear_do_not_leak_across_bos():
    model = noisy_model()
    bos = TINY.bos_id
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(2, TINY.vocab_size, (3, 32), generator=g)
    ids[:, 12] = bos
    other = ids.clone()
    other[:, :12] = torch.randint(2, TINY.vocab_size, (3, 12), generator=g)
    with torch.no_grad():
        a, b = model.embed(ids), model.embed(other)
    torch.testing.assert_close(a[:, 12:], b[:, 12:], rtol=0, atol=0)
    assert (a[:, 11] - b[:, 11]).abs().max() > 0  # earlier positions do see their own tokens
    # Without the BOS the previous document would leak into position 12 (sanity of the test).
    ids[:, 12] = other[:, 12] = 5
    with torch.no_grad():
        assert (model.embed(ids)[:, 12] - model.embed(other)[:, 12]).abs().max() > 0


def test_bigram_reserves_last_bucket_for_starts():
    hb = BigramHash(64, 4, 8, bos_id=1)
    ids = torch.tensor([[7, 1, 9, 9, 1]])
    buckets = hb.bucket_ids(ids)
    assert buckets[0, 0] == 63 and buckets[0, 1] == 63 and buckets[0, 4] == 63
    assert (buckets[0, 2:4] < 63).all()


def test_xsa_output_is_orthogonal_to_own_value_and_gqa_matches_repeat():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(2, 5, 8, 16, generator=g)
    v = torch.randn(2, 5, 4, 16, generator=g)
    out = exclusive_self_attention(y, v)
    v_rep = v.repeat_interleave(2, dim=2)
    vn = F.normalize(v_rep, dim=-1)
    assert (out * vn).sum(-1).abs().max() < 1e-5
    expected = y - (y * vn).sum(-1, keepdim=True) * vn
    torch.testing.assert_close(out, expected)


def test_cpu_backends_agree_with_explicit_causal_attention():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 9, 4, 8, generator=g)
    k = torch.randn(2, 9, 2, 8, generator=g)
    v = torch.randn(2, 9, 2, 8, generator=g)
    kr, vr = k.repeat_interleave(2, 2), v.repeat_interleave(2, 2)
    scores = torch.einsum("bthd,bshd->bhts", q, kr) / 8**0.5
    scores = scores.masked_fill(torch.ones(9, 9).triu(1).bool(), float("-inf"))
    ref = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), vr)
    for name in ("sdpa", "math"):
        torch.testing.assert_close(attend(q, k, v, resolve_backend(name, "cpu")), ref)
    # Half-precision-only kernels hand fp32 inputs (GPTQ calibration) to SDPA instead of
    # failing: on CPU fa3 is not even importable, so only the fallback can answer.
    for name in ("fa3", "fa2", "sdpa_cudnn", "sdpa_flash"):
        torch.testing.assert_close(attend(q, k, v, name), ref)


def test_backend_resolution_is_cheap_and_explicit():
    assert resolve_backend("auto", "cpu") == "sdpa"
    assert resolve_backend("auto", "cuda") in ("fa3", "fa2", "sdpa_cudnn")
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("flashy", "cpu")


def test_qat_forward_uses_exactly_the_packers_int6_grid_with_straight_through_grad():
    model = noisy_model()
    lin = model.blocks[1].mlp.fc
    w = lin.weight.detach().clone()
    q, scale = quantize_rows(w, 6)
    expected = dequantize_rows(q, scale)
    model.set_qat(6)
    x = torch.eye(lin.in_features, requires_grad=False)
    out = lin(x)
    torch.testing.assert_close(out, expected.T, rtol=0, atol=0)
    out.sum().backward()
    torch.testing.assert_close(lin.weight.grad, torch.ones_like(w))  # identity backward
    model.set_qat(0)
    torch.testing.assert_close(lin(x), w.T, rtol=0, atol=0)
    assert all(m.qat_bits == 0 for m in model.modules() if hasattr(m, "qat_bits"))


@pytest.mark.parametrize("qat_bits", [0, 6])
def test_fused_qkv_computes_what_three_projections_compute(qat_bits):
    fused = noisy_model()
    split = GPT(dataclasses.replace(TINY, fused_qkv=False))
    split.load_state_dict(fused.state_dict())
    for m in (fused, split):
        m.set_qat(qat_bits)
    ids = torch.randint(0, TINY.vocab_size, (2, 16))
    tgt = torch.randint(0, TINY.vocab_size, (2, 16))
    losses = [m(ids, tgt) for m in (fused, split)]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=1e-6)
    for loss in losses:
        loss.backward()
    for name, p in fused.named_parameters():
        q = dict(split.named_parameters())[name]
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_call_contract_shapes_dtypes_and_loss_agreement():
    model = noisy_model()
    ids = torch.randint(0, TINY.vocab_size, (2, 16))
    tgt = torch.randint(0, TINY.vocab_size, (2, 16))
    with torch.no_grad():
        logits = model(ids)
        mean = model(ids, tgt)
        per_tok = model(ids, tgt, reduction="none")
    assert logits.shape == (2, 16, TINY.vocab_size) and logits.dtype == torch.float32
    assert logits.abs().max() <= TINY.logit_softcap
    assert per_tok.shape == (2, 16) and per_tok.dtype == torch.float32
    torch.testing.assert_close(per_tok.mean(), mean)
    manual = F.cross_entropy(logits.view(-1, TINY.vocab_size), tgt.view(-1))
    torch.testing.assert_close(manual, mean)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(ids, tgt).dtype == torch.float32
        assert model(ids, tgt, reduction="none").dtype == torch.float32


@pytest.fixture(scope="module")
def default_model():
    return GPT(resolve("default").model)  # ~10 s of orthogonal init on 2 CPU cores: build once


def test_state_dict_names_and_param_roles(default_model):
    model = default_model
    state = model.state_dict()
    assert state["tok_emb.weight"].shape == (1024, 512)
    assert state["blocks.10.attn.k.weight"].shape == (256, 512)
    assert state["bigram.embed.weight"].shape == (2048, 128)
    assert state["value_embed.embed.weight"].shape == (1024, 128)
    assert state["value_embed.proj.weight"].shape == (256, 128)
    assert not any("rotary" in k or "inv_freq" in k for k in state)
    assert set(state) == {n for n, _ in model.named_parameters()}
    groups = param_groups(model)
    roles = {n: role for role, items in groups.items() for n, _ in items}
    assert roles["blocks.3.mlp.fc.weight"] == "matrix"
    assert roles["tok_emb.weight"] == "embedding"
    assert roles["bigram.embed.weight"] == "embedding"
    for name in ("smear.gate", "skip_weights", "blocks.0.resid_mix", "blocks.2.attn.q_gain"):
        assert roles[name] == "control"
    assert all(p.ndim <= 2 and p.numel() <= 4096 for _, p in groups["control"])
    assert 26_000_000 < sum(p.numel() for p in model.parameters()) < 28_000_000


def test_init_rules(default_model):
    model = default_model
    blk = model.blocks[0]
    assert blk.attn.proj.weight.abs().max() == 0 and blk.mlp.proj.weight.abs().max() == 0
    w = blk.attn.q.weight
    torch.testing.assert_close(w @ w.T, torch.eye(512), atol=1e-4, rtol=0)
    assert abs(model.tok_emb.weight.std().item() - 0.005) < 2e-4
    assert model.bigram.proj.weight.abs().max() == 0 and model.bigram.embed.weight.std() > 0
    torch.testing.assert_close(blk.attn.q_gain, torch.full((8,), 1.5))
    small = dataclasses.replace(TINY, zero_init_proj=False)
    scaled = GPT(small)
    w = scaled.blocks[0].attn.proj.weight  # 64 x 64: orthogonal / sqrt(2 * 4 layers)
    torch.testing.assert_close(w @ w.T, torch.eye(64) / 8, atol=1e-5, rtol=0)


def test_an_empty_flash_attn_placeholder_is_not_taken_for_fa3(tmp_path, monkeypatch):
    from pgolf.model import attention

    pkg = tmp_path / "flash_attn_interface"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")  # what PyPI's `flash-attn-interface` 0.0.1 ships
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flash_attn_interface", raising=False)
    attention._flash_available.cache_clear()
    try:
        assert "fa3" not in attention.available_backends("cuda")
        (pkg / "__init__.py").write_text("def flash_attn_func(q, k, v, causal):\n    return q\n")
        monkeypatch.delitem(sys.modules, "flash_attn_interface", raising=False)
        attention._flash_available.cache_clear()
        assert attention.available_backends("cuda")[0] == "fa3"
    finally:
        monkeypatch.delitem(sys.modules, "flash_attn_interface", raising=False)
        attention._flash_available.cache_clear()
