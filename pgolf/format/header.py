"""Header schema: JSON -> typed entries, enforcing rules R14, R16-R24 and R28 of the spec.

Spec 1.2 adds the optional per-tensor ``lqer`` object (a low-rank correction); its streams
take part in R23/R24 like any other.

Every size is checked against a cap before it is multiplied or allocated (overflow-checked
arithmetic), so a hostile header cannot ask for terabytes; R28 then bounds the decoded
total by the file's own size, so it cannot ask for gigabytes from a few kilobytes either.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pgolf.format import errors as E
from pgolf.format import spec


@dataclasses.dataclass(frozen=True)
class Segment:
    codec: str
    filter: str
    offset: int
    length: int
    raw_length: int


@dataclasses.dataclass(frozen=True)
class StreamRef:
    segment: int
    offset: int
    length: int


@dataclasses.dataclass(frozen=True)
class LqerEntry:
    """Low-rank correction of an int tensor (spec 1.2): W = q * scale + A @ B.

    A is [rows, rank] and B is [rank, cols], each an intN matrix with one fp16 scale per row.
    """

    rank: int
    scheme: str  # int2 .. int8, shared by A and B
    a: StreamRef
    a_scales: StreamRef
    b: StreamRef
    b_scales: StreamRef

    @property
    def bits(self) -> int:
        return spec.int_scheme_bits(self.scheme)  # type: ignore[return-value]

    def refs(self) -> tuple[tuple[str, StreamRef], ...]:
        return (
            ("lqer.a", self.a),
            ("lqer.a_scales", self.a_scales),
            ("lqer.b", self.b),
            ("lqer.b_scales", self.b_scales),
        )


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scheme: str
    group_size: int  # 0 = one scale per row
    values: StreamRef
    scales: StreamRef | None
    pruned: int
    rel_err: float | None
    lqer: LqerEntry | None = None  # optional low-rank correction (spec 1.2)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def bits(self) -> int | None:
        return spec.int_scheme_bits(self.scheme)

    @property
    def rows(self) -> int:
        return self.shape[0] if len(self.shape) >= 2 else 1

    @property
    def cols(self) -> int:
        return self.numel // self.rows if self.rows else 0

    @property
    def groups_per_row(self) -> int:
        return self.cols // self.group_size if self.group_size else 1


@dataclasses.dataclass(frozen=True)
class Header:
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    segments: tuple[Segment, ...]
    tensors: tuple[TensorEntry, ...]
    meta: dict[str, Any]
    raw: dict[str, Any]


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise E.MalformedHeader(msg)


def _int(value: Any, what: str) -> int:
    _need(
        isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        f"{what} must be a non-negative integer, got {value!r}",
    )
    return value


def _str(value: Any, what: str) -> str:
    _need(isinstance(value, str), f"{what} must be a string, got {type(value).__name__}")
    return value


def validate(raw: dict[str, Any], payload_len: int, file_bytes: int) -> Header:
    for key, typ in (("model", dict), ("tokenizer", dict), ("segments", list), ("tensors", list)):
        _need(isinstance(raw.get(key), typ), f"header key '{key}' must be a {typ.__name__}")
    meta = raw.get("meta", {})
    _need(isinstance(meta, dict), "header key 'meta' must be an object")
    tok = raw["tokenizer"]
    _int(tok.get("vocab_size"), "tokenizer.vocab_size")
    sha = tok.get("sha256")
    _need(
        sha is None or (isinstance(sha, str) and len(sha) == 64),
        "tokenizer.sha256 must be null or 64 hex characters",
    )
    if len(raw["segments"]) > spec.MAX_SEGMENTS or len(raw["tensors"]) > spec.MAX_TENSORS:
        raise E.SizeCapExceeded(
            f"{len(raw['tensors'])} tensors / {len(raw['segments'])} segments exceed the caps "
            f"({spec.MAX_TENSORS} / {spec.MAX_SEGMENTS})"
        )
    segments = tuple(_segment(s, i) for i, s in enumerate(raw["segments"]))
    tensors = tuple(_tensor(t, i) for i, t in enumerate(raw["tensors"]))
    _check_names(tensors)
    _check_segment_layout(segments, payload_len)
    _check_stream_layout(tensors, segments)
    for t in tensors:
        _check_lengths(t)
    _check_decode_budget(segments, file_bytes)
    return Header(raw["model"], tok, segments, tensors, meta, raw)


def _segment(s: Any, i: int) -> Segment:
    _need(isinstance(s, dict), f"segments[{i}] must be an object")
    codec, filt = _str(s.get("codec"), f"segments[{i}].codec"), _str(s.get("filter"), "filter")
    seg = Segment(
        codec,
        filt,
        *(_int(s.get(k), f"segments[{i}].{k}") for k in ("offset", "length", "raw_length")),
    )
    if codec not in spec.CODECS:
        raise E.UnknownCodec(f"segments[{i}] codec {codec!r} is not one of {spec.CODECS}")
    if filt not in spec.FILTERS:
        raise E.UnknownFilter(f"segments[{i}] filter {filt!r} is not one of {spec.FILTERS}")
    if seg.raw_length > spec.MAX_SEGMENT_RAW:
        raise E.SizeCapExceeded(
            f"segments[{i}] declares {seg.raw_length} raw bytes, cap is {spec.MAX_SEGMENT_RAW}"
        )
    return seg


def _ref(value: Any, what: str) -> StreamRef:
    _need(isinstance(value, list) and len(value) == 3, f"{what} must be [segment, offset, length]")
    return StreamRef(*(_int(v, what) for v in value))


def _tensor(t: Any, i: int) -> TensorEntry:
    _need(isinstance(t, dict), f"tensors[{i}] must be an object")
    name = _str(t.get("name"), f"tensors[{i}].name")
    if len(name) > spec.MAX_NAME_CHARS or not spec.NAME_RE.match(name):
        raise E.InvalidName(
            f"tensors[{i}] name {name[:80]!r} must be 1-{spec.MAX_NAME_CHARS} chars of [A-Za-z0-9_.-]"
        )
    shape = t.get("shape")
    _need(isinstance(shape, list), f"{name}: shape must be a list")
    shape = tuple(_int(d, f"{name}.shape") for d in shape)
    if len(shape) > spec.MAX_NDIM:
        raise E.SizeCapExceeded(f"{name}: {len(shape)} dims exceed the cap of {spec.MAX_NDIM}")
    numel = 1
    for d in shape:  # checked at every step so the product never grows unbounded
        numel *= d
        if numel > spec.MAX_NUMEL:
            raise E.SizeCapExceeded(f"{name}: shape {shape} exceeds {spec.MAX_NUMEL} elements")
    dtype, scheme = _str(t.get("dtype"), f"{name}.dtype"), _str(t.get("scheme"), f"{name}.scheme")
    if dtype not in spec.DTYPES:
        raise E.UnknownDtype(f"{name}: dtype {dtype!r} is not one of {list(spec.DTYPES)}")
    if not spec.is_known_scheme(scheme):
        raise E.UnknownScheme(
            f"{name}: scheme {scheme!r} is not one of fp32, fp16, bf16, int2..int8"
        )
    is_int = spec.int_scheme_bits(scheme) is not None
    if is_int and t.get("scale_dtype") not in spec.SCALE_DTYPES:
        raise E.UnknownDtype(f"{name}: scale_dtype {t.get('scale_dtype')!r} is not float16")
    rel_err = t.get("rel_err")
    _need(rel_err is None or isinstance(rel_err, (int, float)), f"{name}: rel_err must be a number")
    lqer = _lqer(t["lqer"], name) if "lqer" in t else None
    _need(lqer is None or is_int, f"{name}: lqer is only defined for intN tensors")
    return TensorEntry(
        name=name,
        shape=shape,
        dtype=dtype,
        scheme=scheme,
        group_size=_int(t.get("group_size", 0), f"{name}.group_size"),
        values=_ref(t.get("values"), f"{name}.values"),
        scales=_ref(t.get("scales"), f"{name}.scales") if is_int else None,
        pruned=_int(t.get("pruned", 0), f"{name}.pruned"),
        rel_err=rel_err,
        lqer=lqer,
    )


def _lqer(raw: Any, name: str) -> LqerEntry:
    """The optional ``lqer`` object of a tensor entry (spec 1.2, section 6.1)."""
    _need(isinstance(raw, dict), f"{name}: lqer must be an object")
    rank = raw.get("rank")
    _need(
        isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1,
        f"{name}: lqer.rank must be an integer >= 1, got {rank!r}",
    )
    scheme = _str(raw.get("scheme"), f"{name}.lqer.scheme")
    if spec.int_scheme_bits(scheme) is None:
        raise E.UnknownScheme(f"{name}: lqer scheme {scheme!r} is not one of int2..int8")
    if raw.get("scale_dtype", "float16") not in spec.SCALE_DTYPES:
        raise E.UnknownDtype(f"{name}: lqer.scale_dtype {raw.get('scale_dtype')!r} is not float16")
    refs = {k: _ref(raw.get(k), f"{name}.lqer.{k}") for k in ("a", "a_scales", "b", "b_scales")}
    return LqerEntry(rank=rank, scheme=scheme, **refs)


def _check_names(tensors: tuple[TensorEntry, ...]) -> None:
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise E.DuplicateName(f"tensor name {t.name!r} appears more than once")
        seen.add(t.name)


def _check_segment_layout(segments: tuple[Segment, ...], payload_len: int) -> None:
    at = 0
    total_raw = 0
    for i, s in enumerate(segments):
        if s.offset != at:
            kind = "overlaps the previous one" if s.offset < at else "leaves a hole"
            raise E.SegmentLayoutError(f"segments[{i}] at offset {s.offset} {kind} (expected {at})")
        at += s.length
        total_raw += s.raw_length
    if at != payload_len:
        raise E.SegmentLayoutError(
            f"segments cover {at} payload bytes, the preamble declares {payload_len}"
        )
    if total_raw > spec.MAX_TOTAL_RAW:
        raise E.SizeCapExceeded(f"segments declare {total_raw} raw bytes, cap {spec.MAX_TOTAL_RAW}")


def _check_stream_layout(tensors: tuple[TensorEntry, ...], segments: tuple[Segment, ...]) -> None:
    by_segment: dict[int, list[tuple[int, int, str]]] = {}
    for t in tensors:
        lqer = t.lqer.refs() if t.lqer is not None else ()
        for label, ref in (("values", t.values), ("scales", t.scales), *lqer):
            if ref is None:
                continue
            if ref.segment >= len(segments):
                raise E.StreamLayoutError(
                    f"{t.name}.{label} names segment {ref.segment}, the header has {len(segments)}"
                )
            by_segment.setdefault(ref.segment, []).append((ref.offset, ref.length, t.name))
    for i, seg in enumerate(segments):
        at = 0
        for off, length, name in sorted(by_segment.get(i, [])):
            if off != at:
                kind = "overlaps another stream" if off < at else "leaves a hole"
                raise E.StreamLayoutError(f"{name}: stream at {off} in segment {i} {kind}")
            at += length
        if at != seg.raw_length:
            raise E.StreamLayoutError(
                f"segment {i} streams cover {at} of its {seg.raw_length} raw bytes"
            )


def _check_decode_budget(segments: tuple[Segment, ...], file_bytes: int) -> None:
    total = sum(s.raw_length for s in segments)
    budget = spec.decode_budget(file_bytes)
    if total > budget:
        raise E.DecodeBudgetExceeded(
            f"segments declare {total} raw bytes, more than a {file_bytes}-byte file may "
            f"decode to (max({spec.DECODE_FLOOR}, {spec.DECODE_RATIO} x file size) = {budget})"
        )


def _check_lengths(t: TensorEntry) -> None:
    if t.bits is None:
        want = t.numel * spec.PASSTHROUGH[t.scheme]
    else:
        if t.group_size and t.cols % t.group_size:
            raise E.ShapeLengthMismatch(
                f"{t.name}: group_size {t.group_size} does not divide the row length {t.cols}"
            )
        want_scales = t.rows * t.groups_per_row * spec.SCALE_DTYPES["float16"]
        if t.scales.length != want_scales:
            raise E.ShapeLengthMismatch(
                f"{t.name}: scales stream has {t.scales.length} bytes, shape {list(t.shape)} "
                f"needs {want_scales}"
            )
        want = t.numel
    if t.values.length != want:
        raise E.ShapeLengthMismatch(
            f"{t.name}: values stream has {t.values.length} bytes, shape {list(t.shape)} with "
            f"scheme {t.scheme} needs {want}"
        )
    if t.lqer is not None:
        _check_lqer_lengths(t)


def _check_lqer_lengths(t: TensorEntry) -> None:
    lq = t.lqer
    if lq.rank > min(t.rows, t.cols):
        raise E.ShapeLengthMismatch(
            f"{t.name}: lqer.rank {lq.rank} exceeds min(rows, cols) = {min(t.rows, t.cols)}"
        )
    scale = spec.SCALE_DTYPES["float16"]
    want = {
        "lqer.a": t.rows * lq.rank,
        "lqer.a_scales": t.rows * scale,
        "lqer.b": lq.rank * t.cols,
        "lqer.b_scales": lq.rank * scale,
    }
    for label, ref in lq.refs():
        if ref.length != want[label]:
            raise E.ShapeLengthMismatch(
                f"{t.name}: {label} stream has {ref.length} bytes, rank {lq.rank} of shape "
                f"{list(t.shape)} needs {want[label]}"
            )
