"""AWQ-lite mixed precision (leaderboard PR #1908): one more bit for the most salient matrices.

AWQ (Lin et al. 2023) observes that a layer's output error from rounding its weights is
Σ_j E[x_j²] · Σ_i ΔW_ij², so columns (and matrices) fed by large activations matter most.
The second moments E[x_j²] are the diagonal of the Hessian H = Σ x xᵀ that GPTQ's
calibration already collects, so this costs no extra pass. Each candidate matrix gets a
salience density: its activation-weighted rounding error at its class bits per parameter,
i.e. the output error one more bit (≈ 1 bit per weight after entropy coding) would remove
¾ of. The densest matrices are promoted by one bit until ``frac`` of the quantized
parameters are; the container needs nothing new (a promoted int5 matrix is an int6 one).

Without calibration statistics (GPTQ off) every input counts the same (E[x_j²] = 1): the
choice is then by weight-space error alone, which is what the budget search's proxy sees.
Saliences are measured on the same strided row sample as the search's estimates, so the
estimate and the real pack promote the same matrices.
"""

from __future__ import annotations

import torch

from pgolf.config.pack import PackConfig
from pgolf.pack import quantize as Q


def act_stats(hessians: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Per-input second moments (up to one shared factor: the calibration token count)."""
    if not hessians:
        return None
    return {n: torch.diagonal(h).float().clamp_min(0) for n, h in hessians.items()}


def sample_rows(w: torch.Tensor, frac: float) -> torch.Tensor:
    mat = Q.as_matrix(w.float())
    step = max(1, round(1 / frac))
    return mat[::step].contiguous()


def salience(
    w: torch.Tensor, bits: float, cls: str, cfg: PackConfig, act: torch.Tensor | None
) -> float:
    """Activation-weighted squared rounding error per parameter at ``bits`` (row sample)."""
    sample = sample_rows(w, cfg.search_sample)
    clip = Q.fixed_clip(sample, cls, cfg)
    qt = Q.quantize(sample, bits, cfg.group_size, Q.clip_ratios(cfg), clip=clip)
    col_err = (sample - qt.dequantize()).double().square().sum(dim=0)
    weight = torch.ones_like(col_err) if act is None else act.double()
    return float((col_err * weight).sum()) / max(sample.numel(), 1)


def candidates(classes: dict[str, str], cfg: PackConfig, act) -> list[str]:
    """Matrices that may be promoted: of ``cfg.awq_classes`` and, with statistics, having them."""
    return sorted(
        n for n, c in classes.items() if c in cfg.awq_classes and (act is None or n in act)
    )


def promote(
    numel: dict[str, int],
    sal: dict[str, float],
    bits: dict[str, float],
    frac: float,
) -> dict[str, float]:
    """{name: promoted bits} for the densest matrices covering at most ``frac`` of ``numel``.

    ``numel``: every quantized matrix (the fraction's denominator); ``sal``: the candidates'
    salience densities; ``bits``: their class bits. Greedy by density (ties by name), a
    matrix that would overshoot is skipped and smaller ones are still tried; matrices
    already at 8 bits cannot be promoted. Deterministic.
    """
    if frac <= 0:
        return {}
    room = frac * sum(numel.values())
    out: dict[str, float] = {}
    for name in sorted(sal, key=lambda n: (-sal[n], n)):
        if bits[name] >= 8 or numel[name] > room:
            continue
        out[name] = min(8.0, bits[name] + 1)
        room -= numel[name]
    return out
