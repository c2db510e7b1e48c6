"""GPTQ: the Hessian math on a plain linear layer, and model-generated calibration."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.config import resolve
from pgolf.format import grid, load_artifact
from pgolf.pack import gptq
from pgolf.pack import quantize as Q
from pgolf.pack.packer import pack_state
from pgolf.pack.synthetic import random_state


def _correlated_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / d**0.5 + torch.eye(d)
    scale = torch.logspace(0, -1.5, d)  # anisotropic, like real activations
    return (torch.randn(n, d, generator=g) * scale) @ mix


@pytest.mark.parametrize("bits,group", [(4, 0), (5, 0), (6, 16)])
def test_gptq_beats_rounding_on_layer_outputs(bits, group) -> None:
    x = _correlated_inputs(4096, 64, seed=bits)
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(1)) * 0.02
    h = x.double().T @ x.double()
    ratios = Q.clip_ratios(dataclasses.replace(resolve("default").pack))
    rtn = Q.quantize(w, bits, group, ratios)
    gq = gptq.gptq_quantize(w, h, bits, group, ratios, block=16)
    out = lambda qt: float((x @ (qt.dequantize() - w).T).square().sum())  # noqa: E731
    assert out(gq) < 0.8 * out(rtn)
    # Same grid: same scales, levels in range, and q * scale is what the container decodes.
    assert torch.equal(gq.scales, rtn.scales) and int(gq.q.abs().max()) <= grid.qmax(bits)


def test_gptq_keeps_pruned_zeros() -> None:
    x = _correlated_inputs(1024, 32, seed=0)
    w = torch.randn(16, 32) * 0.02
    w[w.abs() < 0.01] = 0
    gq = gptq.gptq_quantize(w, x.double().T @ x.double(), 4)
    assert torch.all(gq.dequantize()[w == 0] == 0)


def test_calibration_is_generated_by_the_model() -> None:
    from pgolf.model import GPT

    run = resolve("tiny")
    torch.manual_seed(3)
    state = GPT(run.model).state_dict()  # the model's own names, whatever they are today
    cfg = dataclasses.replace(run.pack, gptq="on", gptq_samples=2, gptq_seq_len=16)
    hessians = gptq.calibrate(state, run.model, cfg)
    h = hessians["blocks.0.mlp.proj.weight"]
    assert h.shape == (run.model.mlp_hidden, run.model.mlp_hidden)
    assert set(hessians) >= {n for n in state if ".attn.q." in n or ".mlp.fc." in n}
    res = pack_state(
        state,
        model={},
        tokenizer={"vocab_size": 512, "sha256": None},
        cfg=dataclasses.replace(cfg, search=False),
        quantizer=gptq.make_quantizer(hessians, cfg),
    )
    art = load_artifact(res.data)
    assert set(art.state) == set(state)


def test_pack_runs_gptq_when_on_and_auto_leaves_it_to_the_gpu(tmp_path, monkeypatch) -> None:
    from pgolf.checkpoint import save_checkpoint
    from pgolf.pack.api import pack_checkpoint, use_gptq

    run = resolve("tiny")
    save_checkpoint(tmp_path / "ck", random_state(run.model, seed=2), run)
    cfg = dataclasses.replace(run.pack, search=False, gptq_samples=2, gptq_seq_len=16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not use_gptq(cfg) and use_gptq(dataclasses.replace(cfg, gptq="on"))
    off = pack_checkpoint(tmp_path / "ck", tmp_path / "a.pgolf", cfg, progress=False)
    on = pack_checkpoint(
        tmp_path / "ck", tmp_path / "b.pgolf", dataclasses.replace(cfg, gptq="on"), progress=False
    )
    assert (off["gptq"], off["calibration_s"]) == (False, 0.0)
    assert on["gptq"] and on["calibration_s"] > 0
    assert (tmp_path / "a.pgolf").read_bytes() != (tmp_path / "b.pgolf").read_bytes()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert use_gptq(cfg)


def test_configs_from_before_auto_gptq_still_load() -> None:
    from pgolf.config import from_json
    from pgolf.errors import ConfigError

    for old, new in ((False, "off"), (True, "on")):
        assert from_json({"pack": {"gptq": old}}).pack.gptq == new
    with pytest.raises(ConfigError, match="not one of"):
        from_json({"pack": {"gptq": "sometimes"}})


def _reference_gptq(w, hessian, bits, group_size, ratios, clip=None, damp=0.01, block=128):
    """The one-matrix column loop GPTQ had before the batched sweep, kept as the oracle."""
    w = w.float()
    rows, cols = w.shape
    g = group_size or cols
    rtn = Q.quantize(w, bits, group_size, ratios, clip=clip)
    scale = rtn.scales.float().reshape(rows, cols // g)
    pruned = w == 0
    hinv = gptq._inverse_cholesky(hessian.double(), damp).float()
    m = grid.qmax(bits)
    work = w.clone()
    q = torch.zeros(rows, cols, dtype=torch.int8)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = work[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            s = scale[:, col // g]
            qc = torch.clamp(torch.round(w1[:, i] / s), -m, m).masked_fill(pruned[:, col], 0.0)
            q[:, col] = qc.to(torch.int8)
            e = (w1[:, i] - qc * s) / h1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            err1[:, i] = e
        work[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q


@pytest.mark.parametrize("group", [0, 16])
def test_batched_sweep_equals_one_matrix_at_a_time(group) -> None:
    """Matrices of one shape are swept as a batch (mixed bits, pruning, a fixed clip): the
    levels are exactly the one-matrix loop's."""
    ratios = Q.clip_ratios(resolve("default").pack)
    g = torch.Generator().manual_seed(5)
    jobs, hessians = [], {}
    for i, (rows, cols, bits) in enumerate(
        [(48, 64, 6), (48, 64, 5.5), (32, 64, 4), (48, 64, 5), (40, 96, 5), (40, 96, 8)]
    ):
        w = torch.randn(rows, cols, generator=g) * 0.02
        w[w.abs() < 0.004] = 0
        x = _correlated_inputs(512, cols, seed=i)
        hessians[f"m{i}"] = x.double().T @ x.double()
        clip = Q.sd_clip(w, group, 3.0) if i == 3 else None
        jobs.append((f"m{i}", w, bits, clip))
    cfg = dataclasses.replace(resolve("default").pack, gptq_block=24)
    got = gptq.make_quantizer(hessians, cfg).many(jobs, group, ratios)
    for name, w, bits, clip in jobs:
        want = _reference_gptq(w, hessians[name], bits, group, ratios, clip, block=24)
        assert torch.equal(got[name].q, want), name
        assert torch.equal(got[name].scales, Q.quantize(w, bits, group, ratios, clip=clip).scales)


