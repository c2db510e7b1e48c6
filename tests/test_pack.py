"""Packer: pruning and quantization bounds, packing round trip, budget search."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf.config import resolve
from pgolf.config.pack import PackConfig
from pgolf.format import grid, load_artifact
from pgolf.pack import budget as B
from pgolf.pack import quantize as Q
from pgolf.pack.packer import pack_state
from pgolf.pack.synthetic import random_state

TOK = {"vocab_size": 512, "sha256": None}


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state(resolve("tiny").model, seed=1)


def tiny_cfg(**kw) -> PackConfig:
    return dataclasses.replace(resolve("tiny").pack, **kw)


def test_classes_follow_the_canonical_names(tiny_state) -> None:
    cfg = tiny_cfg()
    cls = {n: Q.classify(n, t, cfg) for n, t in tiny_state.items()}
    assert cls["blocks.0.mlp.fc.weight"] == "mlp" and cls["blocks.1.mlp.proj.weight"] == "mlp"
    assert cls["blocks.0.attn.q.weight"] == "attn" and cls["blocks.0.attn.v.weight"] == "attn"
    assert cls["tok_emb.weight"] == "embed" and cls["bigram.embed.weight"] == "embed"
    assert cls["bigram.proj.weight"] == "other"
    assert cls["blocks.0.attn_scale"] == "control" and cls["skip_weights"] == "control"


@pytest.mark.parametrize("scope", ["per_tensor", "global"])
def test_pruning_makes_exact_zeros_at_the_fraction(tiny_state, scope) -> None:
    mats = {n: t for n, t in tiny_state.items() if t.dim() == 2 and t.numel() > 4096}
    thr = Q.prune_thresholds(mats, 0.3, scope)
    total = zeros = 0
    for name, w in mats.items():
        pruned, count = Q.prune(w, thr[name])
        assert torch.all((pruned == 0) | (pruned == w))
        assert count == int((pruned == 0).sum())
        if scope == "per_tensor":
            assert abs(count / w.numel() - 0.3) < 0.01
        total, zeros = total + w.numel(), zeros + count
    assert abs(zeros / total - 0.3) < 0.01


def test_pruned_weights_decode_to_exact_zeros(tiny_state) -> None:
    cfg = tiny_cfg(search=False, prune_fraction=0.25)
    res = pack_state(tiny_state, model={}, tokenizer=TOK, cfg=cfg)
    art = load_artifact(res.data)
    for t in art.header.tensors:
        if t.bits is not None:
            assert int((art.state[t.name] == 0).sum()) >= t.pruned > 0.2 * t.numel


@pytest.mark.parametrize("bits", [4, 5, 6, 8])
def test_quantization_error_bounds(bits) -> None:
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(bits)) * 0.02
    plain = Q.quantize(w, bits, 0, torch.ones(1))
    s = plain.scales.float().unsqueeze(-1)
    # Without clipping every weight lies within half a step of its level.
    assert torch.all((plain.dequantize() - w).abs() <= s / 2 + 1e-7)
    assert int(plain.q.abs().max()) <= grid.qmax(bits)
    searched = Q.quantize(w, bits, 0, Q.clip_ratios(PackConfig()))
    row_err = lambda qt: (qt.dequantize() - w).square().sum(1)  # noqa: E731
    # Clip search considers ratio 1.0 too, so no row can get worse.
    assert torch.all(row_err(searched) <= row_err(plain) + 1e-12)
    assert Q.rel_sq_error(w, searched.dequantize()) < {4: 0.02, 5: 5e-3, 6: 1.2e-3, 8: 1e-4}[bits]


def test_group_scales_decode_as_the_grid(tiny_state) -> None:
    cfg = tiny_cfg(search=False, group_size=16, clip_search=False)
    res = pack_state(tiny_state, model={}, tokenizer=TOK, cfg=cfg)
    art = load_artifact(res.data)
    w = tiny_state["blocks.0.attn.q.weight"]
    q, s = grid.quantize_rows(w.reshape(-1, 16), 6)
    assert torch.equal(
        art.state["blocks.0.attn.q.weight"], grid.dequantize_rows(q, s).reshape(w.shape)
    )


def test_pack_round_trip_matches_recorded_errors(tiny_state) -> None:
    res = pack_state(tiny_state, model={"num_layers": 4}, tokenizer=TOK, cfg=tiny_cfg(search=False))
    art = load_artifact(res.data)
    assert set(art.state) == set(tiny_state)
    for name, w in tiny_state.items():
        err = Q.rel_sq_error(w, art.state[name])
        assert err == pytest.approx(res.rel_err[name], rel=1e-4, abs=1e-9)
    assert art.model == {"num_layers": 4}


def _sizes(state, cfg) -> tuple[int, int]:
    rows, _ = B.estimate(state, cfg)
    return min(r.est_bytes for r in rows), max(r.est_bytes for r in rows)


def _pack_fn(state, cfg):
    """The (setting, prune) -> PackResult callback the budget search drives."""

    def fn(setting, prune):
        return pack_state(
            state, model={}, tokenizer=TOK, cfg=cfg, setting=setting, prune_fraction=prune
        )

    return fn


def test_budget_search_lands_under_budget(tiny_state) -> None:
    lo, hi = _sizes(tiny_state, tiny_cfg())
    budget = (lo + hi) // 2
    cfg = tiny_cfg(budget_bytes=budget)

    fn = _pack_fn(tiny_state, cfg)
    result, row, rows = B.search(tiny_state, cfg, 1000, fn)
    assert len(result.data) + 1000 <= budget and row.status == "chosen"
    # Every setting with a lower expected error was skipped for being over budget.
    better = rows[: rows.index(row)]
    assert all(r.status in ("est over", "over") for r in better)
    assert "chosen" in B.format_table(rows)


def test_budget_search_fails_cleanly(tiny_state) -> None:
    cfg = tiny_cfg(budget_bytes=1000)

    fn = _pack_fn(tiny_state, cfg)
    with pytest.raises(B.BudgetError, match="smallest reached is") as info:
        B.search(tiny_state, cfg, 0, fn)
    assert info.value.rows and "\n" not in str(info.value)


def test_estimates_track_real_sizes(tiny_state) -> None:
    cfg = tiny_cfg(search_bits=("8/6/5",), search_prune=(0.0,), search_sample=1.0)
    (row,), _ = B.estimate(tiny_state, cfg)
    real = len(
        pack_state(
            tiny_state, model={}, tokenizer=TOK, cfg=cfg, setting=(8, 6, 5), prune_fraction=0.0
        ).data
    )
    assert abs(row.est_bytes - real) / real < 0.05


def test_synthetic_state_matches_the_model() -> None:
    """random_state must mirror pgolf.model.GPT's names and shapes (update it if this fails)."""
    from pgolf.model import GPT

    cfg = resolve("tiny").model
    want = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
    have = {k: tuple(v.shape) for k, v in random_state(cfg).items()}
    assert have == want
