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
