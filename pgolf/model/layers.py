"""Small building blocks: the fp32-master linear layer (late QAT, FP8 option) and the relu² MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pgolf.format.grid import fake_quantize_rows
from pgolf.model.fp8 import fp8_linear


class CastedLinear(nn.Linear):
    """Bias-free linear layer whose fp32 master weight is cast to the activation dtype.

    ``qat_bits`` > 0 snaps the weight to the packer's symmetric per-row intN grid in the
    forward pass (straight-through backward), so late training adapts to the exact values
    the artifact will decode. It is a plain attribute: torch.compile guards on it and
    keeps one graph per value, and the trainer compiles both during its warmup steps.
    ``fp8`` (also a plain attribute, set by ``train.fp8_matmuls``) runs the forward and
    input-gradient GEMMs in FP8 (see fp8.py).
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.qat_bits = 0
        self.fp8 = False
        # Output projections (attn.proj, mlp.proj) get zero / 1/sqrt(2L)-scaled init.
        self.is_output = False

    def weight_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight this layer multiplies by: fake-quantized under QAT, cast to ``dtype``."""
        w = self.weight
        if self.qat_bits:
            w = fake_quantize_rows(w, self.qat_bits)
        return w.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight_as(matmul_dtype(x)), self.fp8)


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: autocast's when it is on, else x's own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def linear(x: torch.Tensor, w: torch.Tensor, fp8: bool) -> torch.Tensor:
    """x @ wᵀ, ``w`` already in the matmul dtype; FP8 GEMMs when asked."""
    return fp8_linear(x.to(w.dtype), w) if fp8 else F.linear(x, w)


class MLP(nn.Module):
    """relu² MLP (squared ReLU beat GELU at this scale in the modded-nanogpt speedruns)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim)
        self.proj.is_output = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.relu(self.fc(x)).square())


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm: the per-channel scales live in the residual branches instead."""
    return F.rms_norm(x, (x.size(-1),))
