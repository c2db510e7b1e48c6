"""Causal self-attention: kernels, partial RoPE, QK-norm, per-head q gain, XSA, output gate.

Kernel choice happens in Python when a forward is traced, never at import time and never
with CUDA work, so the evaluator and the trainer share one model and one rule:

* ``auto``: FlashAttention-4 (``flash_attn.cute``, a compiled-graph-safe custom op, see
  ``fa4.py``) on Hopper or newer when importable, else FlashAttention-3
  (``flash_attn_interface``), else FlashAttention-2 (``flash_attn``), else SDPA's cuDNN
  kernel with KV heads expanded (fastest SDPA choice measured on the H100, see
  ``available_backends``). On CPU, plain SDPA.
* ``sdpa``: SDPA with the priority cuDNN > flash > mem-efficient > math and native GQA.
* ``sdpa_cudnn``: cuDNN only, with KV heads expanded (guaranteed to run even where the
  cuDNN path lacks native GQA).
* ``sdpa_flash``: SDPA's flash backend only (native GQA). ``math``: the reference kernel.

All backends take q [B,T,H,D], k/v [B,T,Hkv,D] and return [B,T,H,D].
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from pgolf.config.model import ModelConfig
from pgolf.model.layers import CastedLinear, project

BACKENDS = ("auto", "fa4", "fa3", "fa2", "sdpa", "sdpa_cudnn", "sdpa_flash", "math")


@functools.cache
def _flash_available(module: str) -> bool:
    """``module`` imports and provides ``flash_attn_func`` (PyPI's ``flash-attn-interface``
    is an empty placeholder that would otherwise pass for FlashAttention-3)."""
    try:
        # find_spec of a submodule (flash_attn.cute) imports its parent: it raises when the
        # parent is missing. A broken build (e.g. compiled for another torch) is not available.
        if importlib.util.find_spec(module) is None:
            return False
        return callable(getattr(importlib.import_module(module), "flash_attn_func", None))
    except Exception:
        return False


@functools.cache
def _fa4_available() -> bool:
    """flash-attn-4 imports and the GPU is Hopper (sm90) or newer, the archs it builds for."""
    if not _flash_available("flash_attn.cute") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 9


def available_backends(device_type: str) -> list[str]:
    """Concrete backends that can run on this device type, fastest first."""
    if device_type != "cuda":
        return ["sdpa", "math"]
    out = []
    # H200, 24x2048 tokens, GQA 8/4, head dim 64, fwd+bwd: 0.99 ms vs cuDNN 1.41 ms.
    if _fa4_available():
        out.append("fa4")
    if _flash_available("flash_attn_interface"):
        out.append("fa3")
    if _flash_available("flash_attn"):
        out.append("fa2")
    # cuDNN with expanded KV before native-GQA SDPA: on the H100 (torch 2.11, cuDNN 9.19)
    # the whole default model trained at 0.967M tok/s with it vs 0.921M with "sdpa", whose
    # native-GQA call does not reach the cuDNN kernel (see docs/BENCHMARKS.md).
    return out + ["sdpa_cudnn", "sdpa", "sdpa_flash", "math"]


def resolve_backend(name: str, device_type: str) -> str:
    """Map ``auto`` (or a CUDA-only choice on CPU) to a concrete backend name."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; valid: {', '.join(BACKENDS)}")
    if device_type != "cuda":
        # Flash/cuDNN kernels exist only on CUDA; the CPU SDPA is exact enough for tests.
        return "math" if name == "math" else "sdpa"
    if name == "auto":
        name = available_backends("cuda")[0]
    elif name in ("fa4", "fa3", "fa2") and name not in available_backends("cuda"):
        raise ValueError(f"attention backend {name!r} is not importable here; use 'auto' or 'sdpa'")
    if name == "fa4":
        _register_fa4()
    return name


@functools.cache
def _register_fa4() -> None:
    from pgolf.model import fa4

    fa4.use_flash_attn_4()


