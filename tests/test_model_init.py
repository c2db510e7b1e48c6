"""Models whose weights are loaded next skip the random init (seconds of CPU at record size)."""

from __future__ import annotations

import torch
from eval_helpers import noisy_tiny_model, tokenizer_fixture, write_fp32_artifact  # noqa: F401

from pgolf.config import resolve
from pgolf.eval.load import build_model, expected_shapes, load_artifact
from pgolf.model import GPT
from pgolf.pack import gptq


def test_loaders_build_the_model_without_its_random_init(tmp_path, tokenizer, monkeypatch):
    model = noisy_tiny_model()
    path = write_fp32_artifact(tmp_path / "a.pgolf", model, tokenizer)

    def refuse(self) -> None:
        raise AssertionError("random init of a model whose weights are loaded next")

    monkeypatch.setattr(GPT, "_init_weights", refuse)
    loaded = build_model(load_artifact(path))
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b.float())
    assert expected_shapes(model.cfg)["tok_emb.weight"] == tuple(model.tok_emb.weight.shape)
    tensors = {k: v.detach() for k, v in model.state_dict().items()}
    calib = gptq.calibration_model(tensors, model.cfg)
    assert torch.equal(calib.tok_emb.weight.cpu(), model.tok_emb.weight.float())


def test_a_new_model_still_gets_its_init() -> None:
    cfg = resolve("tiny").model
    torch.manual_seed(0)
    plain = GPT(cfg, init_weights=False)
    torch.manual_seed(0)
    inited = GPT(cfg)
    # zero_init_proj zeroes the output projections only under the model's own init.
    proj = "blocks.0.mlp.proj.weight"
    assert not torch.equal(plain.state_dict()[proj], inited.state_dict()[proj])
    assert torch.count_nonzero(inited.state_dict()[proj]) == 0
