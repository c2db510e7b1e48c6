"""The FlashAttention-4 custom ops on CPU, with reference kernels plugged in.

flash-attn-4 runs only on Hopper+ GPUs (agreement with SDPA there is measured by
bench/train_speed.py and recorded in docs/BENCHMARKS.md). Here the same op registration, fake
(meta) shapes, autograd wiring and torch.compile behaviour are checked with exact kernels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.model import attention, fa4


def _expand(q, k, v):
    """[B,H,T,D] fp32 views with KV heads repeated for their query groups."""
    group = q.size(2) // k.size(2)
    qt = q.transpose(1, 2).float()
    kt = k.transpose(1, 2).repeat_interleave(group, 1).float()
    vt = v.transpose(1, 2).repeat_interleave(group, 1).float()
    return qt, kt, vt, group


def _probs(qt, kt):
    t, scale = qt.size(2), qt.size(-1) ** -0.5
    scores = (qt @ kt.transpose(-1, -2) * scale).masked_fill(
        torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")
    )
    lse = scores.logsumexp(-1)
    return (scores - lse[..., None]).exp(), lse, scale


def _reference_forward(q, k, v):
    qt, kt, vt, _ = _expand(q, k, v)
    p, lse, _ = _probs(qt, kt)
    return (p @ vt).transpose(1, 2).contiguous().to(q.dtype), lse


def _reference_backward(q, k, v, out, dout, lse):
    # Closed form (custom-op kernels run below autograd, so no autograd.grad here).
    qt, kt, vt, group = _expand(q, k, v)
    p, _, scale = _probs(qt, kt)
    do = dout.transpose(1, 2).float()
    dv = p.transpose(-1, -2) @ do
    dp = do @ vt.transpose(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    dq = ds @ kt * scale
    dk = ds.transpose(-1, -2) @ qt * scale

    def fold(x, like):  # sum the repeated KV heads back per group
        b, h, t, d = x.shape
        return x.view(b, h // group, group, t, d).sum(2).transpose(1, 2).contiguous().to(like.dtype)

    return dq.transpose(1, 2).contiguous().to(q.dtype), fold(dk, k), fold(dv, v)


@pytest.fixture
def reference_kernels(monkeypatch):
    calls = {"fwd": 0, "bwd": 0}

    def fwd(*a):
        calls["fwd"] += 1
        return _reference_forward(*a)

    def bwd(*a):
        calls["bwd"] += 1
        return _reference_backward(*a)

    monkeypatch.setitem(fa4.KERNELS, "fwd", fwd)
    monkeypatch.setitem(fa4.KERNELS, "bwd", bwd)
    return calls


def _qkv(b=2, t=16, h=4, hkv=2, d=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(b, t, n, d, generator=g, dtype=dtype).requires_grad_() for n in (h, hkv, hkv)
    ]


def _sdpa(q, k, v):
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
    )
    return y.transpose(1, 2)


def test_op_passes_torch_library_opcheck(reference_kernels):
    q, k, v = _qkv()
    torch.library.opcheck(torch.ops.pgolf.fa4_fwd.default, (q, k, v))


@pytest.mark.parametrize("compiled", [False, True])
def test_op_matches_sdpa_forward_and_backward(reference_kernels, compiled):
    def run(q, k, v):
        return torch.ops.pgolf.fa4_fwd(q, k, v)[0]

    fn = torch.compile(run, fullgraph=True, backend="aot_eager") if compiled else run
    q, k, v = _qkv()
    g = torch.randn_like(q)
    y = fn(q, k, v)
    y.backward(g)
    got = [y.detach()] + [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    ref = _sdpa(q, k, v)
    ref.backward(g)
    want = [ref.detach()] + [x.grad for x in (q, k, v)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # fullgraph=True would have raised on a graph break; the kernels really ran.
    assert reference_kernels == {"fwd": 1, "bwd": 1}


def test_attend_routes_half_inputs_to_the_op_and_fp32_to_sdpa(reference_kernels):
    q, k, v = _qkv(dtype=torch.bfloat16)
    y = attention.attend(q, k, v, "fa4")
    assert reference_kernels["fwd"] == 1
    torch.testing.assert_close(y.float(), _sdpa(q, k, v).float(), atol=2e-2, rtol=2e-2)
    attention.attend(*_qkv(), "fa4")  # fp32: FA4 has no fp32 kernel, SDPA answers
    assert reference_kernels["fwd"] == 1


def test_auto_prefers_fa4_when_available_and_registers_its_kernels(monkeypatch):
    monkeypatch.setattr(attention, "_fa4_available", lambda: True)
    registered = []
    monkeypatch.setattr(attention, "_register_fa4", lambda: registered.append(True))
    assert attention.available_backends("cuda")[0] == "fa4"
    assert attention.resolve_backend("auto", "cuda") == "fa4"
    assert registered == [True]
    assert attention.resolve_backend("auto", "cpu") == "sdpa"


def test_explicit_fa4_without_the_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(attention, "_fa4_available", lambda: False)
    with pytest.raises(ValueError, match="'fa4' is not importable"):
        attention.resolve_backend("fa4", "cuda")


def test_fa4_is_simply_unavailable_without_the_package():
    # find_spec("flash_attn.cute") raises when flash_attn itself is missing: that must read
    # as "not available", or building any model on a CUDA-less machine would fail.
    attention._flash_available.cache_clear()
    assert attention._flash_available("no_such_pkg_xyz.cute") is False


def test_mixed_dtypes_under_autocast_reach_the_kernel_in_autocast_dtype(reference_kernels):
    # In the model, under bf16 autocast, q/k leave rms_norm in fp32 and v can be fp32 after
    # the value-embedding add; the flash kernels take one half dtype only.
    seen = []
    inner = fa4.KERNELS["fwd"]

    def fwd(q, k, v):
        seen.append((q.dtype, k.dtype, v.dtype))
        return inner(q, k, v)

    fa4.KERNELS["fwd"] = fwd
    q, k, v = _qkv()
    compiled = torch.compile(attention.attend, fullgraph=True, backend="aot_eager")
    for fn in (attention.attend, compiled):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = fn(q, k.bfloat16(), v, "fa4")
        assert y.dtype == torch.bfloat16
    assert seen == [(torch.bfloat16,) * 3] * 2
    attention.attend(q, k, v, "fa4")  # fp32 without autocast: SDPA, not the kernel
    assert len(seen) == 2


def test_use_flash_attn_4_silences_only_the_aux_data_jit_warning(monkeypatch):
    import sys
    import types
    import warnings

    interface = types.SimpleNamespace(_flash_attn_fwd=None, _flash_attn_bwd=None)
    cute = types.ModuleType("flash_attn.cute")
    cute.interface = interface
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    monkeypatch.setattr(fa4, "KERNELS", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fa4.use_flash_attn_4()
        warnings.warn(
            "Argument aux_data (position 17) cannot be converted", UserWarning, stacklevel=1
        )
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another warning"]
    assert set(fa4.KERNELS) == {"fwd", "bwd"}
