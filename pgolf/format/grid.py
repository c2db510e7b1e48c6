"""The integer grids of the quantization schemes, shared by the packer and late QAT.

A symmetric intN row grid has levels -qmax..qmax with qmax = 2**(N-1) - 1 (int6: ±31)
and one scale per row (or per group), stored as fp16. The scale is rounded to fp16
*before* the weights are divided by it, so QAT trains against exactly the values the
container will decode: ``q * float(fp16(scale))``.
"""

from __future__ import annotations

import torch

# Smallest scale kept: below fp16's normal range scales lose precision and all-zero rows
# would divide by zero.
MIN_SCALE = 2.0**-14


def qmax(bits: int) -> int:
    if not 2 <= bits <= 8:
        raise ValueError(f"integer grids support 2..8 bits, got {bits}")
    return (1 << (bits - 1)) - 1


def row_scales(w: torch.Tensor, bits: int, clip: torch.Tensor | None = None) -> torch.Tensor:
    """fp16-rounded per-row scales (as float32) for a 2-D weight; ``clip`` defaults to row amax."""
    if clip is None:
        clip = w.detach().abs().amax(dim=-1).float()
    scale = (clip.float() / qmax(bits)).clamp_min(MIN_SCALE)
    return scale.half().float()


def quantize_rows(
    w: torch.Tensor, bits: int, clip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer levels (int8 tensor) and fp16 scales for each row of ``w``."""
    scale = row_scales(w, bits, clip)
    m = qmax(bits)
    q = torch.clamp(torch.round(w.float() / scale.unsqueeze(-1)), -m, m).to(torch.int8)
    return q, scale.half()


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float().unsqueeze(-1)


def fake_quantize_rows(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Straight-through fake quantization: forward sees the grid, backward the identity."""
    scale = row_scales(w, bits).to(w.dtype)
    m = qmax(bits)
    snapped = torch.clamp(torch.round(w / scale.unsqueeze(-1)), -m, m) * scale.unsqueeze(-1)
    return w + (snapped - w).detach()
