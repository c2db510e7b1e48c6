"""Small building blocks: the fp32-master linear layer (with late QAT) and the squared-ReLU MLP."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.format.grid import fake_quantize_rows

# matmul(x, w) -> x @ wᵀ, both already in the matmul dtype (the trainer's FP8 GEMM).
Matmul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CastedLinear(nn.Linear):
    """Bias-free linear layer whose fp32 master weight is cast to the activation dtype.

    ``qat_bits`` > 0 snaps the weight to the packer's symmetric per-row intN grid in the
    forward pass (straight-through backward), so late training adapts to the exact values
    the artifact will decode. It is a plain attribute: torch.compile guards on it and
    keeps one graph per value, and the trainer compiles both during its warmup steps.
    ``matmul`` (also a plain attribute) replaces ``F.linear`` when set: the trainer's FP8
    GEMMs (``train.fp8_matmuls``, pgolf/train/fp8.py) plug in there.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.qat_bits = 0
        self.matmul: Matmul | None = None
        # Output projections (attn.proj, mlp.proj) get zero / 1/sqrt(2L)-scaled init.
        self.is_output = False

    def weight_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight this layer multiplies by: fake-quantized under QAT, cast to ``dtype``."""
        w = self.weight
        if self.qat_bits:
            w = fake_quantize_rows(w, self.qat_bits)
        return w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project(x, (self,))


def project(x: torch.Tensor, parts: Sequence[CastedLinear]) -> torch.Tensor:
    """x @ [W₁; W₂; …]ᵀ over the parts' concatenated weights: one GEMM, through the parts'
    shared ``matmul`` when set. Under autocast the weights are cast straight to its dtype."""
    kind = x.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
    ws = [p.weight_as(dtype) for p in parts]
    w = ws[0] if len(ws) == 1 else torch.cat(ws)
    matmul = parts[0].matmul
    return F.linear(x, w) if matmul is None else matmul(x.to(dtype), w)


class MLP(nn.Module):
    """relu² MLP (squared ReLU beat GELU at this scale in the modded-nanogpt speedruns).

    ``leaky_slope`` > 0 squares a leaky ReLU instead (leaderboard PR #549): negative
    pre-activations keep a gradient, so fewer hidden units die under Muon's large steps.
    """

    def __init__(self, dim: int, hidden: int, leaky_slope: float = 0.0) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim)
        self.proj.is_output = True
        self.leaky_slope = leaky_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.leaky_relu(h, self.leaky_slope) if self.leaky_slope else F.relu(h)
        return self.proj(h.square())


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm: the per-channel scales live in the residual branches instead."""
    return F.rms_norm(x, (x.size(-1),))
