"""LQER: low-rank quantization error reconstruction (leaderboard PR #1797; Zhang et al. 2024).

After a matrix W is quantized to Ŵ, the residual E = W − Ŵ is approximated by a rank-r
product A·B (truncated SVD), A and B themselves quantized to a small symmetric grid with one
fp16 scale per row, and stored next to the tensor (container spec 1.2, ``lqer``). The
reader adds the product back in a fixed order, so every reader decodes the same bits.

A correction only pays where the residual has structure: the rank-r SVD of white noise
removes about r·(√rows + √cols)² / (rows·cols) of it, less than the same bytes spent on
one more bit of the grid (which removes ~3/4 of the error for 1 bit per weight). So each
matrix keeps its correction only when the error it removes per byte is at least
``pack.lqer_min_gain`` times what a finer grid would remove per byte.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pgolf.config.pack import PackConfig
from pgolf.format import schemes
from pgolf.format.rans import entropy_bytes
from pgolf.pack import quantize as Q

# One more bit of a symmetric grid quarters the rounding error (step halves): the exchange
# rate a correction must beat, in squared error removed per byte.
_GRID_GAIN_PER_BIT = 0.75


@dataclasses.dataclass(frozen=True)
class Correction:
    rank: int
    bits: int
    qa: torch.Tensor  # int8 [rows, rank]
    sa: torch.Tensor  # fp16 [rows]
    qb: torch.Tensor  # int8 [rank, cols]
    sb: torch.Tensor  # fp16 [rank]
    est_bytes: float  # entropy of the levels + fp16 scales (what rANS stores, ~0.2% over)

    def streams(self) -> dict[str, bytes]:
        return schemes.encode_lqer(self.qa, self.sa, self.qb, self.sb)

    def apply(self, base: torch.Tensor) -> torch.Tensor:
        """``base`` [rows, cols] plus A·B exactly as a reader computes it (float32)."""
        a = self.qa.float().numpy() * self.sa.float().numpy()[:, None]
        b = self.qb.float().numpy() * self.sb.float().numpy()[:, None]
        out = schemes.add_low_rank(base.float().numpy(), a, b)
        return torch.from_numpy(out)


def factorize(
    residual: torch.Tensor, rank: int, bits: int, ratios: torch.Tensor | None = None
) -> Correction:
    """Quantized rank-``rank`` factors of ``residual`` [rows, cols].

    A = U·√S is quantized first; B is then refit by least squares against the *quantized* A
    (B = (ÂᵀÂ)⁻¹ÂᵀE), so B absorbs A's rounding before it is quantized itself.
    """
    e = residual.double()
    rank = min(rank, *e.shape)
    u, s, vh = torch.linalg.svd(e, full_matrices=False)
    root = s[:rank].sqrt()
    a = (u[:, :rank] * root).float()
    ratios = torch.ones(1) if ratios is None else ratios
    qa = Q.quantize(a, bits, 0, ratios)
    a_hat = qa.dequantize().double()
    gram = a_hat.T @ a_hat
    gram += torch.eye(rank, dtype=gram.dtype) * (1e-12 * float(gram.trace()) + 1e-30)
    b = torch.linalg.solve(gram, a_hat.T @ e).float()
    qb = Q.quantize(b, bits, 0, ratios)
    est = level_bytes(qa.q) + level_bytes(qb.q) + 2 * (qa.scales.numel() + qb.scales.numel())
    return Correction(rank, bits, qa.q, qa.scales, qb.q, qb.scales, est)


def level_bytes(q: torch.Tensor) -> float:
    counts = np.bincount(q.numpy().view(np.uint8).ravel(), minlength=256)
    return entropy_bytes(counts)


def correct(
    w: torch.Tensor, w_hat: torch.Tensor, cfg: PackConfig, ratios: torch.Tensor | None = None
) -> tuple[Correction | None, torch.Tensor]:
    """The correction of ``w_hat`` toward ``w`` if it pays, and the weights decoded with it.

    Returns (None, w_hat) when it does not: when the squared error it removes per byte is
    below ``cfg.lqer_min_gain`` x what one more grid bit would remove per byte.
    """
    mat, base = Q.as_matrix(w.float()), Q.as_matrix(w_hat.float())
    corr = factorize(mat - base, cfg.lqer_rank, cfg.lqer_bits, ratios)
    fixed = corr.apply(base)
    if not pays(mat, base, fixed, corr.est_bytes, cfg.lqer_min_gain):
        return None, w_hat
    return corr, fixed.reshape(w_hat.shape)


def pays(
    w: torch.Tensor, base: torch.Tensor, fixed: torch.Tensor, cost: float, min_gain: float
) -> bool:
    before = float((w - base).double().square().sum())
    after = float((w - fixed).double().square().sum())
    if after >= before:
        return False
    grid_rate = _GRID_GAIN_PER_BIT * before / (w.numel() / 8)  # error removed per byte
    return (before - after) / max(cost, 1.0) >= min_gain * grid_rate
