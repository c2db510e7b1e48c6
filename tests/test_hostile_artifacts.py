"""Small files that pass every 1.0 container rule yet asked for hours or gigabytes (issue 17).

One hand-crafted file per class: a rANS lane of 2^32 - 1 symbols in 282 bytes, zstd bombs,
a tensor of 2^32 elements, one long rANS lane inside the decode budget, a model config out
of bounds or of the wrong type, tensors that disagree with the config. Each must be rejected
with its rule's one-line error *before anything is decoded* (the decoders are replaced by
tripwires, so "fast" is asserted as bounded work, not wall time), in a process whose peak
memory stays under 2 GiB, and through the CLIs as one line with a non-zero exit.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard
from click.testing import CliRunner

from pgolf.config import ModelConfig
from pgolf.config.base import to_dict
from pgolf.eval import load as eval_load
from pgolf.format import codecs, rans, reader, schemes, spec
from pgolf.format import errors as E
from pgolf.format.container import assemble
from pgolf.format.writer import EncodedTensor, SegmentPlan, build

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO.parent / "shared" / "tokenizers" / "fineweb_1024_bpe.model"
TOK = {"vocab_size": 1024, "sha256": None}
# A real but microscopic model: 30 tensors, 5.5 k parameters, built on CPU in milliseconds.
MICRO = ModelConfig(
    vocab_size=1024,
    num_layers=2,
    model_dim=16,
    num_heads=2,
    num_kv_heads=1,
    rope_dims=4,
    train_seq_len=16,
    xsa_last_n=1,
    bigram_buckets=8,
    bigram_dim=4,
    value_embed_dim=4,
    value_embed_layers=(1,),
    attention_backend="math",
)
GIB = 1 << 30
WIDE = dataclasses.replace(MICRO, model_dim=128)  # tok_emb alone has 2^17 elements


def micro_artifact(model: dict | None = None, edit=None) -> bytes:
    """The micro model's weights as fp16 in one zstd segment; ``edit(tensors)`` may change them."""
    from pgolf.model import GPT

    torch.manual_seed(0)
    state = GPT(MICRO).state_dict()
    tensors = {
        n: EncodedTensor(
            n, tuple(t.shape), "float32", "fp16", schemes.encode_passthrough(t, "fp16")
        )
        for n, t in state.items()
    }
    if edit is not None:
        edit(tensors)
    plan = [SegmentPlan("zstd", "shuffle2", tuple((n, "values") for n in tensors))]
    return build(list(tensors.values()), plan, model=model or to_dict(MICRO), tokenizer=TOK)


def model_with(**changes) -> dict:
    return {**to_dict(MICRO), **changes}


def int8_row(values_segment: dict, blob: bytes, n: int, scale: float = 1.0) -> bytes:
    """One int8 tensor [1, n] whose values are ``blob`` (a segment of ``n`` raw bytes)."""
    scales = np.full(1, scale, "<f2").tobytes()
    header = {
        "model": {},  # R28 and R29 are file rules: they fire before the model is looked at
        "tokenizer": TOK,
        "segments": [
            dict(values_segment, filter="none", offset=0, length=len(blob), raw_length=n),
            dict(codec="raw", filter="none", offset=len(blob), length=2, raw_length=2),
        ],
        "tensors": [
            dict(
                name="w",
                shape=[1, n],
                dtype="float32",
                scheme="int8",
                scale_dtype="float16",
                group_size=0,
                values=[0, 0, n],
                scales=[1, 0, 2],
            )
        ],
    }
    return assemble(header, blob + scales)


def one_symbol_rans(n: int, lanes: int = 1) -> bytes:
    """A rANS stream of ``n`` zeros: one symbol of frequency 2^15 costs no bits at all."""
    head = struct.pack("<IHH", n, lanes, 1) + b"\x00" + struct.pack("<H", rans.M)
    return head + struct.pack(f"<{lanes}I", *[rans.L] * lanes)


