"""The relu² MLP through quack-kernels' fused GEMMs (``model.mlp_kernel="quack"``), as custom ops.

With cuBLAS the up-projection writes its pre-activation, Inductor reads it back to square it and
writes the result for the down-projection; the backward does the same around the GEMM that makes
the hidden gradient. quack's Hopper GEMMs (CuTe DSL, PyPI ``quack-kernels``) apply relu² in the
up-projection's epilogue and its derivative in the backward GEMM's epilogue, which saves about
four passes over the [tokens, hidden] activations per layer and micro-step.

One opaque forward op and one backward op (like pgolf/model/fa4.py): Inductor keeps the rest of
the block fused around them, and nothing in quack has to be traceable. The kernels are looked up
at call time from ``KERNELS``: ``use_quack`` fills it with quack's GEMMs on first use, CPU tests
plug in ``reference_forward`` / ``reference_backward`` and exercise the same op, fake and
autograd wiring. Importing this module registers the ops; it imports no quack and does no CUDA
work.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# "fwd": (x [M,K], w1 [H,K], w2 [D,H]) -> (out [M,D], preact [M,H]); "bwd": (x, w1, w2,
# preact, dout [M,D]) -> (dx, dw1, dw2). All in the activations' dtype.
KERNELS: dict[str, Callable[..., tuple[Tensor, ...]]] = {}
# quack's heuristic GEMM configs (False) or its autotuner (True: tries several configs, each a
# CuTe-DSL JIT compile, at the first call of every shape).
TUNED = False


def reference_forward(x: Tensor, w1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
    """What the fused kernels compute, in plain torch (CPU tests, and the math they must match)."""
    preact = x @ w1.T
    return F.relu(preact).square() @ w2.T, preact


def reference_backward(
    x: Tensor, w1: Tensor, w2: Tensor, preact: Tensor, dout: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    relu = F.relu(preact)
    dpreact = 2.0 * (dout @ w2) * relu
    return dpreact @ w1, dpreact.T @ x, dout.T @ relu.square()


@functools.cache
def available() -> bool:
    """quack imports and the GPU is Hopper (sm90), where its fused MLP was measured faster."""
    if not torch.cuda.is_available():
        return False
    try:
        importlib.import_module("quack.gemm_interface")
    except Exception:  # missing, or broken (built for another torch or CUDA): not available
        return False
    return torch.cuda.get_device_capability()[0] == 9


def use_quack() -> None:
    """Point the ops at quack's GEMMs (imports the package)."""
    try:
        from quack.gemm_interface import gemm_act, gemm_dact
    except ImportError as exc:
        raise RuntimeError(
            "model.mlp_kernel='quack' needs quack-kernels on this CUDA machine "
            "(pip install 'pgolf[gpu]', or bench/gpu_carry.sh on a machine without network); "
            f"or set model.mlp_kernel=torch ({exc})"
        ) from exc

    # Only the two GEMMs with an activation epilogue go through quack; the plain ones stay on
    # cuBLAS, which ran them ~2x faster at these shapes (quack's default-epilogue GEMMs took
    # 27% of the step on the H200, the weight gradients' long reductions worst).
    def forward(x: Tensor, w1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
        # B operands are (K, N): the transposed weight is a view, which quack reads as is.
        preact, postact = gemm_act(x, w1.T, activation="relu_sq", store_preact=True, tuned=TUNED)
        return postact @ w2.T, preact

    def backward(x, w1, w2, preact, dout):
        # d(relu²) in the epilogue of dout @ w2; the same epilogue re-emits relu²(preact) for dw2.
        dpreact, postact = gemm_dact(dout, w2, preact, activation="relu_sq", tuned=TUNED)
        return dpreact @ w1, dpreact.T @ x, dout.T @ postact

    KERNELS.update(fwd=forward, bwd=backward)


def _kernel(name: str) -> Callable[..., tuple[Tensor, ...]]:
    if name not in KERNELS:
        use_quack()
    return KERNELS[name]


@torch.library.custom_op("pgolf::relu2_mlp_fwd", mutates_args=())
def relu2_mlp_fwd(x: Tensor, w1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
    return _kernel("fwd")(x, w1, w2)


@relu2_mlp_fwd.register_fake
def _relu2_mlp_fwd_fake(x: Tensor, w1: Tensor, w2: Tensor) -> tuple[Tensor, Tensor]:
    return x.new_empty((x.size(0), w2.size(0))), x.new_empty((x.size(0), w1.size(0)))


@torch.library.custom_op("pgolf::relu2_mlp_bwd", mutates_args=())
def relu2_mlp_bwd(
    x: Tensor, w1: Tensor, w2: Tensor, preact: Tensor, dout: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    return _kernel("bwd")(x, w1, w2, preact, dout)


@relu2_mlp_bwd.register_fake
def _relu2_mlp_bwd_fake(x, w1, w2, preact, dout):
    return torch.empty_like(x), torch.empty_like(w1), torch.empty_like(w2)


def _setup_context(ctx, inputs, output) -> None:
    x, w1, w2 = inputs
    ctx.save_for_backward(x, w1, w2, output[1])


def _backward(ctx, dout: Tensor, _dpreact: Tensor | None):
    # The pre-activation is an auxiliary output for the backward; nobody differentiates it.
    x, w1, w2, preact = ctx.saved_tensors
    return relu2_mlp_bwd(x, w1, w2, preact, dout.contiguous())


relu2_mlp_fwd.register_autograd(_backward, setup_context=_setup_context)


def fused_relu2_mlp(x: Tensor, w1: Tensor, w2: Tensor) -> Tensor:
    """relu(x @ w1ᵀ)² @ w2ᵀ over the last dim of ``x`` [..., K], through the ops."""
    out, _ = relu2_mlp_fwd(x.reshape(-1, x.size(-1)).contiguous(), w1, w2)
    return out.view(*x.shape[:-1], w2.size(0))
