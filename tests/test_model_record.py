"""The April architecture switches (issue 13): each changes the model only when on, the
default model is today's bit for bit, causality and BOS isolation with everything on, depth
recurrence toggling (eager and compiled), and record-tiny through train -> pack -> eval."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from model_helpers import noisy_model
from train_helpers import build_dataset

from pgolf.config import ModelConfig, resolve
from pgolf.config.base import from_dict, to_dict
from pgolf.model import GPT, param_role
from pgolf.model.gpt import Block
from pgolf.model.layers import rms_norm

TINY = resolve("tiny").model
RECORD_TINY = resolve("record-tiny").model

# Each switch on (for TINY), and a companion knob that must do nothing while it is off.
SWITCHES = {
    "leaky_relu2": ({"mlp_activation": "leaky_relu2"}, {"mlp_leaky_slope": 0.3}),
    "parallel_residual": ({"parallel_residual_from": 1}, {}),
    "attn_out_gate": ({"attn_out_gate": True}, {"attn_gate_window": 5, "attn_gate_scale": 2.0}),
    "recurrence": (
        {"recur_start": 1, "recur_end": 2},
        {"recur_passes": 3, "recur_after_frac": 0.5},
    ),
}


def ids_batch(n: int = 40, seed: int = 1, vocab: int = TINY.vocab_size) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (2, n), generator=g)


def transplant(src: GPT, cfg: ModelConfig) -> GPT:
    """GPT(cfg) holding ``src``'s weights (new tensors keep noise; longer ones keep their tail)."""
    model = noisy_model(cfg, seed=7)
    state = src.state_dict()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                rows = min(p.size(0), state[name].size(0))
                p[:rows].copy_(state[name][:rows])
    return model.eval()


