"""Build container bytes from encoded tensor streams and a segment plan.

The packer decides which streams share a segment and which codec/filter each segment
uses; this module only lays bytes out contiguously (no holes, no padding) in plan order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pgolf.format import codecs, rans, spec
from pgolf.format.container import assemble


@dataclasses.dataclass(frozen=True)
class EncodedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # original dtype name: float32, float16, bfloat16
    scheme: str  # fp32/fp16/bf16 or int2..int8
    values: bytes
    scales: bytes | None = None  # fp16 bytes for int schemes
    group_size: int = 0
    pruned: int = 0
    rel_err: float | None = None
    # Optional low-rank correction (spec 1.2): rank, scheme ("int4") and the four streams
    # "a", "a_scales", "b", "b_scales" (schemes.encode_lqer), referenced as "lqer.a" etc.
    lqer_rank: int = 0
    lqer_scheme: str = ""
    lqer: dict[str, bytes] | None = None

    def stream(self, which: str) -> bytes:
        """Bytes of stream ``which``: "values", "scales" or "lqer.a" / "lqer.b_scales" / ..."""
        if which.startswith("lqer."):
            assert self.lqer is not None, f"{self.name} has no lqer streams"
            return self.lqer[which[5:]]
        return getattr(self, which)


@dataclasses.dataclass(frozen=True)
class SegmentPlan:
    codec: str
    filter: str
    # (tensor name, "values" | "scales" | "lqer.a" | "lqer.a_scales" | ...) in byte order
    members: tuple[tuple[str, str], ...]


def build(
    tensors: list[EncodedTensor],
    plan: list[SegmentPlan],
    *,
    model: dict[str, Any],
    tokenizer: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> bytes:
    raws, refs = layout(tensors, plan)
    blobs = compress_segments(raws, [s.codec for s in plan])
    return finish(tensors, plan, raws, blobs, refs, model=model, tokenizer=tokenizer, meta=meta)


def layout(
    tensors: list[EncodedTensor], plan: list[SegmentPlan]
) -> tuple[list[bytes], dict[tuple[str, str], list[int]]]:
    """Filtered raw bytes of each segment and each stream's [segment, offset, length]."""
    by_name = {t.name: t for t in tensors}
    refs: dict[tuple[str, str], list[int]] = {}
    raws = []
    for i, seg in enumerate(plan):
        parts, at = [], 0
        for name, which in seg.members:
            blob = by_name[name].stream(which)
            refs[(name, which)] = [i, at, len(blob)]
            parts.append(blob)
            at += len(blob)
        raws.append(codecs.apply_filter(seg.filter, b"".join(parts)))
    return raws, refs


def finish(
    tensors: list[EncodedTensor],
    plan: list[SegmentPlan],
    raws: list[bytes],
    blobs: list[bytes],
    refs: dict[tuple[str, str], list[int]],
    *,
    model: dict[str, Any],
    tokenizer: dict[str, Any],
    meta: dict[str, Any] | None = None,
) -> bytes:
    """Container bytes from already compressed segment blobs (in plan order)."""
    segments, offset = [], 0
    for seg, raw, blob in zip(plan, raws, blobs, strict=True):
        segments.append(
            dict(
                codec=seg.codec,
                filter=seg.filter,
                offset=offset,
                length=len(blob),
                raw_length=len(raw),
            )
        )
        offset += len(blob)
    header = {
        "model": model,
        "tokenizer": tokenizer,
        "segments": segments,
        "tensors": [_entry(t, refs) for t in tensors],
        "meta": meta or {},
    }
    # Files with a low-rank correction say so in the preamble's minor (spec 1.2); files
    # without one stay byte-identical to what 1.0 writers produced.
    minor = spec.MINOR_LQER if any(t.lqer for t in tensors) else spec.MINOR
    return assemble(header, b"".join(blobs), minor=minor)


def compress_segments(raws: list[bytes], codec_names: list[str]) -> list[bytes]:
    """Compress each raw segment; all rANS segments are encoded in one vectorized pass."""
    out: list[bytes | None] = [None] * len(raws)
    idx = [i for i, c in enumerate(codec_names) if c == "rans"]
    if idx:
        enc = rans.encode_many([np.frombuffer(raws[i], np.uint8) for i in idx])
        for i, blob in zip(idx, enc, strict=True):
            out[i] = blob
    for i, c in enumerate(codec_names):
        if out[i] is None:
            out[i] = codecs.compress(c, raws[i])
    return out  # type: ignore[return-value]


def _entry(t: EncodedTensor, refs: dict[tuple[str, str], list[int]]) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "scheme": t.scheme,
        "values": refs[(t.name, "values")],
        "pruned": t.pruned,
    }
    if t.scales is not None:
        e.update(scales=refs[(t.name, "scales")], scale_dtype="float16", group_size=t.group_size)
    if t.rel_err is not None:
        e["rel_err"] = round(float(t.rel_err), 7)
    if t.lqer:
        e["lqer"] = {
            "rank": t.lqer_rank,
            "scheme": t.lqer_scheme,
            "scale_dtype": "float16",
            **{k: refs[(t.name, f"lqer.{k}")] for k in ("a", "a_scales", "b", "b_scales")},
        }
    return e
