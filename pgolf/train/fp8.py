"""FP8 (e4m3) matmuls for training: forward and input-gradient GEMMs, row-wise scaled.

A training-speed option (``train.fp8_matmuls``), never part of the model the artifact
holds: the trainer hands ``fp8_linear`` to ``GPT.set_block_matmul`` and packing, evaluation
and TTT run the same weights in bf16/fp32. Living in the trainer keeps it out of the
counted eval-side code.

Of a linear layer's three GEMMs, two run in FP8 here:

* forward ``y = x Wᵀ``: x scaled per token (row), W per output feature (row);
* input gradient ``dx = dy W``: dy scaled per token, W per input feature.

Both scale along dimensions that the GEMM does not contract, which is what row-wise
``torch._scaled_mm`` needs, and each scale comes from a single pass over its own row.
The weight gradient ``dW = dyᵀ x`` contracts over tokens; scaling it the same way would
need column-wise amaxes and transposed copies of two activation tensors, so it stays in
bf16 (it also accumulates over the whole batch, where FP8 rounding would matter most).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pgolf.errors import ConfigError

E4M3_MAX = 448.0  # largest finite float8_e4m3fn


def e4m3_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 tensor, fp32 scale [R, 1]) with ``t ≈ q * scale``; each row's amax maps to 448.

    All-zero rows (zero-initialised projections, masked gradients) keep scale ~0 and
    quantize to exact zeros.
    """
    amax = t.abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-30)
    scale = amax / E4M3_MAX
    return (t.float() / scale).to(torch.float8_e4m3fn), scale


def _scaled_mm(a: torch.Tensor, b_rows: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``a @ b_rowsᵀ`` with both operands quantized per row ([M,K] x [N,K] -> [M,N])."""
    aq, sa = e4m3_rows(a)
    bq, sb = e4m3_rows(b_rows)
    # _scaled_mm wants the first operand row-major and the second column-major: bq is
    # row-major [N, K], so its transpose is the column-major [K, N] it expects.
    return torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb.t(), out_dtype=out_dtype)


class _Fp8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        x2 = x.reshape(-1, x.shape[-1])
        return _scaled_mm(x2, w, x.dtype).view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, w = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])
        # dx = dy W: W's rows along the contraction are its columns, so quantize Wᵀ per row.
        dx = _scaled_mm(dy2, w.t().contiguous(), x.dtype).view(x.shape)
        dw = dy2.t() @ x.reshape(-1, x.shape[-1])  # x, w, dy share one dtype (fp8_linear)
        return dx, dw


def fp8_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, w)`` (no bias) with FP8 forward and input-gradient GEMMs.

    ``x`` and ``w`` must share a 16-bit float dtype (the caller casts under autocast);
    inner dimensions must be multiples of 16 (the FP8 GEMMs' alignment).
    """
    if x.dtype != w.dtype or x.dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(
            f"fp8_linear expects x and w in the same 16-bit dtype, got {x.dtype} and {w.dtype};"
            " enable bf16 autocast (train.autocast_bf16) or set train.fp8_matmuls=false"
        )
    if x.shape[-1] % 16 or w.shape[0] % 16:
        raise ValueError(
            f"fp8_linear needs in/out features divisible by 16, got {x.shape[-1]} -> {w.shape[0]}"
        )
    return _Fp8Linear.apply(x, w)


def check_fp8_support(device: torch.device, autocast_bf16: bool, mlp_kernel: str = "torch") -> None:
    """Raise a ConfigError unless FP8 training can run on ``device``."""
    if mlp_kernel == "quack":
        raise ConfigError(
            f"train.fp8_matmuls replaces the MLP's GEMMs, model.mlp_kernel={mlp_kernel!r} fuses "
            "them: choose one (set model.mlp_kernel=torch or train.fp8_matmuls=false)"
        )
    if device.type != "cuda" or not autocast_bf16:
        raise ConfigError(
            f"train.fp8_matmuls needs a CUDA GPU and train.autocast_bf16=true (device is "
            f"{device.type}, autocast_bf16={autocast_bf16}); set train.fp8_matmuls=false"
        )
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 9):
        raise ConfigError(
            f"train.fp8_matmuls needs FP8 tensor cores (compute capability >= 8.9, e.g. "
            f"H100/L4), this GPU has {cap[0]}.{cap[1]}; set train.fp8_matmuls=false"
        )


@contextlib.contextmanager
def plain_matmuls(model) -> Iterator[None]:
    """Run ``model`` (a GPT) with plain bf16/fp32 block matmuls inside the block, then restore."""
    was = model.block_matmul
    model.set_block_matmul(None)
    try:
        yield
    finally:
        model.set_block_matmul(was)
