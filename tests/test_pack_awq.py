"""AWQ-lite: activation-aware one-bit promotion of the most salient matrices."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from pgolf.config import resolve
from pgolf.format import load_artifact
from pgolf.pack import awq
from pgolf.pack import budget as B
from pgolf.pack.packer import pack_state, promotion
from pgolf.pack.synthetic import random_state

TOK = {"vocab_size": 512, "sha256": None}


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state(resolve("tiny").model, seed=1)


def _cfg(**kw):
    return dataclasses.replace(resolve("tiny").pack, **kw)


def test_promote_takes_the_densest_within_the_fraction() -> None:
    numel = {"a": 100, "b": 100, "c": 50, "d": 750}
    sal = {"a": 1.0, "b": 3.0, "c": 2.0, "d": 0.5}
    bits = {"a": 5.0, "b": 5.5, "c": 6.0, "d": 5.0}
    assert awq.promote(numel, sal, bits, 0.2) == {"b": 6.5, "c": 7.0}
    # A matrix that would overshoot is skipped, smaller ones are still taken.
    assert awq.promote(numel, sal, bits, 0.12) == {"b": 6.5}
    assert awq.promote(numel, sal, bits, 0.0) == {}
    # 8-bit matrices cannot be promoted; ties break by name.
    assert awq.promote(numel, {"a": 1.0, "b": 1.0}, {"a": 5.0, "b": 8.0}, 0.5) == {"a": 6.0}
    assert awq.promote(numel, {"b": 1.0, "a": 1.0}, {"a": 5.0, "b": 5.0}, 0.1) == {"a": 6.0}


def test_salience_follows_the_activations(tiny_state) -> None:
    """Equal weights: the matrix whose inputs carry more energy is the more salient one."""
    cfg = _cfg()
    w = tiny_state["blocks.0.mlp.fc.weight"]
    cols = w.shape[1]
    quiet, loud = torch.ones(cols), torch.ones(cols)
    loud[: cols // 4] = 100.0
    s_quiet = awq.salience(w, 5, "mlp", cfg, quiet)
    s_loud = awq.salience(w, 5, "mlp", cfg, loud)
    assert s_loud > 10 * s_quiet
    assert awq.salience(w, 6, "mlp", cfg, quiet) < s_quiet  # one more bit, less error


def test_promotion_uses_gptq_statistics_and_is_deterministic(tiny_state) -> None:
    cfg = _cfg()
    mats = {n: w for n, w in tiny_state.items() if w.dim() == 2 and w.numel() >= 256}
    classes = {n: ("mlp" if ".mlp." in n else "attn" if ".attn." in n else "other") for n in mats}
    bits = {n: 5.0 for n in mats}
    target = "blocks.2.attn.v.weight"
    hessians = {n: torch.eye(w.shape[1]) for n, w in mats.items()}
    hessians[target] = 1000 * torch.eye(mats[target].shape[1])
    q = SimpleNamespace(hessians=hessians)
    up = promotion(mats, classes, bits, cfg, 0.05, q)
    assert target in up and up[target] == 6.0
    assert promotion(mats, classes, bits, cfg, 0.05, q) == up
    total = sum(w.numel() for w in mats.values())
    assert sum(mats[n].numel() for n in up) <= 0.05 * total
    # Matrices without statistics are never promoted when statistics exist.
    del hessians[target]
    assert target not in promotion(mats, classes, bits, cfg, 0.05, q)


def test_pack_promotes_and_round_trips(tiny_state) -> None:
    cfg = _cfg(search=False, awq_extra_bits_frac=0.25)
    res = pack_state(tiny_state, model={}, tokenizer=TOK, cfg=cfg)
    again = pack_state(tiny_state, model={}, tokenizer=TOK, cfg=cfg)
    off = pack_state(tiny_state, model={}, tokenizer=TOK, cfg=_cfg(search=False))
    assert res.data == again.data and res.promoted  # deterministic
    art = load_artifact(res.data)
    schemes = {t.name: t.scheme for t in art.header.tensors}
    for name, bits in res.promoted.items():
        assert schemes[name] == f"int{int(-(-bits // 1))}"
    assert art.header.meta["awq_promoted"] == sorted(res.promoted)
    assert res.mean_error(tiny_state) < off.mean_error(tiny_state)
    assert len(res.data) > len(off.data)


def test_search_trades_promotion_against_the_grid(tiny_state) -> None:
    cfg = _cfg(
        search_bits=("8/6/5",), search_prune=(0.0,), search_sample=1.0, search_awq=(0.0, 0.3)
    )
    rows, _ = B.estimate(tiny_state, cfg)
    by = {r.awq: r for r in rows}
    assert set(by) == {0.0, 0.3}
    assert by[0.3].est_bytes > by[0.0].est_bytes and by[0.3].est_err < by[0.0].est_err
    assert "awq" in B.format_table(rows)
    real = len(
        pack_state(
            tiny_state, model={}, tokenizer=TOK, cfg=cfg, setting=(8, 6, 5), awq_frac=0.3
        ).data
    )
    assert abs(by[0.3].est_bytes - real) / real < 0.05

    def fn(setting, prune, awq=None):
        return pack_state(
            tiny_state,
            model={},
            tokenizer=TOK,
            cfg=cfg,
            setting=setting,
            prune_fraction=prune,
            awq_frac=awq,
        )

    budget = (by[0.0].est_bytes + by[0.3].est_bytes) // 2
    result, row, _ = B.search(tiny_state, dataclasses.replace(cfg, budget_bytes=budget), 0, fn)
    assert row.awq == 0.0 and len(result.data) <= budget
