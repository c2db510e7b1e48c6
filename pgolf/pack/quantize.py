"""Tensor classes, magnitude pruning and per-row/group quantization with clip search.

The integer grid is ``pgolf.format.grid`` (the same one late QAT trains against); this
module only chooses *which* clip each row uses and which weights are pruned to zero.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import torch

from pgolf.config.pack import PackConfig
from pgolf.format import grid

CLASSES = ("embed", "attn", "mlp", "other", "control")


def classify(name: str, t: torch.Tensor, cfg: PackConfig) -> str:
    if t.dim() < 2 or t.numel() < cfg.control_max_numel:
        return "control"
    for cls, pattern in (
        ("mlp", cfg.mlp_pattern),
        ("attn", cfg.attn_pattern),
        ("embed", cfg.embed_pattern),
    ):
        if re.search(pattern, name):
            return cls
    return "other"


def passthrough_scheme(name: str, cfg: PackConfig) -> str:
    return "fp32" if cfg.fp32_pattern and re.search(cfg.fp32_pattern, name) else cfg.passthrough


def class_bits(
    cls: str, cfg: PackConfig, setting: tuple[float, float, float] | None = None
) -> float:
    """Bits of a quantized class; ``setting`` = (embed, attn, mlp) from the budget search."""
    if setting is not None and cls in ("embed", "attn", "mlp"):
        return dict(zip(("embed", "attn", "mlp"), setting, strict=True))[cls]
    return {
        "embed": cfg.embed_bits,
        "attn": cfg.attn_bits,
        "mlp": cfg.mlp_bits,
        "other": cfg.other_bits,
    }[cls]


def prune_thresholds(
    mats: dict[str, torch.Tensor], fraction: float, scope: str
) -> dict[str, float]:
    """|w| threshold per tensor below which weights become exact zeros (0 = no pruning)."""
    return prune_thresholds_many(mats, (fraction,), scope)[fraction]


def prune_thresholds_many(
    mats: dict[str, torch.Tensor], fractions: tuple[float, ...], scope: str
) -> dict[float, dict[str, float]]:
    """Thresholds for several fractions from one sort per tensor (or one global sort)."""
    out: dict[float, dict[str, float]] = {f: {} for f in fractions}
    if all(f <= 0 for f in fractions):
        return {f: {n: 0.0 for n in mats} for f in fractions}
    if scope == "global":
        flat = np.concatenate([w.reshape(-1).abs().float().numpy() for w in mats.values()])
        thr = _kth_many(flat, fractions)
        return {f: {n: thr[f] for n in mats} for f in fractions}
    for name, w in mats.items():
        thr = _kth_many(w.reshape(-1).abs().float().numpy(), fractions)
        for f in fractions:
            out[f][name] = thr[f]
    return out


def _kth_many(values: np.ndarray, fractions: tuple[float, ...]) -> dict[float, float]:
    """The k-th smallest |w| for each fraction; np.partition is O(n), a full sort is not."""
    ks = {f: int(f * values.size) for f in fractions}
    wanted = sorted({k - 1 for k in ks.values() if k >= 1})
    part = np.partition(values, wanted) if wanted else values
    return {f: float(part[k - 1]) if k >= 1 else 0.0 for f, k in ks.items()}


def prune(w: torch.Tensor, threshold: float) -> tuple[torch.Tensor, int]:
    """Weights with |w| <= threshold set to exactly zero; returns the count newly zeroed."""
    if threshold <= 0:
        return w, 0
    mask = w.abs() <= threshold
    return w.masked_fill(mask, 0.0), int((mask & (w != 0)).sum())


@dataclasses.dataclass(frozen=True)
class Quantized:
    q: torch.Tensor  # int8 levels, shape [rows, cols]
    scales: torch.Tensor  # fp16, shape [rows * groups]
    group_size: int
    clip: torch.Tensor  # the clip chosen per row/group (float32)

    def dequantize(self) -> torch.Tensor:
        g = self.group_size or self.q.shape[1]
        flat = self.q.reshape(-1, g) if self.q.numel() else self.q.reshape(0, max(g, 1))
        return grid.dequantize_rows(flat, self.scales).reshape(self.q.shape)


def as_matrix(w: torch.Tensor) -> torch.Tensor:
    """The [rows, cols] view the int schemes use: rows = shape[0] (1 row for 1-D)."""
    return w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)


def _grouped(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the [rows, cols] matrix, its [rows * groups, group] view) in float32."""
    mat = as_matrix(w.float())
    g = group_size or mat.shape[1]
    if g and mat.shape[1] % g:
        raise ValueError(f"group_size {group_size} does not divide the row length {mat.shape[1]}")
    return mat, (mat.reshape(-1, g).contiguous() if g else mat)


def sd_clip(w: torch.Tensor, group_size: int, k: float) -> torch.Tensor:
    """SDClip: k * std of each row (or group), the clip leaderboard PR #1394 uses.

    Scale-invariant and independent of single outliers, so a row's byte cost follows k alone
    (about bits - log2 k per weight after entropy coding). Unbiased std, as in the PR.
    """
    _, x = _grouped(w, group_size)
    if not x.numel():
        return torch.zeros(x.shape[0])
    return (k * x.std(dim=1)).nan_to_num(0.0)  # 1-element groups have no spread


def fixed_clip(w: torch.Tensor, cls: str, cfg: PackConfig) -> torch.Tensor | None:
    """The clip ``cfg.clip_mode`` fixes for a tensor of class ``cls``; None = search it."""
    if cfg.clip_mode != "sdclip":
        return None
    return sd_clip(w, cfg.group_size, cfg.sdclip_embed_k if cls == "embed" else cfg.sdclip_k)


def clip_ratios(cfg: PackConfig) -> torch.Tensor:
    if not cfg.clip_search or cfg.clip_candidates == 1:
        return torch.ones(1)
    return torch.linspace(1.0, cfg.clip_min_ratio, cfg.clip_candidates)


def quantize(
    w: torch.Tensor,
    bits: float,
    group_size: int,
    ratios: torch.Tensor,
    clip: torch.Tensor | None = None,
) -> Quantized:
    """Quantize each row (or group) at the clip ratio with least squared error.

    ``clip`` (one value per row/group) skips the search, e.g. to reuse an earlier choice.
    """
    mat, x = _grouped(w, group_size)
    amax = x.abs().amax(dim=1) if x.numel() else torch.zeros(x.shape[0])
    best_clip = amax if clip is None else clip
    if clip is None and len(ratios) > 1 and x.numel():
        m = grid.qmax(bits)
        best_err = torch.full_like(amax, float("inf"))
        for r in ratios.tolist():
            clip = amax * r
            s = grid.row_scales(x, bits, clip).unsqueeze(-1)
            err = (torch.clamp(torch.round(x / s), -m, m) * s - x).square_().sum(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_clip = torch.where(better, clip, best_clip)
    q, scales = grid.quantize_rows(x, bits, best_clip)
    return Quantized(q.reshape(mat.shape), scales, group_size, best_clip)


def rel_sq_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """||w - w_hat||^2 / ||w||^2: the per-tensor reconstruction error reported everywhere."""
    w = w.float().reshape(-1)
    denom = float(w.square().sum())
    num = float((w - w_hat.float().reshape(-1)).square().sum())
    return num / denom if denom > 0 else (0.0 if num == 0 else float("inf"))
