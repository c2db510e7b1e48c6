"""LQER low-rank corrections: container round trip (spec 1.2), broken files, packer and bytes."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from pgolf.config import resolve
from pgolf.config.base import to_dict
from pgolf.format import errors as E
from pgolf.format import grid, load_artifact, schemes, spec
from pgolf.format.container import assemble, parse
from pgolf.format.writer import EncodedTensor, SegmentPlan, build
from pgolf.pack import budget as B
from pgolf.pack import lqer
from pgolf.pack import quantize as Q
from pgolf.pack.packer import pack_state
from pgolf.pack.report import lqer_segment_bytes, summary
from pgolf.pack.synthetic import random_state

TOK = {"vocab_size": 512, "sha256": None}
STREAMS = ("lqer.a", "lqer.a_scales", "lqer.b", "lqer.b_scales")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _corrected_tensor(rows=12, cols=16, rank=3, bits=6, lbits=4, group=0):
    """An int tensor with a hand-made correction, and the float32 weights it must decode to."""
    w = torch.randn(rows, cols, generator=_gen(0)) * 0.02
    x = w.reshape(-1, group) if group else w
    q, s = grid.quantize_rows(x, bits)
    a = torch.randn(rows, rank, generator=_gen(1)) * 0.01
    b = torch.randn(rank, cols, generator=_gen(2)) * 0.01
    qa, sa = grid.quantize_rows(a, lbits)
    qb, sb = grid.quantize_rows(b, lbits)
    values, scales = schemes.encode_int(q.reshape(rows, cols), s)
    t = EncodedTensor(
        "m.weight",
        (rows, cols),
        "float32",
        f"int{bits}",
        values,
        scales,
        group,
        lqer_rank=rank,
        lqer_scheme=f"int{lbits}",
        lqer=schemes.encode_lqer(qa, sa, qb, sb),
    )
    base = grid.dequantize_rows(q, s).reshape(rows, cols).numpy()
    want = schemes.add_low_rank(
        base, grid.dequantize_rows(qa, sa).numpy(), grid.dequantize_rows(qb, sb).numpy()
    )
    return t, torch.from_numpy(want)


def _artifact(t: EncodedTensor, codec="zstd") -> bytes:
    plan = [
        SegmentPlan(codec, "none", ((t.name, "values"),)),
        SegmentPlan(codec, "none", tuple((t.name, k) for k in STREAMS)),
        SegmentPlan(codec, "shuffle2", ((t.name, "scales"),)),
    ]
    return build([t], plan, model={"num_layers": 1}, tokenizer=TOK)


@pytest.mark.parametrize("codec", ["raw", "zstd", "rans", "brotli"])
@pytest.mark.parametrize("group", [0, 8])
def test_container_round_trip_is_bit_exact(codec: str, group: int) -> None:
    t, want = _corrected_tensor(group=group)
    data = _artifact(t, codec)
    art = load_artifact(data)
    assert torch.equal(art.state["m.weight"], want)
    lq = art.header.tensors[0].lqer
    assert (lq.rank, lq.scheme) == (3, "int4")
    assert parse(data).minor == spec.MINOR_LQER  # files with corrections say so


def test_low_rank_sum_order_is_fixed() -> None:
    """The reader's sum is k = 0..r-1 of float32 products, not a (fused, reordered) matmul."""
    base = np.float32([[1.0]])
    a = np.float32([[1e8, 1.0, -1e8]])
    b = np.float32([[1.0], [1.0], [1.0]])
    # ((1 + 1e8) + 1) - 1e8 in float32 loses both ones; a matmul could keep them.
    assert schemes.add_low_rank(base, a, b)[0, 0] == np.float32(0.0)


def test_files_without_corrections_are_unchanged_and_still_load() -> None:
    """An artifact written without the new key is what 1.0 wrote (minor 0) and loads."""
    t, _ = _corrected_tensor()
    old = dataclasses.replace(t, lqer_rank=0, lqer_scheme="", lqer=None)
    plan = [
        SegmentPlan("zstd", "none", (("m.weight", "values"),)),
        SegmentPlan("zstd", "shuffle2", (("m.weight", "scales"),)),
    ]
    data = build([old], plan, model={"num_layers": 1}, tokenizer=TOK)
    parsed = parse(data)
    assert parsed.minor == 0 and "lqer" not in parsed.header["tensors"][0]
    art = load_artifact(data)
    assert art.header.tensors[0].lqer is None


