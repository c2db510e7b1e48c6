"""The record recipe's packing switches: SDClip, GPTQ'd embeddings, shuffled-brotli values."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.config import resolve
from pgolf.config.pack import PackConfig
from pgolf.errors import ConfigError
from pgolf.format import codecs, grid, load_artifact, read_header
from pgolf.model import GPT
from pgolf.pack import gptq
from pgolf.pack import quantize as Q
from pgolf.pack.packer import pack_state
from pgolf.pack.synthetic import random_state

TOK = {"vocab_size": 512, "sha256": None}


def tiny_cfg(**kw) -> PackConfig:
    return dataclasses.replace(resolve("tiny").pack, search=False, **kw)


def test_sdclip_clip_is_k_times_the_row_std() -> None:
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(0)) * torch.rand(24, 1)
    torch.testing.assert_close(Q.sd_clip(w, 0, 12.85), 12.85 * w.std(dim=1))
    torch.testing.assert_close(Q.sd_clip(w, 16, 3.0), 3.0 * w.reshape(-1, 16).std(dim=1))
    cfg = tiny_cfg(clip_mode="sdclip", sdclip_k=12.0, sdclip_embed_k=20.0)
    assert Q.fixed_clip(w, "search", tiny_cfg()) is None
    torch.testing.assert_close(Q.fixed_clip(w, "mlp", cfg), 12.0 * w.std(dim=1))
    torch.testing.assert_close(Q.fixed_clip(w, "embed", cfg), 20.0 * w.std(dim=1))
    qt = Q.quantize(w, 6, 0, Q.clip_ratios(cfg), clip=Q.fixed_clip(w, "mlp", cfg))
    torch.testing.assert_close(qt.clip, 12.0 * w.std(dim=1))
    assert torch.equal(qt.scales, grid.row_scales(w, 6, 12.0 * w.std(dim=1)).half())


def test_sdclip_packs_at_k_times_std_and_k_trades_bytes_for_error() -> None:
    state = random_state(resolve("tiny").model, seed=1)
    sizes, errs = [], []
    for k in (4.0, 8.0, 16.0):
        cfg = tiny_cfg(clip_mode="sdclip", sdclip_k=k, sdclip_embed_k=2 * k)
        res = pack_state(state, model={}, tokenizer=TOK, cfg=cfg)
        art = load_artifact(res.data)
        for name in ("blocks.0.mlp.fc.weight", "tok_emb.weight"):
            w, kk = state[name], (2 * k if name == "tok_emb.weight" else k)
            bits = Q.class_bits(res.classes[name], cfg)
            q, _ = grid.quantize_rows(w, bits, kk * w.std(dim=1))
            assert torch.equal(
                art.state[name],
                grid.dequantize_rows(q, grid.row_scales(w, bits, kk * w.std(dim=1))),
            )
        sizes.append(len(res.data))
        errs.append(res.mean_error(state))
    assert sizes[0] > sizes[1] > sizes[2] and errs[2] > errs[1]


def test_budget_search_estimates_with_the_sdclip_grid() -> None:
    from pgolf.pack import budget as B

    state = random_state(resolve("tiny").model, seed=2)
    cfg = dataclasses.replace(resolve("record-tiny").pack, budget_bytes=10**9)
    rows, _ = B.estimate(state, cfg)
    result, row, _ = B.search(
        state,
        cfg,
        0,
        lambda s, p: pack_state(
            state, model={}, tokenizer=TOK, cfg=cfg, setting=s, prune_fraction=p
        ),
    )
    assert row.status == "chosen" and row.bits.startswith("7/")
    assert abs(row.actual_bytes / row.est_bytes - 1) < 0.1  # the estimate saw the same grid
    assert load_artifact(result.data).state.keys() == state.keys()


def _output_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """sum over calibration tokens of ||x (w_hat - w)^T||^2 = trace(D H D^T)."""
    d = (w_hat - w).double()
    return float(torch.einsum("ij,jk,ik->", d, h.double(), d))


def test_gptq_quantizes_the_tied_embedding_and_it_round_trips() -> None:
    from pgolf.model import GPT

    run = resolve("tiny")
    assert run.model.tie_embeddings
    torch.manual_seed(0)
    state = GPT(run.model).state_dict()
    cfg = tiny_cfg(gptq="on", gptq_samples=4, gptq_seq_len=32, embed_bits=7)
    assert "tok_emb.weight" not in gptq.calibrate(state, run.model, cfg)  # off by default
    cfg = dataclasses.replace(cfg, gptq_embed=True)
    hessians = gptq.calibrate(state, run.model, cfg)
    h = hessians["tok_emb.weight"]
    assert h.shape == (run.model.model_dim, run.model.model_dim)
    quantizer = gptq.make_quantizer(hessians, cfg)
    res = pack_state(state, model={}, tokenizer=TOK, cfg=cfg, quantizer=quantizer)
    rtn = pack_state(state, model={}, tokenizer=TOK, cfg=cfg)
    w = state["tok_emb.weight"]
    got = load_artifact(res.data).state["tok_emb.weight"]
    jobs = [("tok_emb.weight", w, 7, None)]
    direct = quantizer.many(jobs, 0, Q.clip_ratios(cfg))["tok_emb.weight"].dequantize()
    assert torch.equal(got, direct)  # bit-exact through pack -> unpack
    plain = load_artifact(rtn.data).state["tok_emb.weight"]
    schemes = {t.name: t.scheme for t in read_header(res.data)[0].tensors}
    assert schemes["tok_emb.weight"] == "int7"
    assert _output_error(w, got, h) < 0.9 * _output_error(w, plain, h)


def _value_segments(data: bytes) -> dict[str, tuple[str, str, int]]:
    header, _ = read_header(data)
    return {
        t.name: (
            header.segments[t.values.segment].codec,
            header.segments[t.values.segment].filter,
            header.segments[t.values.segment].length,
        )
        for t in header.tensors
        if t.scales is not None
    }


def test_shuffled_brotli_values_round_trip_and_win_only_when_smaller() -> None:
    g = torch.Generator().manual_seed(0)
    row = torch.randn(1, 96, generator=g) * 0.02
    state = {
        "blocks.0.mlp.fc.weight": row.repeat(64, 1),  # repeated rows: an LZ codec's case
        "blocks.0.mlp.proj.weight": torch.randn(64, 96, generator=g) * 0.02,
        "blocks.0.attn.q.weight": torch.randn(33, 129, generator=g) * 0.02,  # odd length
    }
    cfg = PackConfig(
        control_max_numel=16,
        search=False,
        value_codecs=("rans", "zstd", "brotli"),
        value_filters=("none", "shuffle2"),
        float_codecs=("raw",),
    )
    res = pack_state(state, model={}, tokenizer=TOK, cfg=cfg)
    base = pack_state(
        state,
        model={},
        tokenizer=TOK,
        cfg=dataclasses.replace(cfg, value_filters=("none",), value_codecs=("rans",)),
    )
    art, ref = load_artifact(res.data), load_artifact(base.data)
    for name in state:
        assert torch.equal(art.state[name], ref.state[name])  # bit-exact, whatever the codec
    segs = _value_segments(res.data)
    for name, (_, _, length) in segs.items():
        qt = Q.quantize(state[name], Q.class_bits(res.classes[name], cfg), 0, Q.clip_ratios(cfg))
        values = qt.q.numpy().tobytes()
        candidates = [
            len(codecs.compress(c, codecs.apply_filter(f, values)))
            for c in cfg.value_codecs
            for f in cfg.value_filters
            if f == "none" or len(values) % 2 == 0
        ]
        assert length == min(candidates)
    assert segs["blocks.0.mlp.fc.weight"][0] in ("brotli", "zstd")
    assert segs["blocks.0.attn.q.weight"][1] == "none"


def test_config_defaults_presets_and_validation() -> None:
    d = resolve("default").pack
    assert (d.clip_mode, d.gptq_embed, d.value_filters) == ("search", False, ("none",))
    assert d.value_codecs == ("rans", "zstd")
    r = resolve("record").pack
    assert (r.clip_mode, r.gptq_embed, r.embed_bits) == ("sdclip", True, 7)
    assert all(b.startswith("7/") for b in r.search_bits)
    assert "brotli" in r.value_codecs and "shuffle2" in r.value_filters
    rt = resolve("record-tiny").pack
    assert rt.clip_mode == "sdclip"
    for name in ("record", "record-tiny"):  # the recurrent U-Net skip weights stay control
        cfg = resolve(name)
        skips = GPT(dataclasses.replace(cfg.model, attention_backend="math")).skip_weights
        assert Q.classify("skip_weights", skips.detach(), cfg.pack) == "control"
    with pytest.raises(ConfigError, match="clip_mode"):
        resolve("tiny", ["pack.clip_mode=amax"])
    with pytest.raises(ConfigError, match="sdclip_k"):
        resolve("tiny", ["pack.sdclip_k=0"])
    with pytest.raises(ConfigError, match="value_filters"):
        resolve("tiny", ["pack.value_filters=shuffle4"])
    with pytest.raises(ConfigError, match="gptq_embed"):
        resolve("tiny", ["pack.gptq=off", "pack.gptq_embed=true"])
