"""The fused relu² MLP ops (``model.mlp_kernel="quack"``) on CPU, with reference kernels.

quack's GEMMs run only on Hopper GPUs (their agreement with the torch MLP there is measured by
bench/train_speed.py and recorded in docs/BENCHMARKS.md). Here the op registration, the fake
shapes, the autograd wiring, the MLP's routing (QAT, autocast dtype) and torch.compile are
checked against autograd through the plain MLP.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf.config import RunConfig
from pgolf.errors import ConfigError
from pgolf.model import quack_mlp
from pgolf.model.layers import MLP
from pgolf.train.fp8 import check_fp8_support


@pytest.fixture
def reference_kernels(monkeypatch):
    calls = {"fwd": 0, "bwd": 0}

    def counted(name, fn):
        def run(*args):
            calls[name] += 1
            return fn(*args)

        return run

    monkeypatch.setitem(quack_mlp.KERNELS, "fwd", counted("fwd", quack_mlp.reference_forward))
    monkeypatch.setitem(quack_mlp.KERNELS, "bwd", counted("bwd", quack_mlp.reference_backward))
    return calls


def _operands(m=24, k=16, h=40, d=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g, dtype=torch.float64)
    return [
        t.requires_grad_()
        for t in (
            x,
            torch.randn(h, k, generator=g, dtype=x.dtype),
            torch.randn(d, h, generator=g, dtype=x.dtype),
        )
    ]


def test_reference_backward_is_the_gradient_of_the_reference_forward():
    x, w1, w2 = _operands()
    out, preact = quack_mlp.reference_forward(x, w1, w2)
    dout = torch.randn_like(out)
    want = torch.autograd.grad(out, (x, w1, w2), dout)
    got = quack_mlp.reference_backward(x, w1, w2, preact.detach(), dout)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_op_passes_torch_library_opcheck(reference_kernels):
    torch.library.opcheck(torch.ops.pgolf.relu2_mlp_fwd.default, tuple(_operands()))


@pytest.mark.parametrize("compiled", [False, True])
def test_op_gradients_match_autograd_through_the_plain_mlp(reference_kernels, compiled):
    def run(x, w1, w2):
        return quack_mlp.fused_relu2_mlp(x, w1, w2)

    fn = torch.compile(run, fullgraph=True, backend="aot_eager") if compiled else run
    x, w1, w2 = _operands()
    x3 = x.detach().view(2, 12, -1).requires_grad_()
    y = fn(x3, w1, w2)
    assert y.shape == (2, 12, w2.size(0))
    g = torch.randn_like(y)
    y.backward(g)
    got = [y.detach(), x3.grad.clone(), w1.grad.clone(), w2.grad.clone()]
    w1.grad = w2.grad = None
    x3.grad = None
    ref = torch.relu(x3 @ w1.T).square() @ w2.T
    ref.backward(g)
    want = [ref.detach(), x3.grad, w1.grad, w2.grad]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # fullgraph=True would have raised on a graph break; the kernels really ran, once each.
    assert reference_kernels == {"fwd": 1, "bwd": 1}


def _twin_mlps(qat_bits=0):
    torch.manual_seed(0)
    plain, fused = MLP(16, 48), MLP(16, 48, kernel="quack")
    fused.load_state_dict(plain.state_dict())
    for m in (plain, fused):
        m.fc.qat_bits = m.proj.qat_bits = qat_bits
    return plain, fused


@pytest.mark.parametrize("qat_bits", [0, 6])
def test_mlp_routes_through_the_op_with_the_fake_quantized_weights(
    reference_kernels, monkeypatch, qat_bits
):
    plain, fused = _twin_mlps(qat_bits)
    plain.double(), fused.double()
    # The op serves CUDA tensors in 16-bit dtypes only; let it take this CPU float64 input.
    monkeypatch.setattr(fused, "fused_dtype", lambda x: torch.float64)
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    want = plain(x)
    want.sum().backward()
    got = fused(x)
    got.sum().backward()
    assert reference_kernels == {"fwd": 1, "bwd": 1}
    torch.testing.assert_close(got, want)
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)


def test_on_cpu_and_in_fp32_the_mlp_runs_plain_torch(reference_kernels):
    plain, fused = _twin_mlps()
    x = torch.randn(2, 7, 16)
    assert fused.fused_dtype(x) is None and plain.fused_dtype(x) is None
    torch.testing.assert_close(fused(x), plain(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(fused(x), plain(x))
    assert reference_kernels == {"fwd": 0, "bwd": 0}


def test_without_quack_the_first_call_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(quack_mlp, "KERNELS", {})
    monkeypatch.setitem(__import__("sys").modules, "quack", None)  # import quack fails
    x, w1, w2 = (t.detach() for t in _operands())
    with pytest.raises(RuntimeError, match=r"quack-kernels.*mlp_kernel=torch"):
        quack_mlp.relu2_mlp_fwd(x, w1, w2)


def test_config_rejects_what_the_fused_kernel_cannot_run():
    with pytest.raises(ConfigError, match="relu² only"):
        RunConfig().with_overrides(["model.mlp_kernel=quack", "model.mlp_activation=leaky_relu2"])
    with pytest.raises(ConfigError, match="multiples of 8"):
        RunConfig().with_overrides(["model.mlp_kernel=quack", "model.mlp_mult=3.01"])
    assert RunConfig().with_overrides(["model.mlp_kernel=quack"]).model.mlp_kernel == "quack"


def test_fp8_matmuls_and_the_fused_mlp_are_exclusive():
    with pytest.raises(ConfigError, match="choose one"):
        check_fp8_support(torch.device("cpu"), autocast_bf16=True, mlp_kernel="quack")


def test_the_mlp_parameters_are_the_same_with_either_kernel():
    # Checkpoints and the packer see no difference between the kernels.
    plain, fused = _twin_mlps()
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in fused.named_parameters()]
    assert isinstance(fused.fc, nn.Linear)


def test_auto_picks_quack_only_where_its_fused_relu2_applies(monkeypatch):
    monkeypatch.setattr(quack_mlp, "available", lambda: True)
    assert MLP(16, 48, kernel="auto").kernel == "quack"
    assert MLP(16, 48, leaky_slope=0.5, kernel="auto").kernel == "torch"  # no leaky epilogue
    assert MLP(16, 44, kernel="auto").kernel == "torch"  # unaligned width
    assert MLP(16, 48, kernel="torch").kernel == "torch"
    monkeypatch.setattr(quack_mlp, "available", lambda: False)
    assert MLP(16, 48, kernel="auto").kernel == "torch"


def test_quack_is_not_available_on_a_machine_without_cuda():
    # This CPU machine: auto must resolve to torch without importing anything that fails.
    assert not torch.cuda.is_available()
    assert quack_mlp.available() is False


@pytest.mark.parametrize(
    ("overrides", "carried"),
    [
        ([], True),  # default: auto, relu²
        (["model.mlp_kernel=torch"], False),
        (["model.mlp_kernel=auto", "model.mlp_activation=leaky_relu2"], False),
    ],
)
def test_the_exported_script_carries_the_fused_mlp_only_where_it_can_run(overrides, carried):
    from pgolf.export import bundle

    run = RunConfig().with_overrides(overrides)
    assert ("pgolf.model.quack_mlp" in bundle.run_modules(run)) is carried