def test_a_reader_that_ignores_the_key_refuses_the_file() -> None:
    """A 1.0 reader ignores unknown keys; the correction's streams then break R23."""
    p = parse(_artifact(_corrected_tensor()[0]))
    header = copy.deepcopy(p.header)
    del header["tensors"][0]["lqer"]
    with pytest.raises(E.StreamLayoutError, match="R23"):
        load_artifact(assemble(header, bytes(p.payload)))


def _broken(mutate) -> bytes:
    p = parse(_artifact(_corrected_tensor()[0], "raw"))
    header = copy.deepcopy(p.header)
    mutate(header["tensors"][0]["lqer"], header)
    return assemble(header, bytes(p.payload), minor=1)


def _set(key, value):
    return lambda lq, _h: lq.__setitem__(key, value)


@pytest.mark.parametrize(
    "mutate,error",
    [
        (_set("rank", 0), E.MalformedHeader),
        (_set("rank", True), E.MalformedHeader),
        (_set("a", [1, 0]), E.MalformedHeader),
        (_set("scheme", "int9"), E.UnknownScheme),
        (_set("scale_dtype", "float32"), E.UnknownDtype),
        (_set("rank", 2), E.ShapeLengthMismatch),
        (_set("rank", 13), E.ShapeLengthMismatch),  # more than min(rows, cols)
        (_set("a", [1, 0, 5]), E.StreamLayoutError),
        (_set("b", [9, 0, 48]), E.StreamLayoutError),
        (lambda lq, h: h["tensors"][0].update(scheme="fp16"), E.MalformedHeader),
        (_set("scheme", "int2"), E.SymbolOutOfRange),  # int4 levels outside int2's grid
    ],
)
def test_broken_corrections_raise_their_rule(mutate, error) -> None:
    with pytest.raises(error, match=r"rule R\d+"):
        load_artifact(_broken(mutate))


def test_non_finite_factor_scale_is_refused() -> None:
    t, _ = _corrected_tensor()
    bad = dict(t.lqer, b_scales=np.full(3, np.inf, "<f2").tobytes())
    with pytest.raises(E.NonFiniteScale, match="R26"):
        load_artifact(_artifact(dataclasses.replace(t, lqer=bad), "raw"))


def test_correction_recovers_a_low_rank_residual() -> None:
    g = _gen(3)
    w = torch.randn(96, 128, generator=g) * 0.02
    structured = (torch.randn(96, 4, generator=g) @ torch.randn(4, 128, generator=g)) * 0.01
    w_hat = w - structured - 1e-4 * torch.randn(96, 128, generator=g)
    cfg = dataclasses.replace(resolve("tiny").pack, lqer_rank=4, lqer_bits=6, lqer_min_gain=0.0)
    corr, fixed = lqer.correct(w, w_hat, cfg)
    before, after = Q.rel_sq_error(w, w_hat), Q.rel_sq_error(w, fixed)
    assert corr is not None and corr.rank == 4
    assert after < 0.02 * before
    # A residual of pure noise is not worth its bytes next to one more grid bit.
    noise = w - 1e-3 * torch.randn(96, 128, generator=g)
    assert lqer.correct(w, noise, dataclasses.replace(cfg, lqer_min_gain=1.0))[0] is None


@pytest.fixture(scope="module")
def outlier_state() -> dict[str, torch.Tensor]:
    """Random weights plus a few large input channels per matrix, the outlier structure
    trained LMs show: a tight SDClip clips them, leaving a low-rank residual."""
    state = random_state(resolve("tiny").model, seed=2)
    g = _gen(4)
    for name, w in state.items():
        if Q.classify(name, w, resolve("tiny").pack) in ("attn", "mlp"):
            cols = torch.randperm(w.shape[1], generator=g)[:2]
            w[:, cols] += 0.2 * torch.randn(w.shape[0], 2, generator=g)
    return state