def zero_model(cfg: ModelConfig, lanes: int) -> bytes:
    """Every tensor ``cfg`` implies, int8 zeros in one rANS segment of ``lanes`` lanes."""
    shapes = eval_load.expected_shapes(cfg)
    entries, at, scale_at = [], 0, 0
    for name, shape in shapes.items():
        numel, rows = int(np.prod(shape)), shape[0] if len(shape) >= 2 else 1
        entries.append(
            dict(name=name, shape=list(shape), dtype="float32", scheme="int8",
                 scale_dtype="float16", group_size=0,
                 values=[0, at, numel], scales=[1, scale_at, 2 * rows])
        )  # fmt: skip
        at, scale_at = at + numel, scale_at + 2 * rows
    blob, scales = one_symbol_rans(at, lanes), np.ones(scale_at // 2, "<f2").tobytes()
    segments = [
        dict(codec="rans", filter="none", offset=0, length=len(blob), raw_length=at),
        dict(codec="raw", filter="none", offset=len(blob), length=scale_at, raw_length=scale_at),
    ]
    header = {"model": to_dict(cfg), "tokenizer": TOK, "segments": segments, "tensors": entries}
    return assemble(header, blob + scales)


def zstd_zeros(n: int) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(bytes(n))


def fp16_tensor_file(raw_length: int, blob: bytes, codec: str = "zstd") -> bytes:
    """One fp16 tensor of raw_length / 2 elements in one segment (format-level, no model)."""
    header = {
        "model": {},
        "tokenizer": TOK,
        "segments": [
            dict(codec=codec, filter="none", offset=0, length=len(blob), raw_length=raw_length)
        ],
        "tensors": [
            dict(
                name="g",
                shape=[raw_length // 2],
                dtype="float32",
                scheme="fp16",
                values=[0, 0, raw_length],
            )
        ],
    }
    return assemble(header, blob)


def _retag(tensors: dict, name: str, shape: tuple[int, ...]) -> None:
    t = tensors[name]
    tensors[name] = EncodedTensor(name, shape, t.dtype, t.scheme, t.values)


def _drop(tensors: dict, name: str) -> None:
    del tensors[name]


def _extra(tensors: dict) -> None:
    tensors["blocks.9.attn.c_q.weight"] = EncodedTensor(
        "blocks.9.attn.c_q.weight", (2,), "float32", "fp16", bytes(4)
    )


# name -> (file, expected error): every class of the issue, as small as it can be.
HOSTILE = {
    # The 282-byte file of the issue: 2^32 - 1 symbols in one lane (hours at 10 us a symbol).
    "rans_huge_count": (lambda: int8_row({"codec": "rans"}, one_symbol_rans(2**32 - 1), 2**32 - 1),
                        E.DecodeBudgetExceeded),
    # Inside the decode budget and shaped like its config, but one lane of 432 k symbols.
    "rans_long_lane": (lambda: zero_model(WIDE, lanes=1), E.RansLaneTooLong),
    # A zstd-coded int8 tensor of 2^32 elements: numpy was asked for 16 GiB of float32.
    "zstd_2e32_elements": (lambda: int8_row({"codec": "zstd"}, zstd_zeros(1 << 16), 2**32),
                           E.DecodeBudgetExceeded),
    # A real zstd bomb: a few kB that truly decode to 96 MiB.
    "zstd_bomb": (lambda: fp16_tensor_file(96 << 20, zstd_zeros(96 << 20)), E.DecodeBudgetExceeded),
    "num_layers_100000": (lambda: micro_artifact(model_with(num_layers=100_000)),
                          E.ModelConfigInvalid),
    "num_layers_float": (lambda: micro_artifact(model_with(num_layers=2.0)), E.ModelConfigInvalid),
    "model_unknown_key": (lambda: micro_artifact(model_with(depth=2)), E.ModelConfigInvalid),
    "model_dim_disagrees": (lambda: micro_artifact(model_with(model_dim=32)),
                            E.TensorShapeMismatch),
    "tensor_shape_disagrees": (
        lambda: micro_artifact(edit=lambda ts: _retag(ts, "tok_emb.weight", (16, 1024))),
        E.TensorShapeMismatch,
    ),
    "tensor_missing": (lambda: micro_artifact(edit=lambda ts: _drop(ts, "smear.gate")),
                       E.TensorShapeMismatch),
    "tensor_extra": (lambda: micro_artifact(edit=_extra), E.TensorShapeMismatch),
}  # fmt: skip


@pytest.fixture()
def tripwires(monkeypatch):
    """Every decoder raises if reached: a rejection must come from the header alone."""

    def trip(*args, **kwargs):
        raise AssertionError("a stream was decoded before the file was rejected")

    header_only = codecs._decode

    def decode_header(codec, data, raw_length, what):
        return header_only(codec, data, raw_length, what) if what == "header" else trip()

    monkeypatch.setattr(rans, "_decode_batch", trip)
    monkeypatch.setattr(codecs, "_decode", decode_header)
    monkeypatch.setattr(schemes, "decode", trip)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_rejected_before_decoding(case: str, tripwires, tmp_path: Path) -> None:
    make, error = HOSTILE[case]
    path = tmp_path / f"{case}.pgolf"
    path.write_bytes(make())
    with pytest.raises(E.FormatError) as info:
        eval_load.load_artifact(path)
    assert type(info.value) is error
    msg = str(info.value)
    assert f"(rule R{error.rule})" in msg and "\n" not in msg


def test_the_282_byte_file_is_that_small() -> None:
    assert len(HOSTILE["rans_huge_count"][0]()) < 300


def test_lane_rule_holds_at_the_format_level(tripwires) -> None:
    # R29 does not need the model: the container reader alone refuses before decoding.
    data = int8_row({"codec": "rans"}, one_symbol_rans(2**20), 2**20)
    with pytest.raises(E.RansLaneTooLong, match="1048576 symbols"):
        reader.load_artifact(data)


def test_budget_scales_with_the_file() -> None:
    assert spec.decode_budget(1000) == spec.DECODE_FLOOR
    assert spec.decode_budget(16_000_000) == 16 * 16_000_000


def test_enough_lanes_decode(tmp_path: Path) -> None:
    # The same all-zero model over 128 lanes (3,377 symbols each) is a valid, odd artifact.
    path = tmp_path / "zeros.pgolf"
    path.write_bytes(zero_model(WIDE, lanes=128))
    loaded = eval_load.load_artifact(path)
    assert loaded.model_config == WIDE and not loaded.state["tok_emb.weight"].any()


def test_many_rans_streams_decode_in_bounded_batches(monkeypatch) -> None:
    # Each batch's lookup table costs 32 KiB a stream: batching keeps it bounded.
    monkeypatch.setattr(rans, "BATCH_STREAMS", 3)
    streams = [np.arange(i * 50, dtype=np.int64).astype(np.uint8) for i in range(1, 8)]
    blobs = rans.encode_many(streams)
    out = rans.decode_many(blobs, [s.size for s in streams], [f"s{i}" for i in range(7)])
    assert all(np.array_equal(a, b) for a, b in zip(out, streams, strict=True))
    sizes = [len(b) for b in rans._batches([rans._parse(b, s.size, "") for b, s in
                                            zip(blobs, streams, strict=True)])]  # fmt: skip
    assert sizes == [3, 3, 1]


def test_valid_micro_artifact_loads_and_builds(tmp_path: Path) -> None:
    path = tmp_path / "micro.pgolf"
    path.write_bytes(micro_artifact())
    loaded = eval_load.load_artifact(path)
    assert loaded.model_config == MICRO
    model = eval_load.build_model(loaded)
    assert model.tok_emb.weight.shape == (1024, 16)


def test_checkpoint_shapes_are_checked_before_the_model_is_built(tmp_path: Path) -> None:
    path = tmp_path / "micro.pgolf"
    path.write_bytes(micro_artifact())
    loaded = eval_load.load_artifact(path)
    loaded.state["tok_emb.weight"] = torch.zeros(1024, 8)
    with pytest.raises(eval_load.EvalInputError, match=r"tok_emb.weight has shape \[1024, 8\]"):
        eval_load.build_model(loaded)


PROBE = """
import json, resource, sys
from pgolf.eval.load import load_artifact
from pgolf.format import FormatError, load_artifact as load_container
out = {}
for path in sys.argv[1:]:
    try:  # "decoded_*" files go to the container reader alone: the evaluator stops them at R31
        (load_container if "decoded_" in path else load_artifact)(path)
        out[path] = "accepted"
    except FormatError as e:
        out[path] = type(e).__name__
out["maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(out))
"""


def test_peak_memory_while_rejecting_stays_under_2_gib(tmp_path: Path) -> None:
    paths = []
    for case, (make, _) in HOSTILE.items():
        paths.append(tmp_path / f"{case}.pgolf")
        paths[-1].write_bytes(make())
    # Inside the floor and decoded for real: 64 MiB of int8 zeros whose scale is inf (R26).
    n = (1 << 26) - 2
    paths.append(tmp_path / "decoded_then_rejected.pgolf")
    paths[-1].write_bytes(int8_row({"codec": "zstd"}, zstd_zeros(n), n, scale=np.inf))
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for case, (_, error) in HOSTILE.items():
        assert got[str(tmp_path / f"{case}.pgolf")] == error.__name__, case
    assert got[str(paths[-1])] == "NonFiniteScale"
    assert got["maxrss_bytes"] < 2 * GIB


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text and len(lines) == 1, text
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", ["inspect", "unpack"])
def test_pgolf_cli_gives_one_line(command: str, tmp_path: Path) -> None:
    from pgolf.cli import cli

    path = tmp_path / "a.pgolf"
    path.write_bytes(HOSTILE["rans_huge_count"][0]())
    args = [command, str(path)] + (["-o", str(tmp_path / "out")] if command == "unpack" else [])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert "rule R28" in _one_error_line(res.output)
    assert not (tmp_path / "out").exists()


def test_pgolf_eval_cli_gives_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from eval_helpers import random_stream, write_val

    from pgolf.eval.cli import main

    path = tmp_path / "a.pgolf"
    path.write_bytes(HOSTILE["num_layers_100000"][0]())
    data = write_val(tmp_path / "data", random_stream(400, vocab=1024))
    argv = ["pgolf-eval", str(path), "--data", str(data), "--tokenizer", str(TOKENIZER)]
    monkeypatch.setattr(sys, "argv", [*argv, "--set", "eval.device=cpu"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    assert "rule R30" in _one_error_line(capsys.readouterr().err)
