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


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``x`` runs in: autocast's when it is on, else ``x``'s own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def project(x: torch.Tensor, parts: Sequence[CastedLinear]) -> torch.Tensor:
    """x @ [W₁; W₂; …]ᵀ over the parts' concatenated weights: one GEMM, through the parts'
    shared ``matmul`` when set. Under autocast the weights are cast straight to its dtype."""
    dtype = compute_dtype(x)
    ws = [p.weight_as(dtype) for p in parts]
    w = ws[0] if len(ws) == 1 else torch.cat(ws)
    matmul = parts[0].matmul
    return F.linear(x, w) if matmul is None else matmul(x.to(dtype), w)


class MLP(nn.Module):
    """relu² MLP (squared ReLU beat GELU at this scale in the modded-nanogpt speedruns).

    ``leaky_slope`` > 0 squares a leaky ReLU instead (leaderboard PR #549): negative
    pre-activations keep a gradient, so fewer hidden units die under Muon's large steps.
    ``kernel`` is ``model.mlp_kernel``: "quack" (or "auto" where it resolves to quack) runs relu²
    inside quack's fused GEMMs on CUDA in bf16/fp16 (pgolf/model/quack_mlp.py); elsewhere the
    same math runs through torch.
    """

    def __init__(
        self, dim: int, hidden: int, leaky_slope: float = 0.0, kernel: str = "torch"
    ) -> None:
        super().__init__()
        self.fc = CastedLinear(dim, hidden)
        self.proj = CastedLinear(hidden, dim)
        self.proj.is_output = True
        self.leaky_slope = leaky_slope
        self.kernel = resolve_mlp_kernel(kernel, leaky_slope, dim, hidden)
        if self.kernel == "quack":
            from pgolf.model import quack_mlp  # registers the ops; imports no quack

            self.fused = quack_mlp.fused_relu2_mlp

    def kernel_on(self, device_type: str) -> str:
        """The kernel this MLP runs on ``device_type``: quack's only on CUDA, and not under the
        trainer's FP8 GEMMs."""
        if device_type != "cuda" or self.fc.matmul is not None:
            return "torch"
        return self.kernel

    def fused_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The 16-bit dtype the fused kernels run ``x`` in, or None where torch runs the MLP
        (CPU, fp32, or the trainer's FP8 GEMMs plugged in)."""
        if self.kernel_on(x.device.type) != "quack":
            return None
        dtype = compute_dtype(x)
        return dtype if dtype in (torch.bfloat16, torch.float16) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.fused_dtype(x)
        if dtype is not None:
            return self.fused(x.to(dtype), self.fc.weight_as(dtype), self.proj.weight_as(dtype))
        h = self.fc(x)
        h = F.leaky_relu(h, self.leaky_slope) if self.leaky_slope else F.relu(h)
        return self.proj(h.square())


def resolve_mlp_kernel(kernel: str, leaky_slope: float, dim: int, hidden: int) -> str:
    """``model.mlp_kernel`` made concrete: "auto" is "quack" where quack's fused relu² GEMMs
    apply and are installed for this GPU, else "torch"."""
    if kernel != "auto":
        return kernel
    if leaky_slope or dim % 8 or hidden % 8:
        return "torch"
    from pgolf.model import quack_mlp

    return "quack" if quack_mlp.available() else "torch"


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm: the per-channel scales live in the residual branches instead."""
    return F.rms_norm(x, (x.size(-1),))