def _cfg(**kw):
    base = dict(search=False, clip_mode="sdclip", sdclip_k=4.0, lqer_rank=2, lqer_bits=5)
    return dataclasses.replace(resolve("tiny").pack, **{**base, **kw})


def test_pack_round_trip_and_exact_bytes(outlier_state) -> None:
    cfg = _cfg()
    res = pack_state(outlier_state, model={}, tokenizer=TOK, cfg=cfg)
    off = pack_state(outlier_state, model={}, tokenizer=TOK, cfg=_cfg(lqer_rank=0))
    art = load_artifact(res.data)
    corrected = [t for t in art.header.tensors if t.lqer is not None]
    assert corrected and res.mean_error(outlier_state) < 0.5 * off.mean_error(outlier_state)
    for t in art.header.tensors:  # the reader decodes exactly what the packer measured
        err = Q.rel_sq_error(outlier_state[t.name], art.state[t.name])
        assert err == pytest.approx(res.rel_err[t.name], rel=1e-5, abs=1e-9)
    name = corrected[0].name  # bit for bit: the packer's own reconstruction
    w = outlier_state[name]
    qt = Q.quantize(
        w,
        cfg.attn_bits if ".attn." in name else cfg.mlp_bits,
        0,
        Q.clip_ratios(cfg),
        clip=Q.fixed_clip(w, Q.classify(name, w, cfg), cfg),
    )
    _, fixed = lqer.correct(w, qt.dequantize(), cfg, Q.clip_ratios(cfg))
    assert torch.equal(art.state[name], fixed)
    # Exact bytes: every correction is in one segment, whose stored length the report gives.
    s = summary(art.header, len(res.data), 0, 16_000_000)
    lq_segs = {ref.segment for t in corrected for _, ref in t.lqer.refs()}
    assert len(lq_segs) == 1
    assert s["lqer_bytes"] == art.header.segments[lq_segs.pop()].length > 0
    assert s["lqer_bytes"] == lqer_segment_bytes(art.header)
    assert sum(r["lqer_bytes"] for r in s["tensors"]) == pytest.approx(
        s["lqer_bytes"], abs=len(corrected)
    )
    assert sorted(res.data and parse(res.data).header["meta"]["lqer_tensors"]) == sorted(
        t.name for t in corrected
    )


def test_estimate_counts_correction_bytes(outlier_state) -> None:
    cfg = _cfg(search_bits=("8/6/5",), search_prune=(0.0,), search_sample=1.0)
    (row,), _ = B.estimate(outlier_state, cfg)
    (row0,), _ = B.estimate(outlier_state, dataclasses.replace(cfg, lqer_rank=0))
    res = pack_state(outlier_state, model={}, tokenizer=TOK, cfg=cfg, setting=(8, 6, 5))
    assert row.est_bytes > row0.est_bytes and row.est_err < row0.est_err
    assert abs(row.est_bytes - len(res.data)) / len(res.data) < 0.05


def test_eval_loader_applies_corrections(outlier_state, tmp_path) -> None:
    from pgolf.eval.load import build_model
    from pgolf.eval.load import load_artifact as eval_load

    run = resolve("tiny")
    res = pack_state(outlier_state, model=to_dict(run.model), tokenizer=TOK, cfg=_cfg())
    path = tmp_path / "a.pgolf"
    path.write_bytes(res.data)
    loaded = eval_load(path)
    assert loaded.kind == "artifact" and loaded.lqer_tensors > 0
    art = load_artifact(res.data)
    assert all(torch.equal(loaded.state[n], art.state[n]) for n in art.state)
    build_model(loaded)  # strict load into the model
    # An old-style artifact (no corrections) of the same checkpoint loads as before.
    old = pack_state(outlier_state, model=to_dict(run.model), tokenizer=TOK, cfg=_cfg(lqer_rank=0))
    (tmp_path / "old.pgolf").write_bytes(old.data)
    assert eval_load(tmp_path / "old.pgolf").lqer_tensors == 0


def test_config_validates_the_switches() -> None:
    cfg = resolve("tiny").pack
    for bad in (dict(lqer_rank=-1), dict(lqer_bits=9), dict(lqer_classes=("norm",))):
        with pytest.raises(ValueError):
            dataclasses.replace(cfg, **bad)
