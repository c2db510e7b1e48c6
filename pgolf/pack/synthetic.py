"""Random checkpoints with the model's canonical names and shapes (tests and benchmarks).

Random weights are *not* trained weights: they are near-Gaussian with no outliers, so they
compress worse than trained ones and show no gain from clip search. Use them to measure
speed and correctness; measure bytes on a trained checkpoint (bench/pack_bench.py).
"""

from __future__ import annotations

import torch

from pgolf.config import ModelConfig


def random_state(
    model: ModelConfig, *, seed: int = 0, std: float = 0.02
) -> dict[str, torch.Tensor]:
    """A state dict shaped like pgolf.model.GPT(model): orthogonal-ish block matrices."""
    g = torch.Generator().manual_seed(seed)
    d, kv, hidden = model.model_dim, model.kv_dim, model.mlp_hidden

    def mat(rows: int, cols: int) -> torch.Tensor:
        a = torch.randn(rows, cols, generator=g)
        if rows * cols <= 1 << 21:  # QR of the default sizes takes < 0.1 s each
            q, r = torch.linalg.qr(a if rows >= cols else a.T)
            q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
            a = (q if rows >= cols else q.T) * (max(rows, cols) ** 0.5)
        return a * std

    state = {"tok_emb.weight": torch.randn(model.vocab_size, d, generator=g) * std}
    for i in range(model.num_layers):
        p = f"blocks.{i}."
        state[p + "attn.q.weight"] = mat(d, d)
        state[p + "attn.k.weight"] = mat(kv, d)
        state[p + "attn.v.weight"] = mat(kv, d)
        state[p + "attn.proj.weight"] = mat(d, d)
        state[p + "mlp.fc.weight"] = mat(hidden, d)
        state[p + "mlp.proj.weight"] = mat(d, hidden)
        state[p + "attn.q_gain"] = torch.full((model.num_heads,), model.q_gain_init)
        state[p + "attn_scale"] = 1 + 0.1 * torch.randn(d, generator=g)
        state[p + "mlp_scale"] = 1 + 0.1 * torch.randn(d, generator=g)
        state[p + "resid_mix"] = torch.stack([torch.ones(d), torch.zeros(d)])
    state["skip_weights"] = torch.ones(model.num_layers // 2, d)
    state["smear.gate"] = torch.zeros(d)
    if model.bigram_buckets:
        state["bigram.embed.weight"] = (
            torch.randn(model.bigram_buckets, model.bigram_dim, generator=g) * std
        )
        state["bigram.proj.weight"] = mat(d, model.bigram_dim)
        state["bigram.scale"] = torch.tensor([0.05])
    if model.value_embed_dim:
        state["value_embed.embed.weight"] = (
            torch.randn(model.vocab_size, model.value_embed_dim, generator=g) * std
        )
        state["value_embed.proj.weight"] = mat(kv, model.value_embed_dim)
        state["value_embed.scale"] = torch.tensor([0.05])
        state["value_embed.layer_scales"] = torch.ones(len(set(model.value_embed_layers)))
    return state
