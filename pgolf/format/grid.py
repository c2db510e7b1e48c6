"""The integer grids of the quantization schemes, shared by the packer and late QAT.

A symmetric intN row grid has levels -qmax..qmax with qmax = 2**(N-1) - 1 (int6: ±31)
and one scale per row (or per group), stored as fp16. Fractional bit widths name the
largest symmetric grid with at most 2**bits levels (5.5 bits: ±22, 45 levels); they are
stored under the next integer scheme (int6), whose range they fit. The scale is rounded to fp16
*before* the weights are divided by it, so QAT trains against exactly the values the
container will decode: ``q * float(fp16(scale))``.
"""

from __future__ import annotations

import math

import torch

# Smallest scale kept: below fp16's normal range scales lose precision and all-zero rows
# would divide by zero.
MIN_SCALE = 2.0**-14


def qmax(bits: float) -> int:
    """Largest level of the symmetric grid with at most 2**bits levels (int6: 31)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"integer grids support 2..8 bits, got {bits}")
    return int((2.0**bits - 1) // 2)


def scheme_bits(bits: float) -> int:
    """N of the intN container scheme that stores a ``bits``-wide grid."""
    qmax(bits)  # validates the range
    return math.ceil(bits)


def row_scales(w: torch.Tensor, bits: float, clip: torch.Tensor | None = None) -> torch.Tensor:
    """fp16-rounded per-row scales (as float32) for a 2-D weight; ``clip`` defaults to row amax."""
    if clip is None:
        clip = w.detach().abs().amax(dim=-1).float()
    scale = (clip.float() / qmax(bits)).clamp_min(MIN_SCALE)
    return scale.half().float()


def quantize_rows(
    w: torch.Tensor, bits: float, clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (int8 tensor) and fp16 scales for each row of ``w``."""
    scale = row_scales(w, bits, clip)
    m = qmax(bits)
    q = torch.clamp(torch.round(w.float() / scale.unsqueeze(-1)), -m, m).to(torch.int8)
    return q, scale.half()


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float().unsqueeze(-1)


def fake_quantize_rows(w: torch.Tensor, bits: float) -> torch.Tensor:
    """Straight-through fake quantization: forward sees the grid, backward the identity."""
    scale = row_scales(w, bits).to(w.dtype)
    m = qmax(bits)
    snapped = torch.clamp(torch.round(w / scale.unsqueeze(-1)), -m, m) * scale.unsqueeze(-1)
    return w + (snapped - w).detach()
