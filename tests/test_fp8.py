"""FP8 training matmuls: row-wise quantization, the linear's forward/backward, the switches.

torch._scaled_mm runs on the CPU too, so the same code the GPU runs is checked here on
small shapes; the speed and the training effect are measured on the H100 (BENCHMARKS.md).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_helpers import TINY, noisy_model
from train_helpers import build_dataset

from pgolf.config import resolve
from pgolf.errors import ConfigError
from pgolf.train.fp8 import E4M3_MAX, check_fp8_support, e4m3_rows, fp8_linear, plain_matmuls
from pgolf.train.loop import train


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_e4m3_rows_maps_each_row_amax_to_448_and_keeps_zero_rows_zero():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 64, generator=g) * torch.tensor([1e-3, 1, 30, 1e4, 1, 1])[:, None]
    t[4] = 0.0
    q, scale = e4m3_rows(t)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (6, 1)
    back = q.float() * scale
    nonzero = [0, 1, 2, 3, 5]
    assert torch.allclose(q.float()[nonzero].abs().amax(-1), torch.full((5,), E4M3_MAX))
    # e4m3 keeps 3 mantissa bits: relative rounding error <= 2^-4 per element, whatever
    # the row's magnitude (the point of per-row scales).
    err = (back - t).abs() / t.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    assert err[nonzero].max() <= 2**-4 * 1.0001
    assert torch.equal(back[4], torch.zeros(64))


def test_fp8_linear_matches_bf16_linear_and_its_weight_grad_is_the_bf16_one():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 32, 64, generator=g).bfloat16().requires_grad_(True)
    w = (torch.randn(48, 64, generator=g) / 8).bfloat16().requires_grad_(True)
    dy = torch.randn(4, 32, 48, generator=g).bfloat16()
    y = fp8_linear(x, w)
    y.backward(dy)
    x_ref, w_ref = x.detach().float().requires_grad_(True), w.detach().float().requires_grad_(True)
    y_ref = F.linear(x_ref, w_ref)
    y_ref.backward(dy.float())
    assert y.dtype == torch.bfloat16 and y.shape == (4, 32, 48)
    assert 1e-3 < rel(y, y_ref) < 0.05  # really rounded to FP8, but close
    assert 1e-3 < rel(x.grad, x_ref.grad) < 0.05
    assert rel(w.grad, w_ref.grad) < 0.01  # the weight gradient stays a bf16 GEMM
    assert x.grad.dtype == w.grad.dtype == torch.bfloat16


def test_fp8_linear_rejects_fp32_and_misaligned_shapes_with_the_fix():
    with pytest.raises(ValueError, match="autocast_bf16"):
        fp8_linear(torch.randn(2, 32), torch.randn(16, 32))
    with pytest.raises(ValueError, match="divisible by 16"):
        fp8_linear(torch.randn(2, 24).bfloat16(), torch.randn(16, 24).bfloat16())


def test_gpt_fp8_matmul_touches_block_matrices_only_and_stays_close_under_autocast():
    model = noisy_model(TINY)
    ids = torch.randint(0, TINY.vocab_size, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(ids, ids)
        model.set_block_matmul(fp8_linear)
        got = model(ids, ids)
    assert model.block_matmul is fp8_linear and model.bigram.proj.matmul is None
    assert got.item() != ref.item() and abs(got.item() - ref.item()) < 0.02 * ref.item()
    got.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with plain_matmuls(model):
        assert model.block_matmul is None
    assert model.block_matmul is fp8_linear


def test_fp8_needs_a_cuda_fp8_gpu_and_the_trainer_says_so(tmp_path):
    with pytest.raises(ConfigError, match="train.fp8_matmuls=false"):
        check_fp8_support(torch.device("cpu"), autocast_bf16=True)
    data, tok = build_dataset(tmp_path / "data", n_train_docs=200, n_val_docs=20)
    cfg = resolve("tiny", ["train.fp8_matmuls=true", "train.max_steps=1"])
    with pytest.raises(ConfigError, match="CUDA GPU"):
        train(cfg, data, tok, tmp_path / "run")
