"""Round trips of the artifact container: every scheme x codec, golden bytes, canonical order."""

from __future__ import annotations

import hashlib

import pytest
import torch

from pgolf.format import grid, load_artifact, schemes
from pgolf.format.writer import EncodedTensor, SegmentPlan, build

CODECS = ["raw", "zstd", "brotli", "lzma", "rans"]
TOK = {"vocab_size": 16, "sha256": None}


def _int_tensor(name: str, w: torch.Tensor, bits: int, group: int = 0) -> EncodedTensor:
    x = w.reshape(-1, group) if group else w
    q, s = grid.quantize_rows(x, bits)
    values, scales = schemes.encode_int(q.reshape(w.shape), s)
    return EncodedTensor(name, tuple(w.shape), "float32", f"int{bits}", values, scales, group)


def _expected_int(w: torch.Tensor, bits: int, group: int = 0) -> torch.Tensor:
    x = w.reshape(-1, group) if group else w
    q, s = grid.quantize_rows(x, bits)
    return grid.dequantize_rows(q, s).reshape(w.shape)


def _one(t: EncodedTensor, codec: str, filt: str = "none") -> bytes:
    plan = [SegmentPlan(codec, filt, ((t.name, "values"),))]
    if t.scales is not None:
        plan.append(SegmentPlan(codec, "shuffle2", ((t.name, "scales"),)))
    return build([t], plan, model={"num_layers": 1}, tokenizer=TOK)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("group", [0, 8])
def test_int_schemes_round_trip_bit_exact(codec: str, bits: int, group: int) -> None:
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(bits)) * 0.02
    art = load_artifact(_one(_int_tensor("w", w, bits, group), codec))
    # The container must decode exactly to the QAT grid: q * fp16 scale, bit for bit.
    assert torch.equal(art.state["w"], _expected_int(w, bits, group))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "scheme,filt", [("fp32", "shuffle4"), ("fp16", "shuffle2"), ("bf16", "none"), ("fp32", "none")]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_passthrough_round_trip_bit_exact(codec, scheme, filt, dtype) -> None:
    w = (torch.randn(5, 7, generator=torch.Generator().manual_seed(1))).to(dtype)
    blob = schemes.encode_passthrough(w, scheme)
    t = EncodedTensor("c", (5, 7), schemes.dtype_name(dtype), scheme, blob)
    art = load_artifact(_one(t, codec, filt))
    cast = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[scheme]
    assert torch.equal(art.state["c"], w.to(cast).float())
    assert art.dtypes["c"] == dtype


def test_special_values_and_empty_tensors() -> None:
    w = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1e-8, 65504.0])
    t = EncodedTensor("s", (6,), "float32", "fp32", schemes.encode_passthrough(w, "fp32"))
    e = EncodedTensor("e", (0, 4), "float32", "fp16", b"")
    art = load_artifact(
        build(
            [t, e],
            [SegmentPlan("zstd", "none", (("s", "values"), ("e", "values")))],
            model={},
            tokenizer=TOK,
        )
    )
    assert torch.equal(art.state["s"], w) and art.state["e"].shape == (0, 4)


def _golden_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {
        "blocks.0.attn.q.weight": torch.randn(8, 8, generator=g) * 0.02,
        "blocks.0.mlp.fc.weight": torch.randn(16, 8, generator=g) * 0.02,
        "tok_emb.weight": torch.randn(16, 8, generator=g) * 0.02,
        "blocks.0.attn_scale": torch.ones(8),
    }


def _pack_golden(state, codecs=("raw",)) -> bytes:
    from pgolf.config.pack import PackConfig
    from pgolf.pack.packer import pack_state

    cfg = PackConfig(control_max_numel=16, value_codecs=codecs, float_codecs=("raw",), search=False)
    return pack_state(state, model={"num_layers": 1}, tokenizer=TOK, cfg=cfg).data


def _golden_artifact() -> bytes:
    """Fixed tiny checkpoint through the grid (elementwise, platform-exact) and raw codecs."""
    state = _golden_state()
    ints = [
        _int_tensor(n, state[n], b)
        for n, b in (
            ("blocks.0.attn.q.weight", 6),
            ("blocks.0.mlp.fc.weight", 5),
            ("tok_emb.weight", 8),
        )
    ]
    ctrl = EncodedTensor(
        "blocks.0.attn_scale",
        (8,),
        "float32",
        "fp16",
        schemes.encode_passthrough(state["blocks.0.attn_scale"], "fp16"),
    )
    plan = [SegmentPlan("raw", "none", ((t.name, "values"),)) for t in ints]
    plan.append(
        SegmentPlan(
            "raw", "shuffle2", tuple((t.name, "scales") for t in ints) + ((ctrl.name, "values"),)
        )
    )
    return build(ints + [ctrl], plan, model={"num_layers": 1, "model_dim": 8}, tokenizer=TOK)


# Regenerate only on a deliberate format change (and add a line to the spec's changelog):
#   python -c "import tests.test_format_roundtrip as t; print(t._golden_digest())"
GOLDEN_SHA256 = "66482bfe26bb1533f709cdc0ccd01795b3e36f12d5f5e6e4f58902fbcf82d0ab"
GOLDEN_LEN = 815


def _golden_digest() -> tuple[str, int]:
    data = _golden_artifact()
    return hashlib.sha256(data).hexdigest(), len(data)


def test_golden_bytes() -> None:
    assert _golden_digest() == (GOLDEN_SHA256, GOLDEN_LEN)


def test_output_independent_of_tensor_order() -> None:
    state = _golden_state()
    reordered = dict(reversed(list(state.items())))
    for codecs in (("raw",), ("rans", "zstd")):
        assert _pack_golden(state, codecs) == _pack_golden(reordered, codecs)


def test_grid_agreement_with_qat() -> None:
    """fake_quantize_rows (late QAT) sees exactly what the container decodes (no clip search)."""
    w = torch.randn(12, 40, generator=torch.Generator().manual_seed(3)) * 0.05
    for bits in (5, 6, 8):
        art = load_artifact(_one(_int_tensor("w", w, bits), "rans"))
        assert torch.equal(art.state["w"], grid.fake_quantize_rows(w, bits))
