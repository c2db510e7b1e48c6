"""FlashAttention-4 (PyPI ``flash-attn-4``, CuTe DSL) as torch.library custom ops.

flash-attn-4 4.0.0b36 exposes ``flash_attn_func`` as a ``torch.autograd.Function`` whose
forward JIT-compiles CuTe-DSL kernels; Dynamo cannot trace that, so under ``torch.compile``
every layer would break the graph (and lose the fusion of the norms and rotary around it).
Registering forward and backward as opaque custom ops with fake implementations keeps the
compiled graph whole. The backward calls the package's ``_flash_attn_bwd``: b36 has no public
backward entry point, which is why ``pyproject.toml`` pins the measured version.

The kernels are looked up at call time from ``KERNELS`` so CPU tests can plug in reference
implementations and exercise the same op, fake and autograd wiring under ``torch.compile``.
Importing this module registers the ops (no CUDA work); ``attention.resolve_backend`` imports it
only when the ``fa4`` backend is chosen, and ``attend`` calls ``torch.ops.pgolf.fa4_fwd``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

Forward = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
Backward = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]
# "fwd": (q, k, v) -> (out [B,T,H,D], lse [B,H,T] fp32); "bwd": (q, k, v, out, dout, lse) ->
# (dq, dk, dv). Filled with flash-attn-4's kernels by ``use_flash_attn_4``.
KERNELS: dict[str, Forward | Backward] = {}


def use_flash_attn_4() -> None:
    """Point the ops at flash-attn-4's causal kernels (imports the package)."""
    from flash_attn.cute import interface

    # b36 warns at each kernel's first JIT that its AuxData argument is not a JitArgument
    # (twice per shape, several hundred characters each): harmless for these causal kernels,
    # and it buried the stage logs' heartbeat lines on the H200 runs.
    warnings.filterwarnings("ignore", message="Argument aux_data", category=UserWarning)

    def forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        out, lse, *_ = interface._flash_attn_fwd(q, k, v, causal=True, return_lse=True)
        return out, lse

    def backward(q, k, v, out, dout, lse):
        return tuple(interface._flash_attn_bwd(q, k, v, out, dout, lse, causal=True)[:3])

    KERNELS.update(fwd=forward, bwd=backward)


@torch.library.custom_op("pgolf::fa4_fwd", mutates_args=())
def fa4_fwd(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    return KERNELS["fwd"](q, k, v)


@fa4_fwd.register_fake
def _fa4_fwd_fake(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    b, t, h, _ = q.shape
    out = q.new_empty((b, t, h, v.size(-1)))
    return out, q.new_empty((b, h, t), dtype=torch.float32)


@torch.library.custom_op("pgolf::fa4_bwd", mutates_args=())
def fa4_bwd(
    q: Tensor, k: Tensor, v: Tensor, out: Tensor, dout: Tensor, lse: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return KERNELS["bwd"](q, k, v, out, dout, lse)


@fa4_bwd.register_fake
def _fa4_bwd_fake(q, k, v, out, dout, lse):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)


def _backward(ctx, dout: Tensor, _dlse: Tensor | None):
    # lse is an auxiliary output nobody differentiates through; its gradient is ignored.
    q, k, v, out, lse = ctx.saved_tensors
    return fa4_bwd(q, k, v, out, dout.contiguous(), lse)


fa4_fwd.register_autograd(_backward, setup_context=_setup_context)
