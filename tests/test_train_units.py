"""Trainer pieces in isolation: Muon, schedule, EMA/SWA, batch plan, resume-state files."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from pgolf.config import resolve
from pgolf.config.train import TrainConfig
from pgolf.errors import ConfigError
from pgolf.train.averaging import EMA, SWA, averaged_weights
from pgolf.train.loader import BatchPlan, TokenStream
from pgolf.train.muon import Muon, momentum_at, newton_schulz
from pgolf.train.schedule import Schedule


def test_newton_schulz_output_is_orthogonal_within_the_quintic_band():
    g = torch.Generator().manual_seed(0)
    for shape in ((4, 32, 96), (3, 96, 32), (2, 64, 64)):
        stack = torch.randn(*shape, generator=g)
        out = newton_schulz(stack, 5).float()
        assert out.shape == stack.shape
        sv = torch.linalg.svdvals(out)
        # The quintic maps singular values into ~[0.7, 1.2], not exactly 1 (by design).
        assert sv.min() > 0.6 and sv.max() < 1.25, (sv.min(), sv.max())
        u, _, vh = torch.linalg.svd(stack, full_matrices=False)
        polar = u @ vh
        rel = (out - polar).norm() / polar.norm()
        assert rel < 0.3


def test_muon_step_applies_orthogonal_update_with_decay_and_shape_scale():
    torch.manual_seed(0)
    lin = nn.Linear(16, 48, bias=False)  # tall: 48 x 16
    w0 = lin.weight.detach().clone()
    lin.weight.grad = torch.randn_like(lin.weight)
    opt = Muon([("w", lin.weight)], lr=0.1, weight_decay=0.5, nesterov=False, ns_steps=5)
    opt.step(lr_scale=1.0, momentum=0.9)
    expected = (
        w0 * (1 - 0.1 * 0.5)
        - 0.1 * math.sqrt(48 / 16) * newton_schulz(lin.weight.grad[None], 5)[0].float()
    )
    torch.testing.assert_close(lin.weight.detach(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(opt.momentum["w"], lin.weight.grad)


def test_muon_nesterov_uses_lookahead_and_momentum_ramp():
    p = nn.Parameter(torch.zeros(8, 8))
    opt = Muon([("p", p)], lr=1.0, weight_decay=0.0, nesterov=True, ns_steps=5)
    p.grad = torch.eye(8)
    opt.step(1.0, 0.5)
    torch.testing.assert_close(opt.momentum["p"], torch.eye(8))
    assert momentum_at(0, 0.92, 0.99, 1500) == pytest.approx(0.92)
    assert momentum_at(750, 0.92, 0.99, 1500) == pytest.approx(0.955)
    assert momentum_at(5000, 0.92, 0.99, 1500) == pytest.approx(0.99)


def test_schedule_is_flat_then_linear_to_zero_at_the_cap():
    s = Schedule(train_seconds=100.0, warmdown_frac=0.4)
    assert s.lr_scale(0, 0.0) == 1.0 and s.lr_scale(10, 60.0) == pytest.approx(1.0)
    assert s.lr_scale(10, 80.0) == pytest.approx(0.5)
    assert s.lr_scale(10, 100.0) == 0.0 and s.done(10, 100.0) and not s.done(10, 99.9)
    # Simulated run with a fixed step time: it stops at the first step at/after the cap and
    # the last step trains with an lr no larger than one step's share of the warmdown.
    elapsed, step, scales = 0.0, 0, []
    while not s.done(step, elapsed):
        scales.append(s.lr_scale(step, elapsed))
        elapsed += 0.7
        step += 1
    assert 100.0 <= elapsed < 100.7 and step == math.ceil(100 / 0.7)
    assert 0 < scales[-1] <= 0.7 / 40 + 1e-9
    steps = Schedule(train_seconds=1e9, max_steps=10, warmdown_frac=0.5, lr_warmup_steps=2)
    assert [round(steps.lr_scale(i, 0.0), 3) for i in range(10)] == [
        0.5,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        0.8,
        0.6,
        0.4,
        0.2,
    ]
    assert steps.done(10, 0.0)


def test_ema_matches_closed_form_and_swa_averages_the_right_snapshots():
    model = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    swa = SWA(model, every=2, threshold=0.5)
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    scales = [1.0, 0.8, 0.4, 0.3, 0.2, 0.1]
    taken = []
    for step, (v, sc) in enumerate(zip(values, scales, strict=True), start=1):
        with torch.no_grad():
            model.weight.fill_(v)
        ema.update(model, step)
        if swa.maybe_update(model, step, sc):
            taken.append(v)
    # Warmup decays (1+t)/(10+t) = 2/11, 3/12, ... stay below 0.9 for these six steps.
    expected = 0.0
    for t, v in enumerate(values, start=1):
        d = (1 + t) / (10 + t)
        expected = d * expected + (1 - d) * v
    assert ema.decay_at(0) == 0.1 and ema.decay_at(10_000) == 0.9
    torch.testing.assert_close(ema.average()["weight"], torch.full((2, 3), expected))
    assert taken == [4.0, 6.0]  # even steps with lr scale < 0.5
    torch.testing.assert_close(swa.average()["weight"], torch.full((2, 3), 5.0))
    weights, kind = averaged_weights(model, None, swa)
    assert kind == "swa(2)" and weights["weight"][0, 0] == 5.0
    assert averaged_weights(model, None, None)[1] == "none"


def _stream(tmp_path, n=1000):
    import numpy as np

    from pgolf.data.shards import write_shard

    write_shard(tmp_path / "x_train_000000.bin", np.arange(0, 600) % 500)
    write_shard(tmp_path / "x_train_000001.bin", np.arange(600, n) % 500)
    return TokenStream(sorted(tmp_path.glob("*_train_*.bin")), vocab_size=500)


def test_batch_plan_ranks_read_disjoint_slices_and_match_accumulation(tmp_path):
    stream = _stream(tmp_path)
    kw = dict(global_tokens=64, micro_seqs=2, seq_len=8)
    single = BatchPlan(stream, rank=0, world=1, accum=4, **kw)
    ranks = [BatchPlan(stream, rank=r, world=2, accum=2, **kw) for r in range(2)]
    for step in (0, 3, 20):  # step 20 wraps around the 1000-token stream
        one = single.micro_batches(step)
        two = ranks[0].micro_batches(step) + ranks[1].micro_batches(step)
        for (x1, y1), (x2, y2) in zip(one, two, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
        xs = torch.cat([x.flatten() for x, _ in one])
        assert torch.equal(xs, torch.tensor(stream.read(step * 64, 64)))
        assert torch.equal(one[0][1].flatten()[:-1], one[0][0].flatten()[1:])


def test_accumulation_validation_message():
    tc = TrainConfig(global_batch_tokens=786_432, seq_len=2048, micro_batch_seqs=24)
    assert tc.accumulation(1) == 16 and tc.accumulation(8) == 2
    with pytest.raises(ValueError, match="micro_batch_seqs"):
        tc.accumulation(5)
    with pytest.raises(ConfigError, match="warmdown_frac"):
        resolve("tiny", ["train.warmdown_frac=2"])
    assert resolve("tiny").train.ema_decay == 0.9
    assert dataclasses.asdict(resolve("default").train)["matrix_lr"] == 0.025


def test_mix_order_reduction_switch_sets_inductor_and_is_off_by_default():
    import torch._inductor.config as inductor_config

    from pgolf.runtime import set_mix_order_reduction

    assert TrainConfig().inductor_mix_order_reduction is False
    before = inductor_config.triton.mix_order_reduction
    try:
        set_mix_order_reduction(False)
        assert inductor_config.triton.mix_order_reduction is False
        set_mix_order_reduction(True)
        assert inductor_config.triton.mix_order_reduction is True
    finally:
        inductor_config.triton.mix_order_reduction = before
