"""Input extras: BigramHash, SmearGate and the shared value embedding.

BigramHash and SmearGate look one token back. A BOS token starts a document, so at a BOS
position both behave as at position 0 ("no previous token"): nothing from the previous
document reaches a position at or after its BOS through them (tests check this).
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.model.layers import CastedLinear

# Odd multipliers for the pair hash; xor of two scaled ids spreads (prev, cur) pairs well
# over a power-of-two-ish bucket count (the public records' choice).
_HASH_CUR, _HASH_PREV = 36313, 27191


def starts_fresh(input_ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """bool [B,T]: positions whose previous token must not be used (t == 0 or token == BOS)."""
    fresh = input_ids == bos_id
    fresh[:, 0] = True
    return fresh


class BigramHash(nn.Module):
    """Embedding of hash(previous, current) token, projected to model_dim, times a scale.

    The projection starts at zero so the feature enters the residual stream gradually; the
    bucket table starts small but non-zero, otherwise both factors would have zero gradient
    forever (the gradient of each is proportional to the other).
    """

    def __init__(self, buckets: int, dim: int, model_dim: int, bos_id: int) -> None:
        super().__init__()
        self.buckets, self.bos_id = buckets, bos_id
        self.embed = nn.Embedding(buckets, dim)
        self.proj = CastedLinear(dim, model_dim)
        self.scale = nn.Parameter(torch.tensor([0.05]))
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.zeros_(self.proj.weight)

    def bucket_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.long()
        prev = torch.cat((torch.zeros_like(ids[:, :1]), ids[:, :-1]), dim=1)
        hashed = torch.bitwise_xor(_HASH_CUR * ids, _HASH_PREV * prev) % (self.buckets - 1)
        # The last bucket is reserved for "no previous token" (sequence start or BOS).
        return torch.where(starts_fresh(input_ids, self.bos_id), self.buckets - 1, hashed)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(self.bucket_ids(input_ids))) * self.scale.to(torch.float32)


class SmearGate(nn.Module):
    """x_t <- (1 - g) * x_t + g * x_{t-1}, g = sigmoid(gate) per channel (init g = 0.5)."""

    def __init__(self, dim: int, bos_id: int) -> None:
        super().__init__()
        self.bos_id = bos_id
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate.to(x.dtype))
        prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)
        keep = (~starts_fresh(input_ids, self.bos_id)).unsqueeze(-1).to(x.dtype)
        return x + g * (prev * keep - x)


class ValueEmbedding(nn.Module):
    """One token embedding shared by several layers, added to their V with per-layer scales.

    It gives deep layers direct access to token identity in the value path at the cost of
    one small table (vocab x 128) instead of one per layer.
    """

    def __init__(self, vocab: int, dim: int, kv_dim: int, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.proj = CastedLinear(dim, kv_dim)
        self.scale = nn.Parameter(torch.tensor([0.1]))
        self.layer_scales = nn.Parameter(torch.ones(num_layers))
        nn.init.normal_(self.embed.weight, std=0.01)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.embed(input_ids)) * self.scale.to(torch.float32)
