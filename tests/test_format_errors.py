"""One hand-crafted broken file per validation rule of formats/artifact-v1.md, plus fuzzing.

Every broken file must raise exactly the named error of its rule (with "R<n>" in a one-line
message); random bytes and random mutations may only ever raise the format's own error.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard

from pgolf.format import errors as E
from pgolf.format import grid, load_artifact, schemes, spec
from pgolf.format.container import assemble, parse
from pgolf.format.rans import encode
from pgolf.format.writer import EncodedTensor, SegmentPlan, build

TOK = {"vocab_size": 16, "sha256": None}


def good_artifact(codec: str = "zstd") -> bytes:
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 0.02
    q, s = grid.quantize_rows(w, 4)
    values, scales = schemes.encode_int(q, s)
    ts = [
        EncodedTensor("m.weight", (4, 8), "float32", "int4", values, scales),
        EncodedTensor(
            "g", (4,), "float32", "fp16", schemes.encode_passthrough(torch.ones(4), "fp16")
        ),
    ]
    plan = [
        SegmentPlan(codec, "none", (("m.weight", "values"),)),
        SegmentPlan(codec, "shuffle2", (("m.weight", "scales"), ("g", "values"))),
    ]
    return build(ts, plan, model={"num_layers": 1}, tokenizer=TOK)


def parts(data: bytes) -> tuple[dict, bytes]:
    p = parse(data)
    return copy.deepcopy(p.header), bytes(p.payload)


def with_header(mutate, codec: str = "zstd") -> bytes:
    """A valid-checksum file whose header was edited by ``mutate(header)``."""
    header, payload = parts(good_artifact(codec))
    mutate(header)
    return assemble(header, payload)


def raw_header_file(raw: bytes, payload: bytes = b"", declared_raw: int | None = None) -> bytes:
    """Container around arbitrary header bytes (stored raw) with valid checksums."""
    n = len(raw) if declared_raw is None else declared_raw
    pre = spec.PREAMBLE.pack(
        spec.MAGIC, 1, 0, 1, 0, 0, len(raw), n, len(payload), zlib.crc32(payload), 0
    )[: spec.HEADER_CRC_SPAN]
    return pre + zlib.crc32(raw, zlib.crc32(pre)).to_bytes(4, "little") + raw + payload


def patch_preamble(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def tensor(header: dict, name: str) -> dict:
    return next(t for t in header["tensors"] if t["name"] == name)


def one_segment_file(codec_blob: bytes, codec: str, raw_length: int, shape: list[int]) -> bytes:
    header = {
        "model": {},
        "tokenizer": TOK,
        "meta": {},
        "segments": [
            dict(
                codec=codec, filter="none", offset=0, length=len(codec_blob), raw_length=raw_length
            )
        ],
        "tensors": [
            dict(name="g", shape=shape, dtype="float32", scheme="fp16", values=[0, 0, raw_length])
        ],
    }
    return assemble(header, codec_blob)


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


CASES = {
    E.BadMagic: lambda: b"PK\x03\x04" + good_artifact()[4:],
    E.VersionTooOld: lambda: assemble(*parts(good_artifact()), major=0),
    E.VersionTooNew: lambda: assemble(*parts(good_artifact()), major=2),
    E.SchemeVersionTooOld: lambda: assemble(*parts(good_artifact()), scheme_version=0),
    E.SchemeVersionTooNew: lambda: assemble(*parts(good_artifact()), scheme_version=9),
    E.ReservedNotZero: lambda: assemble(*parts(good_artifact()), reserved=1),
    E.HeaderTooLarge: lambda: patch_preamble(good_artifact(), 20, "<I", spec.MAX_HEADER_BYTES + 1),
    E.TruncatedFile: lambda: good_artifact()[:-3],
    E.TrailingBytes: lambda: good_artifact() + b"\x00",
    E.HeaderChecksumMismatch: lambda: _flip(good_artifact(), spec.PREAMBLE_SIZE + 2),
    E.UnknownCodec: lambda: with_header(lambda h: h["segments"][0].update(codec="zip")),
    E.DecompressedSizeExceeded: lambda: one_segment_file(
        zstandard.ZstdCompressor().compress(bytes(4000)), "zstd", 8, [4]
    ),
    E.CorruptStream: lambda: one_segment_file(b"\x28\xb5\x2f\xfd garbage", "zstd", 8, [4]),
    E.MalformedHeader: lambda: raw_header_file(b'{"model": {}, "tokenizer": '),
    E.PayloadChecksumMismatch: lambda: _flip(good_artifact(), len(good_artifact()) - 1),
    E.InvalidName: lambda: with_header(lambda h: tensor(h, "g").update(name="../etc passwd")),
    E.DuplicateName: lambda: with_header(lambda h: tensor(h, "g").update(name="m.weight")),
    E.UnknownDtype: lambda: with_header(lambda h: tensor(h, "g").update(dtype="float64")),
    E.UnknownScheme: lambda: with_header(lambda h: tensor(h, "g").update(scheme="fp8")),
    E.UnknownFilter: lambda: with_header(lambda h: h["segments"][1].update(filter="delta")),
    E.SizeCapExceeded: lambda: with_header(
        lambda h: tensor(h, "g").update(shape=[1 << 20, 1 << 20, 1 << 20])
    ),
    E.SegmentLayoutError: lambda: with_header(
        lambda h: h["segments"][1].update(offset=h["segments"][1]["offset"] + 1)
    ),
    E.StreamLayoutError: lambda: with_header(lambda h: tensor(h, "g")["values"].__setitem__(1, 9)),
    E.ShapeLengthMismatch: lambda: with_header(lambda h: tensor(h, "g").update(shape=[5])),
    E.SymbolOutOfRange: lambda: _symbol_out_of_range(),
    E.NonFiniteScale: lambda: _non_finite_scale(),
    # 64 MiB + 2 declared raw bytes from a 12-byte payload: over the floor of the budget.
    E.DecodeBudgetExceeded: lambda: one_segment_file(
        zstandard.ZstdCompressor().compress(bytes(12)),
        "zstd",
        spec.DECODE_FLOOR + 2,
        [(1 << 25) + 1],
    ),
    E.RansLaneTooLong: lambda: one_segment_file(
        _one_lane_rans(spec.MAX_RANS_LANE_SYMBOLS + 2),
        "rans",
        spec.MAX_RANS_LANE_SYMBOLS + 2,
        [(spec.MAX_RANS_LANE_SYMBOLS + 2) // 2],
    ),
}
# Rules a loader that knows more than the container checks (tokenizer file, model
# definition): their broken files are in test_hostile_artifacts.py and below.
LOADER_RULES = {E.TokenizerMismatch, E.ModelConfigInvalid, E.TensorShapeMismatch}


def _one_lane_rans(n: int) -> bytes:
    """n zeros in one lane: one symbol of frequency 2^15, initial state 2^16, no words."""
    return struct.pack("<IHHBHI", n, 1, 1, 0, 1 << 15, 1 << 16)


def _int4_file(q: torch.Tensor, s: torch.Tensor) -> bytes:
    values, scales = schemes.encode_int(q, s)
    t = EncodedTensor("m.weight", tuple(q.shape), "float32", "int4", values, scales)
    plan = [
        SegmentPlan("rans", "none", (("m.weight", "values"),)),
        SegmentPlan("raw", "none", (("m.weight", "scales"),)),
    ]
    return build([t], plan, model={}, tokenizer=TOK)


def _symbol_out_of_range() -> bytes:
    q = torch.zeros(2, 4, dtype=torch.int8)
    q[1, 2] = 8  # int4's grid is [-7, 7]
    return _int4_file(q, torch.ones(2, dtype=torch.float16))


def _non_finite_scale() -> bytes:
    return _int4_file(
        torch.ones(2, 4, dtype=torch.int8), torch.tensor([1.0, float("inf")], dtype=torch.float16)
    )


@pytest.mark.parametrize("rule", list(CASES), ids=lambda c: f"R{c.rule}-{c.__name__}")
def test_each_rule_has_a_broken_file(rule: type[E.FormatError]) -> None:
    with pytest.raises(E.FormatError) as info:
        load_artifact(CASES[rule]())
    assert type(info.value) is rule
    msg = str(info.value)
    assert f"(rule R{rule.rule})" in msg and "\n" not in msg


def test_every_rule_is_covered() -> None:
    assert set(CASES) | LOADER_RULES == set(E.RULES)
    assert [r.rule for r in E.RULES] == list(range(1, len(E.RULES) + 1))


def test_version_messages_differ() -> None:
    old = pytest.raises(E.VersionTooOld, load_artifact, CASES[E.VersionTooOld]())
    new = pytest.raises(E.VersionTooNew, load_artifact, CASES[E.VersionTooNew]())
    assert "re-pack" in str(old.value) and "upgrade pgolf" in str(new.value)


def test_more_variants_of_the_rules() -> None:
    bomb_header = raw_header_file(zstandard.ZstdCompressor().compress(b" " * 10_000))
    bomb_header = patch_preamble(bomb_header, 14, "<B", 1)  # header codec zstd
    # re-seal the crc after the patch so the bomb check itself is what fires
    pre = bomb_header[: spec.HEADER_CRC_SPAN]
    stored = bomb_header[spec.PREAMBLE_SIZE :]
    sealed = pre + zlib.crc32(stored, zlib.crc32(pre)).to_bytes(4, "little") + stored
    sealed = patch_preamble(sealed, 20, "<I", 100)
    pre = sealed[: spec.HEADER_CRC_SPAN]
    sealed = pre + zlib.crc32(stored, zlib.crc32(pre)).to_bytes(4, "little") + stored
    with pytest.raises(E.DecompressedSizeExceeded):
        load_artifact(sealed)
    rans_bomb = one_segment_file(encode(np.zeros(4000, np.uint8)), "rans", 8, [4])
    with pytest.raises(E.DecompressedSizeExceeded):
        load_artifact(rans_bomb)
    overlap = with_header(lambda h: h["segments"][1].update(offset=h["segments"][1]["offset"] - 1))
    with pytest.raises(E.SegmentLayoutError, match="overlaps"):
        load_artifact(overlap)
    with pytest.raises(E.MalformedHeader):
        load_artifact(raw_header_file(b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(E.MalformedHeader):
        load_artifact(with_header(lambda h: h.pop("tensors")))
    with pytest.raises(E.UnknownScheme):
        load_artifact(with_header(lambda h: tensor(h, "m.weight").update(scheme="int9")))


def test_tokenizer_mismatch(shared_dir, tmp_path: Path) -> None:
    tokenizer = shared_dir / "tokenizers" / "fineweb_1024_bpe.model"  # ../shared, as in CI
    with pytest.raises(E.TokenizerMismatch, match="vocab 1024"):
        load_artifact(good_artifact(), tokenizer_path=tokenizer)
    with pytest.raises(E.TokenizerMismatch):
        load_artifact(good_artifact(), tokenizer_path=tmp_path / "missing.model")


def _only_format_errors(data: bytes) -> None:
    with contextlib.suppress(E.FormatError):
        load_artifact(data)


def test_fuzz_random_bytes() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.choice([0, 1, 7, 39, 40, 41, 100, 1000])
        data = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.5:
            data = spec.MAGIC + data
        _only_format_errors(data)


def test_fuzz_random_mutations() -> None:
    rng = random.Random(1)
    bases = [good_artifact(c) for c in ("raw", "zstd", "brotli", "lzma", "rans")]
    for i in range(400):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            at = rng.randrange(len(data))
            if op < 0.6:
                data[at] = rng.getrandbits(8)
            elif op < 0.8:
                del data[at : at + rng.randint(1, 8)]
            else:
                data[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        _only_format_errors(bytes(data))
        if i % 2 == 0:  # re-seal checksums so the mutation reaches the decoders
            _only_format_errors(_reseal(bases[i % len(bases)], rng))


def _reseal(base: bytes, rng: random.Random) -> bytes:
    header, payload = parts(base)
    payload = bytearray(payload)
    if payload and rng.random() < 0.5:
        for _ in range(rng.randint(1, 6)):
            payload[rng.randrange(len(payload))] = rng.getrandbits(8)
    else:
        text = bytearray(json.dumps(header).encode())
        for _ in range(rng.randint(1, 3)):
            text[rng.randrange(len(text))] = rng.choice(b'0123456789[]{},":-ae ')
        return raw_header_file(bytes(text), bytes(payload))
    return assemble(header, bytes(payload))
