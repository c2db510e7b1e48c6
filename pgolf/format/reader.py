"""Load an artifact: bytes -> validated header -> decoded streams -> float32 tensors.

This is the evaluator's entry point. It never unpickles, evals or executes anything from
the file: the header is JSON, the payload is decoded by fixed codecs with bounded output.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pgolf.errors import DataError
from pgolf.format import codecs, rans, schemes
from pgolf.format import errors as E
from pgolf.format.container import parse
from pgolf.format.header import Header, validate


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A decoded artifact: dequantized float32 tensors plus everything needed to run them."""

    state: dict[str, torch.Tensor]  # canonical name -> float32 tensor (dequantized)
    model: dict[str, Any]  # the ModelConfig section as a dict
    tokenizer: dict[str, Any]  # {"vocab_size": int, "sha256": hex or None}
    header: Header
    file_bytes: int

    @property
    def dtypes(self) -> dict[str, torch.dtype]:
        """Each tensor's dtype before packing (unpack casts back to it)."""
        return {t.name: schemes.torch_dtype(t.dtype) for t in self.header.tensors}


def _read(source: str | Path | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such artifact file")
    return path.read_bytes()


def read_header(source: str | Path | bytes) -> tuple[Header, int]:
    """Validated header and file size, checking every rule except the stream contents."""
    data = _read(source)
    parsed = parse(data)
    return validate(parsed.header, len(parsed.payload), len(data)), len(data)


def load_artifact(
    source: str | Path | bytes,
    *,
    tokenizer_path: str | Path | None = None,
    check_header: Callable[[Header], None] | None = None,
) -> Artifact:
    """Decode an artifact; with ``tokenizer_path`` also check it is the packed tokenizer.

    ``check_header`` sees the validated header before a single stream is decoded: a caller
    that knows more than the container (the model the config implies) rejects there, at
    the cost of reading the header only.
    """
    data = _read(source)
    parsed = parse(data)
    header = validate(parsed.header, len(parsed.payload), len(data))
    if check_header is not None:
        check_header(header)
    raw = decode_segments(header, parsed.payload)
    state = {}
    for t in header.tensors:
        values = _slice(raw, t.values)
        scales = _slice(raw, t.scales) if t.scales is not None else None
        lqer = None
        if t.lqer is not None:  # spec 1.2: low-rank correction added after dequantization
            lqer = {label[5:]: _slice(raw, ref) for label, ref in t.lqer.refs()}
        state[t.name] = schemes.decode(t, values, scales, lqer)
    art = Artifact(state, header.model, header.tokenizer, header, len(data))
    if tokenizer_path is not None:
        check_tokenizer(art.tokenizer, tokenizer_path)
    return art


def decode_segments(header: Header, payload: memoryview) -> list[memoryview]:
    """Raw (unfiltered) bytes of every segment; all rANS segments decode in one pass."""
    out: list[memoryview | None] = [None] * len(header.segments)
    ranged = [(i, s) for i, s in enumerate(header.segments) if s.codec == "rans"]
    if ranged:
        blobs = [bytes(payload[s.offset : s.offset + s.length]) for _, s in ranged]
        decoded = rans.decode_many(
            blobs, [s.raw_length for _, s in ranged], [f"segments[{i}]" for i, _ in ranged]
        )
        for (i, _), arr in zip(ranged, decoded, strict=True):
            out[i] = memoryview(arr)  # no copy: the decoded total is what R28 bounds
    for i, s in enumerate(header.segments):
        if out[i] is None:
            blob = payload[s.offset : s.offset + s.length]
            out[i] = memoryview(codecs.decompress(s.codec, blob, s.raw_length, f"segments[{i}]"))
    for i, s in enumerate(header.segments):
        out[i] = memoryview(codecs.undo_filter(s.filter, out[i], f"segments[{i}]"))
    return out  # type: ignore[return-value]


def _slice(raw: list[memoryview], ref) -> memoryview:
    return raw[ref.segment][ref.offset : ref.offset + ref.length]


def tokenizer_identity(path: str | Path, vocab_size: int | None = None) -> dict[str, Any]:
    """{"sha256", "vocab_size"} of a tokenizer file; the vocab comes from sentencepiece."""
    path = Path(path)
    if not path.is_file():
        raise E.TokenizerMismatch(f"{path}: tokenizer file not found")
    blob = path.read_bytes()
    if vocab_size is None:
        import sentencepiece  # lazy: only needed when a tokenizer file is given

        try:
            vocab_size = int(sentencepiece.SentencePieceProcessor(model_proto=blob).vocab_size())
        except (RuntimeError, OSError, TypeError) as e:
            raise E.TokenizerMismatch(f"{path}: not a SentencePiece model ({e})") from None
    return {"sha256": hashlib.sha256(blob).hexdigest(), "vocab_size": vocab_size}


def check_tokenizer(identity: dict[str, Any], path: str | Path) -> None:
    """Raise TokenizerMismatch unless ``path`` is the tokenizer the artifact was packed with."""
    have = tokenizer_identity(path)
    if have["vocab_size"] != identity.get("vocab_size"):
        raise E.TokenizerMismatch(
            f"{path} has vocab {have['vocab_size']}, the artifact expects "
            f"{identity.get('vocab_size')}; pass the tokenizer used for training"
        )
    if identity.get("sha256") and have["sha256"] != identity["sha256"]:
        raise E.TokenizerMismatch(
            f"{path} sha256 {have['sha256'][:12]}… differs from the artifact's "
            f"{identity['sha256'][:12]}…; pass the tokenizer used for training"
        )
