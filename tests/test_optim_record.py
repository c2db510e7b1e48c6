"""The record recipe's optimizer switches: Polar-Express NS, MuonEq-R, the LR floor, presets."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pgolf.config import resolve
from pgolf.errors import ConfigError
from pgolf.train.muon import NS_COEFFS, Muon, equalize_rows, newton_schulz, ns_coefficients
from pgolf.train.schedule import Schedule


def _svd_stats(g: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """(max |sigma - 1| of ``out``, its relative distance to the exact polar factor of g)."""
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    sv = torch.linalg.svdvals(out)
    return float((sv - 1).abs().max()), float((out - polar).norm() / polar.norm())


@pytest.mark.parametrize("shape", [(3, 32, 96), (3, 128, 48)])
def test_polar_express_orthogonalizes_better_than_quintic_in_the_same_steps(shape) -> None:
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    quintic = _svd_stats(g, newton_schulz(g, 5, "quintic"))
    polar = _svd_stats(g, newton_schulz(g, 5, "polar_express"))
    assert polar[0] < 0.15 and polar[0] <= quintic[0]  # singular values near 1
    assert polar[1] < 0.6 * quintic[1]  # and closer to U V^T


def test_ns_coefficient_schedules() -> None:
    assert ns_coefficients("quintic", 3) == (NS_COEFFS,) * 3
    pe = ns_coefficients("polar_express", 7)
    assert len(set(pe[:5])) == 5 and pe[5] == pe[6] == pe[4]  # the converged tuple repeats
    g = torch.randn(2, 24, 72, generator=torch.Generator().manual_seed(1))
    assert _svd_stats(g, newton_schulz(g, 8, "polar_express"))[0] < 0.1


def test_row_equalization_gives_unit_rows_and_feeds_newton_schulz() -> None:
    g = torch.randn(2, 16, 40) * torch.logspace(-3, 2, 16).view(1, 16, 1)
    eq = equalize_rows(g)
    torch.testing.assert_close(eq.norm(dim=-1), torch.ones(2, 16))
    assert torch.equal(equalize_rows(torch.zeros(1, 3, 4)), torch.zeros(1, 3, 4))
    p = nn.Parameter(torch.zeros(16, 40))
    p.grad = g[0].clone()
    Muon([("p", p)], lr=1.0, weight_decay=0.0, nesterov=False, ns_steps=5, row_eq=True).step(
        1.0, 0.0
    )
    torch.testing.assert_close(p.detach(), -newton_schulz(eq[:1], 5)[0])


def _reference_step(w, grad, buf, lr, wd, momentum):
    """Muon's step before the record switches: fixed quintic, no row scaling, same op order."""
    a, b, c = NS_COEFFS
    buf = buf.mul(momentum).add(grad)
    x = grad.add(buf, alpha=momentum)[None]
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(5):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return w.mul(1.0 - lr * wd).add(x[0], alpha=-lr), buf


def test_default_muon_step_is_bit_identical_to_the_previous_algorithm() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(48, 32, bias=False)  # wide: no transpose, scale 1
    w, buf = lin.weight.detach().clone(), torch.zeros(32, 48)
    tc = resolve("default").train
    opt = Muon(
        [("w", lin.weight)],
        lr=0.05,
        weight_decay=0.1,
        nesterov=True,
        ns_steps=tc.muon_ns_steps,
        ns_coeffs=tc.muon_ns_coeffs,
        row_eq=tc.muon_row_eq,
    )
    for _ in range(3):
        grad = torch.randn(32, 48)
        lin.weight.grad = grad.clone()
        opt.step(1.0, 0.9)
        w, buf = _reference_step(w, grad, buf, 0.05, 0.1, 0.9)
        assert torch.equal(lin.weight.detach(), w) and torch.equal(opt.momentum["w"], buf)


def test_record_switches_change_the_step() -> None:
    torch.manual_seed(0)
    a = nn.Linear(48, 32, bias=False)
    b = copy.deepcopy(a)
    a.weight.grad = b.weight.grad = torch.randn(32, 48) * torch.rand(32, 1)
    kw = dict(lr=0.05, weight_decay=0.0, nesterov=True, ns_steps=5)
    Muon([("w", a.weight)], **kw).step(1.0, 0.9)
    Muon([("w", b.weight)], ns_coeffs="polar_express", row_eq=True, **kw).step(1.0, 0.9)
    assert not torch.allclose(a.weight, b.weight)


def test_lr_floor_holds_through_the_warmdown() -> None:
    plain = Schedule(train_seconds=100.0, warmdown_frac=0.5)
    floor = Schedule(train_seconds=100.0, warmdown_frac=0.5, min_lr_frac=0.1)
    assert floor.lr_scale(0, 40.0) == plain.lr_scale(0, 40.0) == 1.0
    assert floor.lr_scale(0, 75.0) == pytest.approx(0.5) == plain.lr_scale(0, 75.0)
    assert plain.lr_scale(0, 99.0) == pytest.approx(0.02)
    scales = [floor.lr_scale(0, t / 10) for t in range(500, 1000)]
    assert min(scales) == pytest.approx(0.1) and floor.lr_scale(0, 99.0) == pytest.approx(0.1)
    assert floor.done(0, 100.0) and not floor.done(0, 99.9)


def test_config_defaults_presets_and_validation() -> None:
    d = resolve("default").train
    assert (d.muon_ns_coeffs, d.muon_row_eq, d.min_lr_frac) == ("quintic", False, 0.0)
    r = resolve("record").train
    assert (r.muon_ns_coeffs, r.muon_row_eq, r.min_lr_frac) == ("polar_express", True, 0.1)
    assert (r.ema_decay, r.muon_momentum_start, r.muon_momentum) == (0.9965, 0.92, 0.97)
    assert 0.085 <= r.adam_weight_decay <= r.muon_weight_decay <= 0.095
    t, rt = resolve("tiny").train, resolve("record-tiny").train
    assert (rt.seq_len, rt.ema_decay, rt.muon_ns_coeffs) == (
        t.seq_len,
        t.ema_decay,
        "polar_express",
    )
    with pytest.raises(ConfigError, match="muon_ns_coeffs"):
        resolve("tiny", ["train.muon_ns_coeffs=cubic"])
    with pytest.raises(ConfigError, match="min_lr_frac"):
        resolve("tiny", ["train.min_lr_frac=1"])
    with pytest.raises(ConfigError, match="qat_lr_threshold"):  # the floor would block QAT
        resolve("tiny", ["train.min_lr_frac=0.2", "train.qat_lr_threshold=0.1"])