def test_quantizer_reuses_hessian_work_across_packs_with_identical_output() -> None:
    """A budget search packs several settings with one quantizer: each Hessian is factored
    once, unchanged tensors are not swept again, and every pack is byte-identical to one
    made by a fresh quantizer (everything recomputed)."""
    run = resolve("tiny")
    state = random_state(run.model, seed=4)  # no zero-initialized matrices: pruning hits all
    cfg = dataclasses.replace(run.pack, gptq="on", gptq_samples=2, gptq_seq_len=16)
    hessians = gptq.calibrate(state, run.model, cfg)
    shared = gptq.make_quantizer(hessians, cfg)
    cache: dict = {}
    tok = {"vocab_size": 512, "sha256": None}
    for setting, prune in [((8, 6, 5), 0.0), ((8, 5, 5), 0.0), ((8, 6, 5), 0.1)]:
        kw = dict(model={}, tokenizer=tok, cfg=cfg, setting=setting, prune_fraction=prune)
        a = pack_state(state, quantizer=shared, cache=cache, **kw)
        b = pack_state(state, quantizer=gptq.make_quantizer(hessians, cfg), **kw)
        assert a.data == b.data
    covered = sum(1 for n in hessians if n in state)
    assert shared.stats["factors"] == covered  # one factor per Hessian, whatever the packs
    # 8/5/5 sweeps only the attention matrices again; 10% pruning changes every matrix.
    attn = sum(1 for n in hessians if n in state and ".attn." in n)
    assert shared.stats["reused"] == covered - attn
    assert shared.stats["swept"] == 2 * covered + attn


def test_estimate_overlapped_with_calibration_packs_the_same(tmp_path, monkeypatch) -> None:
    """On a GPU the search's estimates run on a CPU thread during calibration; forced here on
    the CPU, the artifact is the one the sequential order writes."""
    from pgolf.checkpoint import save_checkpoint
    from pgolf.pack import api

    run = resolve("tiny")
    save_checkpoint(tmp_path / "ck", random_state(run.model, seed=3), run)
    cfg = dataclasses.replace(run.pack, gptq="on", gptq_samples=2, gptq_seq_len=16, code_bytes=0)
    plain = api.pack_checkpoint(tmp_path / "ck", tmp_path / "a.pgolf", cfg, progress=False)
    monkeypatch.setattr(api, "overlap", lambda c: c.search and api.use_gptq(c))
    both = api.pack_checkpoint(tmp_path / "ck", tmp_path / "b.pgolf", cfg, progress=False)
    assert both["bits_e_a_m"] == plain["bits_e_a_m"]
    assert set(both["phases_s"]) == set(plain["phases_s"]) >= {"estimate", "calibrate_generate"}
    a, b = load_artifact(tmp_path / "a.pgolf"), load_artifact(tmp_path / "b.pgolf")
    assert all(torch.equal(a.state[n], b.state[n]) for n in a.state)