_SDPA_LISTS = {
    "sdpa": [
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ],
    "sdpa_cudnn": [SDPBackend.CUDNN_ATTENTION],
    "sdpa_flash": [SDPBackend.FLASH_ATTENTION],
    "math": [SDPBackend.MATH],
}

_HALF_ONLY = ("fa4", "fa3", "fa2", "sdpa_cudnn", "sdpa_flash")
_FLASH = ("fa4", "fa3", "fa2")


def _kernel_dtype(q: torch.Tensor) -> torch.dtype | None:
    """The half dtype a FlashAttention kernel runs in: autocast's if on, else q's; None if
    neither is half (fp32 forwards such as GPTQ calibration then take SDPA's fp32 kernels)."""
    device = q.device.type
    on = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if on else q.dtype
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Causal attention with GQA; ``backend`` is a concrete name from ``resolve_backend``."""
    if backend in _FLASH:
        # Not autocast-aware (SDPA is): run them in autocast's dtype. Under bf16 autocast q/k
        # can still be fp32 (rms_norm is an fp32 op) and v too (the fp32 value-embedding add).
        dtype = _kernel_dtype(q)
        if dtype is None:
            backend = "sdpa"
        else:
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    elif q.dtype == torch.float32 and backend in _HALF_ONLY:
        # These kernels take only fp16/bf16; fp32 forwards (GPTQ calibration, eval without
        # autocast) use SDPA's own choice, which has fp32 kernels.
        backend = "sdpa"
    if backend == "fa4":
        # Registered by resolve_backend; an op call is what keeps the compiled graph whole.
        return torch.ops.pgolf.fa4_fwd(q, k, v)[0]
    if backend == "fa3":
        from flash_attn_interface import flash_attn_func

        out = flash_attn_func(q, k, v, causal=True)
        # Some FA3 builds return (out, softmax_lse).
        return out[0] if isinstance(out, tuple) else out
    if backend == "fa2":
        from flash_attn import flash_attn_func

        return flash_attn_func(q, k, v, causal=True)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    group = q.size(1) // k.size(1)
    if backend == "sdpa_cudnn" and group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    gqa = k.size(1) != q.size(1)
    if q.device.type == "cuda":
        with sdpa_kernel(_SDPA_LISTS[backend], set_priority=True):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    elif backend == "math":
        with sdpa_kernel([SDPBackend.MATH]):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    else:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    return y.transpose(1, 2)


class Rotary(nn.Module):
    """Partial RoPE tables for the first ``dims`` head dims (non-persistent buffers).

    When a forward sees more positions than ``train_seq_len`` the base is NTK-scaled,
    base * s^(d/(d-2)) with s = T/train_len, so low frequencies stretch to the longer
    context instead of rotating into angles never seen in training.
    """

    def __init__(self, dims: int, base: float, train_seq_len: int) -> None:
        super().__init__()
        self.dims, self.base, self.train_seq_len = dims, base, train_seq_len
        self.register_buffer("inv_freq", self._inv_freq(base), persistent=False)

    def _inv_freq(self, base: float) -> torch.Tensor:
        idx = torch.arange(0, self.dims, 2, dtype=torch.float32)
        return 1.0 / (base ** (idx / self.dims))

    def tables(self, seq_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device)
        if seq_len > self.train_seq_len and self.dims > 2:
            scale = seq_len / self.train_seq_len
            inv_freq = self._inv_freq(self.base * scale ** (self.dims / (self.dims - 2))).to(device)
        t = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        # [T, 1, dims/2]: broadcasts over batch and heads of [B, T, H, D] tensors.
        return freqs.cos()[:, None, :], freqs.sin()[:, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dims: int) -> torch.Tensor:
    half = dims // 2
    x1, x2, rest = x[..., :half], x[..., half:dims], x[..., dims:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin, rest), dim=-1)


def exclusive_self_attention(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """XSA: remove from each head's output its component along the position's own value.

    y [B,T,H,D], v [B,T,Hkv,D]. Query heads are viewed as [Hkv, group] so each KV head's
    normalized value serves its whole group without materialising repeated KV.
    """
    b, t, h, d = y.shape
    hkv = v.size(2)
    yg = y.reshape(b, t, hkv, h // hkv, d)
    vn = F.normalize(v, dim=-1).unsqueeze(3)
    yg = yg - (yg * vn).sum(dim=-1, keepdim=True) * vn
    return yg.reshape(b, t, h, d)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        # Read in forward (qk_norm, the output gate): a field the exported script fixes is
        # then decided when it is exported.
        self.cfg = cfg
        d, hd = cfg.model_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q = CastedLinear(d, cfg.num_heads * hd)
        self.k = CastedLinear(d, cfg.kv_dim)
        self.v = CastedLinear(d, cfg.kv_dim)
        self.proj = CastedLinear(cfg.num_heads * hd, d)
        self.proj.is_output = True
        self.fused_qkv = cfg.fused_qkv
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), float(cfg.q_gain_init)))
        self.rotary = (
            Rotary(cfg.rope_dims, cfg.rope_base, cfg.train_seq_len) if cfg.rope_dims else None
        )
        self.use_xsa = layer >= cfg.num_layers - cfg.xsa_last_n
        # Sparse attention-output gate (PR #1787): heads x window weights, zero init (each
        # head starts at sigmoid(0) = 0.5). A plain parameter, not a CastedLinear, so QAT,
        # FP8 and the packer treat it as the small control tensor it is.
        self.gate_w = (
            nn.Parameter(torch.zeros(cfg.num_heads, cfg.attn_gate_window))
            if cfg.attn_out_gate
            else None
        )
        # Resolved now (an import probe, no CUDA work) so the traced forward only reads a
        # dict: torch.compile(fullgraph=True) cannot trace importlib.
        self.backend_name = cfg.attention_backend
        self.backends = {"cpu": resolve_backend(cfg.attention_backend, "cpu")}
        # An explicit fa3/fa2 request without the package fails only when run on CUDA.
        with contextlib.suppress(ValueError):
            self.backends["cuda"] = resolve_backend(cfg.attention_backend, "cuda")

    def forward(self, x: torch.Tensor, v_extra: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        if self.fused_qkv:
            # QAT grids are per row, so quantizing the parts equals quantizing their concat.
            q, k, v = project(x, (self.q, self.k, self.v)).split(
                (self.q.out_features, self.k.out_features, self.v.out_features), dim=-1
            )
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = q.view(b, t, self.num_heads, self.head_dim)
        k = k.view(b, t, self.num_kv_heads, self.head_dim)
        if v_extra is not None:
            v = v + v_extra
        v = v.view(b, t, self.num_kv_heads, self.head_dim)
        if self.cfg.qk_norm:
            q = F.rms_norm(q, (self.head_dim,))
            k = F.rms_norm(k, (self.head_dim,))
        if self.rotary is not None:
            cos, sin = self.rotary.tables(t, x.device)
            q = apply_rotary(q, cos, sin, self.cfg.rope_dims)
            k = apply_rotary(k, cos, sin, self.cfg.rope_dims)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        y = attend(q, k, v, self._backend(x.device.type))
        if self.use_xsa:
            y = exclusive_self_attention(y, v)
        if self.cfg.attn_out_gate:
            y = y * self.output_gate(x)[..., None]
        return self.proj(y.reshape(b, t, self.num_heads * self.head_dim))

    def output_gate(self, x: torch.Tensor) -> torch.Tensor:
        """[B,T,H] per-head gate from the first ``attn_gate_window`` dims of the block input."""
        logits = F.linear(x[..., : self.cfg.attn_gate_window], self.gate_w.to(x.dtype))
        return torch.sigmoid(self.cfg.attn_gate_scale * logits)

    def _backend(self, device_type: str) -> str:
        key = "cuda" if device_type == "cuda" else "cpu"
        if key not in self.backends:
            resolve_backend(self.backend_name, key)  # raises the explanatory error
        return self.backends[key]
