"""Tensor <-> stream bytes for each scheme (scheme version 1).

intN: values are one signed byte per element in [-qmax, qmax], row-major; scales are fp16,
one per row (group_size 0) or per ``group_size`` consecutive elements of a row. The value
of an element is ``q * float32(scale)``, exactly what ``pgolf.format.grid`` computes, so
late QAT and the container agree bit for bit. Passthrough schemes store IEEE values.
"""

from __future__ import annotations

import numpy as np
import torch

from pgolf.format import errors as E
from pgolf.format import spec
from pgolf.format.header import TensorEntry

_TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PASS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH[name]


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in _TORCH.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype {dtype} has no artifact name; use float32, float16 or bfloat16")


def encode_passthrough(t: torch.Tensor, scheme: str) -> bytes:
    """IEEE little-endian bytes of ``t`` cast to the scheme's dtype (bf16 via its uint16 bits)."""
    x = t.detach().to("cpu", _PASS[scheme]).contiguous().reshape(-1)
    bits = x.view(torch.int16) if x.element_size() == 2 else x.view(torch.int32)
    return bits.numpy().astype(bits.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


def encode_int(q: torch.Tensor, scales: torch.Tensor) -> tuple[bytes, bytes]:
    """Row-major int8 levels and fp16 scales -> (values bytes, scales bytes)."""
    assert q.dtype == torch.int8 and scales.dtype == torch.float16
    values = q.contiguous().reshape(-1).numpy().tobytes()
    return values, scales.contiguous().reshape(-1).view(torch.int16).numpy().astype("<i2").tobytes()


def decode(
    t: TensorEntry,
    values: memoryview,
    scales: memoryview | None,
    lqer: dict[str, memoryview] | None = None,
) -> torch.Tensor:
    """Float32 tensor of entry ``t`` from its streams; rules R25/R26 are checked here.

    ``lqer``: the streams of ``t.lqer`` ("a", "a_scales", "b", "b_scales"), when it has one.
    """
    if t.bits is None:
        out = decode_passthrough_bytes(values, t.scheme)
    else:
        out = _decode_int(t, values, scales)
        if t.lqer is not None:
            assert lqer is not None, "the reader passes the lqer streams"
            a = _int_matrix(f"{t.name}.lqer.a", t.lqer.bits, lqer["a"], lqer["a_scales"], t.rows)
            b = _int_matrix(
                f"{t.name}.lqer.b", t.lqer.bits, lqer["b"], lqer["b_scales"], t.lqer.rank
            )
            out = torch.from_numpy(add_low_rank(out.numpy().reshape(t.rows, t.cols), a, b))
    return out.reshape(t.shape)


def _int_matrix(what: str, bits: int, values: memoryview, scales: memoryview, rows: int):
    """[rows, n] float32 matrix q * fp16 scale (one scale per row), R25/R26 checked."""
    q = np.frombuffer(values, np.int8)
    m = (1 << (bits - 1)) - 1
    if q.size and (int(q.max()) > m or int(q.min()) < -m):
        raise E.SymbolOutOfRange(f"{what}: a level lies outside the int{bits} grid [-{m}, {m}]")
    s = np.frombuffer(scales, "<f2").astype(np.float32)
    if not np.all(np.isfinite(s)):
        raise E.NonFiniteScale(f"{what}: a scale is inf or NaN")
    out = q.reshape(rows, -1).astype(np.float32)
    out *= s[:, None]
    return out


def add_low_rank(base: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``base + a @ b`` in the order the spec fixes (section 6.1), so every reader gets the
    same bits: for k = 0 .. rank-1, W = W + float32(a[:, k] * b[k, :]), each product and sum
    one IEEE single-precision operation (a BLAS matmul would reorder and fuse them)."""
    out = np.array(base, dtype=np.float32, copy=True)
    for k in range(a.shape[1]):
        out += np.multiply.outer(a[:, k], b[k, :])
    return out


def encode_lqer(
    qa: torch.Tensor, sa: torch.Tensor, qb: torch.Tensor, sb: torch.Tensor
) -> dict[str, bytes]:
    """The four lqer streams: levels of A [rows, rank] and B [rank, cols], their fp16 scales."""
    a, a_scales = encode_int(qa, sa)
    b, b_scales = encode_int(qb, sb)
    return {"a": a, "a_scales": a_scales, "b": b, "b_scales": b_scales}


def _decode_int(t: TensorEntry, values: memoryview, scales: memoryview) -> torch.Tensor:
    # numpy, single-threaded: for ~1 M-element tensors torch's thread pool costs more than
    # the work. float32(q) * float32(scale) is one IEEE product, identical in either library.
    q = np.frombuffer(values, np.int8)
    m = (1 << (t.bits - 1)) - 1
    if q.size:
        lo, hi = int(q.min()), int(q.max())
        if hi > m or lo < -m:
            raise E.SymbolOutOfRange(
                f"{t.name}: level {hi if hi > m else lo} outside the {t.scheme} grid [-{m}, {m}]"
            )
    s = np.frombuffer(scales, "<f2").astype(np.float32)
    if not np.all(np.isfinite(s)):
        raise E.NonFiniteScale(f"{t.name}: a scale is inf or NaN")
    groups = t.rows * t.groups_per_row
    if not groups:
        return torch.zeros(0)
    out = q.reshape(groups, -1).astype(np.float32)
    out *= s[:, None]
    return torch.from_numpy(out)


PASSTHROUGH_WIDTH = spec.PASSTHROUGH


def decode_passthrough_bytes(blob: bytes, scheme: str) -> torch.Tensor:
    """Float32 values of a passthrough stream (flat), e.g. to measure its cast error."""
    width = spec.PASSTHROUGH[scheme]
    np_dtype = {4: "<i4", 2: "<i2"}[width]
    raw = torch.from_numpy(np.frombuffer(blob, np_dtype).astype(np_dtype[1:]).copy())
    return raw.view(_PASS[scheme]).float()