def reference_logits(model: GPT, ids: torch.Tensor) -> torch.Tensor:
    """The forward pass as written before these switches (sequential blocks, relu², U-Net)."""
    x0 = x = model.embed(ids)
    ve = model.value_embed(ids)
    n, skips = len(model.blocks), []
    for i, block in enumerate(model.blocks):
        if i >= n // 2 and skips:
            x = x + model.skip_weights[i - n // 2] * skips.pop()
        v_extra = (
            ve * model.value_embed.layer_scales[model.ve_slot[i]] if i in model.ve_slot else None
        )
        x = block.resid_mix[0] * x + block.resid_mix[1] * x0
        x = x + block.attn_scale * block.attn(rms_norm(x) * block.ln_scale, v_extra)
        h = rms_norm(x) * block.ln_scale
        x = x + block.mlp_scale * block.mlp.proj(F.relu(block.mlp.fc(h)).square())
        if i < n // 2:
            skips.append(x)
    return model.logits(rms_norm(x))


def test_default_model_is_todays_model_bit_for_bit():
    model = noisy_model(TINY)
    ids = ids_batch()
    with torch.no_grad():
        assert torch.equal(model(ids), reference_logits(model, ids))
    # A config written before the switches existed loads with every switch off...
    new_keys = {
        "mlp_activation", "mlp_leaky_slope", "attn_out_gate", "attn_gate_window",
        "attn_gate_scale", "parallel_residual_from", "recur_start", "recur_end",
        "recur_passes", "recur_after_frac",
    }  # fmt: skip
    old = {k: v for k, v in to_dict(TINY).items() if k not in new_keys}
    assert from_dict(ModelConfig, old, "model") == TINY
    # ...and builds exactly today's tensors.
    assert not any("gate_w" in n for n in model.state_dict())
    assert model.skip_weights.shape == (TINY.num_layers // 2, TINY.model_dim)


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_each_switch_changes_the_output_only_when_on(name):
    on, companion = SWITCHES[name]
    base = noisy_model(TINY)
    ids = ids_batch()
    with torch.no_grad():
        ref = base(ids)
        idle = transplant(base, dataclasses.replace(TINY, **companion))(ids)
        switched = transplant(base, dataclasses.replace(TINY, **on, **companion))(ids)
    assert torch.equal(idle, ref)
    assert (switched - ref).abs().max() > 1e-3


def test_parallel_block_feeds_attention_and_mlp_the_same_input():
    cfg = dataclasses.replace(TINY, parallel_residual_from=0, resid_mix=False)
    block = transplant(noisy_model(TINY), cfg).blocks[0]
    x = torch.randn(2, 8, TINY.model_dim)
    with torch.no_grad():
        h = rms_norm(x) * block.ln_scale
        want = x + block.attn_scale * block.attn(h) + block.mlp_scale * block.mlp(h)
        torch.testing.assert_close(block(x, x, None), want, rtol=0, atol=1e-6)
    assert isinstance(block, Block) and block.parallel


def test_leaky_relu2_keeps_a_gradient_for_negative_preactivations():
    cfg = dataclasses.replace(TINY, mlp_activation="leaky_relu2", mlp_leaky_slope=0.5)
    mlp = GPT(cfg).blocks[0].mlp
    pre = torch.tensor([-2.0, -0.5, 0.0, 1.5])
    x = torch.zeros(1, 1, TINY.model_dim)
    x[..., 0] = 1.0
    with torch.no_grad():  # hidden unit k sees pre[k]; output 0 sums units 0..3
        mlp.fc.weight.zero_()
        mlp.fc.weight[:4, 0] = pre
        mlp.proj.weight.zero_()
        mlp.proj.weight[0, :4] = 1.0
        # leaky_relu(h)² = (0.5 h)² for h < 0: the negative side is a quarter-height parabola.
        want = (0.25 * pre[:2].square()).sum() + pre[3] ** 2
        assert mlp(x)[0, 0, 0].item() == pytest.approx(want.item())


def test_attention_gate_is_a_small_zero_init_control_tensor_of_the_block_input():
    model = GPT(RECORD_TINY)
    gates = {n: p for n, p in model.named_parameters() if n.endswith("attn.gate_w")}
    assert len(gates) == RECORD_TINY.num_layers
    for name, w in gates.items():
        assert w.shape == (RECORD_TINY.num_heads, RECORD_TINY.attn_gate_window)
        assert not w.any() and param_role(name) == "control"
        assert w.numel() < resolve("record-tiny").pack.control_max_numel
    attn = model.blocks[0].attn
    x = torch.randn(2, 5, RECORD_TINY.model_dim)
    torch.testing.assert_close(attn.output_gate(x), torch.full((2, 5, 4), 0.5))
    with torch.no_grad():
        attn.gate_w.normal_()
        changed = x.clone()
        changed[..., RECORD_TINY.attn_gate_window :] += 1.0  # dims outside the window
        torch.testing.assert_close(attn.output_gate(changed), attn.output_gate(x))


@pytest.mark.parametrize("recur_on", [True, False])
def test_causal_with_every_switch_on(recur_on):
    model = noisy_model(dataclasses.replace(RECORD_TINY, bigram_buckets=64, bigram_dim=8))
    model.set_recurrence(recur_on)
    ids = ids_batch()
    with torch.no_grad():
        base = model(ids)
        for t in (0, 9, 25, 38):
            changed = ids.clone()
            changed[:, t + 1 :] = (changed[:, t + 1 :] + 3) % RECORD_TINY.vocab_size
            out = model(changed)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-5)
            assert (out[:, t + 1] - base[:, t + 1]).abs().max() > 1e-4


def test_smear_and_bigram_never_carry_tokens_across_a_bos():
    cfg = dataclasses.replace(RECORD_TINY, bigram_buckets=64, bigram_dim=8)
    model = noisy_model(cfg)
    bos, p = cfg.bos_id, 17
    ids = ids_batch(32)
    ids[:, p] = bos
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        other = ids.clone()
        other[:, :p] = torch.randint(2, cfg.vocab_size, (2, p), generator=g)
        with torch.no_grad():
            a, b = model.embed(ids), model.embed(other)
        # The BOS position and everything after it: exactly the same embedding-side input.
        assert torch.equal(a[:, p:], b[:, p:])
    # The test can fail: without the BOS the previous token reaches position p.
    ids[:, p] = other[:, p] = 5
    with torch.no_grad():
        assert (model.embed(ids)[:, p] - model.embed(other)[:, p]).abs().max() > 0


def test_recurrence_toggles_between_the_plain_and_the_unrolled_stack():
    cfg = dataclasses.replace(TINY, recur_start=1, recur_end=2, recur_passes=3)
    model = noisy_model(cfg)
    assert model.recurrence_active  # built as evaluated
    assert model.recur_order == (0, 1, 2, 1, 2, 1, 2, 3)
    ids = ids_batch()
    with torch.no_grad():
        looped = model(ids)
        model.set_recurrence(False)
        plain = model(ids)
        # The plain stack is exactly the model without recurrence (same weights).
        assert torch.equal(plain, transplant(model, TINY)(ids))
        model.set_recurrence(True)
        assert torch.equal(model(ids), looped)
    assert (looped - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="recur_start"):
        noisy_model(TINY).set_recurrence(True)


def test_switching_recurrence_recompiles_instead_of_breaking_the_graph():
    model = noisy_model(dataclasses.replace(RECORD_TINY, attention_backend="math"))
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=False)
    ids = ids_batch(16)
    with torch.no_grad():
        for active in (False, True, False):
            model.set_recurrence(active)
            torch.testing.assert_close(compiled(ids), model(ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "bad",
    [
        {"recur_start": 2, "recur_end": 1},
        {"recur_start": 1},
        {"recur_start": 0, "recur_end": 4},
        {"recur_start": 0, "recur_end": 1, "recur_passes": 1},
        {"recur_start": 0, "recur_end": 1, "recur_after_frac": 1.0},
        {"parallel_residual_from": 4},
        {"attn_gate_window": 65},
        {"attn_gate_scale": 0.0},
        {"mlp_leaky_slope": 1.0},
        {"mlp_activation": "gelu"},
    ],
)
def test_bad_switch_values_are_rejected(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(TINY, **bad)


def test_record_preset_is_the_leaderboard_architecture():
    rec = resolve("record").model
    assert (rec.vocab_size, rec.mlp_mult, rec.mlp_activation) == (8192, 4.0, "leaky_relu2")
    assert rec.xsa_last_n == rec.num_layers == 11 and rec.q_gain_init == 5.25
    assert (rec.recur_start, rec.recur_end, rec.recur_passes) == (3, 5, 3)
    assert rec.parallel_residual_from == 7 and rec.attn_out_gate
    assert rec.bigram_buckets == 0 and rec.value_embed_dim == 0
    switched = {k for k, v in to_dict(rec).items() if v != getattr(ModelConfig(), k)}
    tiny_switched = {k for k, v in to_dict(RECORD_TINY).items() if v != getattr(TINY, k)}
    # record-tiny differs from tiny in exactly the record's switches (and none of the widths).
    assert tiny_switched <= switched


# ---------------------------------------------------------------- record-tiny end to end


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    data, tok = build_dataset(root, n_train_docs=300, n_val_docs=20)
    from pgolf.train.loop import train

    run = resolve(
        "record-tiny",
        [
            "train.max_steps=8",
            "train.train_seconds=1e6",
            "train.seq_len=64",
            "train.global_batch_tokens=512",
            "train.micro_batch_seqs=8",
            "train.val_every_steps=0",
            "train.val_tokens=2048",
            "train.final_val_tokens=2048",
        ],
    )
    out = root / "run"
    summary = train(run, data, tok, out)
    return data, tok, out, summary


def test_record_tiny_trains_with_recurrence_switched_on_at_its_fraction(trained):
    _, _, out, summary = trained
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    switches = [(r["step"], r["active"]) for r in records if r.get("event") == "recurrence"]
    # Off for the first 35% of the 8 steps (progress = step / max_steps), then on for good.
    assert switches == [(0, False), (3, True)]
    assert summary["step"] == 8 and summary["val_bpb"] < 4.0


def test_record_tiny_round_trips_through_pack_and_eval(trained, tmp_path):
    from pgolf.eval.evaluate import evaluate_artifact
    from pgolf.eval.load import build_model, load_artifact
    from pgolf.pack.api import pack_checkpoint

    data, tok, out, _ = trained
    art = tmp_path / "record-tiny.pgolf"
    pack_cfg = dataclasses.replace(resolve("record-tiny").pack, code_bytes=0, search=False)
    pack_checkpoint(out, art, pack_cfg, tokenizer=tok, progress=False)
    loaded = load_artifact(art)
    assert loaded.model_config == RECORD_TINY
    model = build_model(loaded)
    assert model.recurrence_active and model.recur_order == (0, 1, 2, 1, 2, 1, 2, 3)
    ev = dataclasses.replace(
        resolve("record-tiny").eval, window=64, stride=32, device="cpu", ttt="none", compile=False
    )
    packed = evaluate_artifact(art, data, tok, ev, max_tokens=4096)
    full = evaluate_artifact(out, data, tok, ev, max_tokens=4096)
    assert 0 < full["val_bpb"] < 4.0
    assert abs(packed["val_bpb"] - full["val_bpb"]) < 0.05


def test_flops_per_token_count_every_recurrent_block_run():
    from pgolf.model import train_flops_per_token

    cfg = resolve("record-tiny").model
    model = GPT(cfg)
    on = train_flops_per_token(model, 128)
    model.set_recurrence(False)
    off = train_flops_per_token(model, 128)
    extra = len(model.recur_order) - cfg.num_layers
    block = sum(p.numel() for p in model.blocks[0].parameters() if p.dim() == 2)
    assert extra > 0
    assert on - off == 6.0 * extra * (block + cfg.num_heads * cfg.head_dim * 128)
