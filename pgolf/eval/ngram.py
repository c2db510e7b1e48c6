"""Causal token n-gram tilt: the model's next-token distribution, re-weighted by what the
already-scored val text says follows the current context (PRs #1514, #2135; issue #1017).

For a target at stream position p with context c = tokens[p-n+1 : p] (n = ``order``):

    q(v)       = count(c, v) / count(c)        over the pairs (context, next) ending before p
    p'(v)      = p(v) · exp(λ · q(v)) / Z,      Z = Σ_v p(v) · exp(λ · q(v))   (full vocabulary)
    -log p'(t) = nll(t) + log1p(Σ_v p(v) · expm1(λ · q(v))) − λ · q(t)

q is 0 while count(c) < ``min_count`` (no tilt). The last form is the one computed: it is a
proper distribution for every q (a positive re-weighting, renormalised), and with λ = 0 it
adds exactly 0, so the score equals the plain one bit for bit.

Legality (score-first, one pass): the statistics read by target p hold only pairs whose next
token is at a position < p. Counts live in two hashed tables on the device (pairs and
contexts, 2**table_bits int32 each). Before a scored batch the tables absorb every target
before the batch's first target (``absorb_until``); inside the batch, a target also counts
the batch's earlier targets through a [P, P] "same context, earlier position" matrix, so the
result equals a strictly sequential update, vectorised. Nothing at or after p is read for p.
On several ranks every rank holds the whole stream and the same tables (each absorbs up to
its own next target), so results do not depend on the world size beyond summation order.
"""

from __future__ import annotations

import torch

# Odd 61-bit multipliers for the rolling context hash (int64 arithmetic wraps; bits masked).
_MULTS = (
    0x1F3D5B79A3C4E5F1,
    0x0B4E7C2D9F1A3B57,
    0x12A9F3E7C5D1B8A3,
    0x0D6E8F1A2B3C4D5F,
    0x1C3B5A7968F4E2D1,
    0x09E3779B97F4A7C1,
    0x15A4E35C7D3B9F21,
    0x0F1E2D3C4B5A6979,
)
_PAIR_MULT = 0x0C2B2AE3D27D4EB5


def tilted_nll(
    logits: torch.Tensor, target: torch.Tensor, nll: torch.Tensor, q: torch.Tensor, lam: float
) -> torch.Tensor:
    """-log p'(target) for logits [..., V], q [..., V] in [0, 1], nll [...] the plain NLL."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    mass = (logp.exp() * torch.expm1(lam * q)).sum(-1)
    boost = lam * q.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return nll + torch.log1p(mass) - boost


def tilted_logprobs(logits: torch.Tensor, q: torch.Tensor, lam: float) -> torch.Tensor:
    """The full tilted log-distribution (for tests and analysis): log p'(v) for every v."""
    return torch.log_softmax(torch.log_softmax(logits.float(), dim=-1) + lam * q, dim=-1)


class NgramTilt:
    """Hashed n-gram counts of one val stream, fed strictly in stream order."""

    # Batches with more rows than this are compacted to their scored rows first.
    MAX_ROWS = 8192
    # Targets absorbed per vectorised piece.
    ABSORB_PIECE = 1 << 22

    def __init__(
        self,
        tokens: torch.Tensor,
        vocab: int,
        *,
        order: int,
        lam: float,
        table_bits: int,
        min_count: int,
    ) -> None:
        assert 2 <= order <= len(_MULTS) + 1, order
        self.tokens, self.vocab, self.order, self.lam = tokens, vocab, order, lam
        self.min_count = min_count
        self.mask = (1 << table_bits) - 1
        dev = tokens.device
        self.pairs = torch.zeros(1 << table_bits, dtype=torch.int32, device=dev)
        self.contexts = torch.zeros(1 << table_bits, dtype=torch.int32, device=dev)
        # Targets [order-1, frontier) are in the tables (earlier ones have no full context).
        self.frontier = order - 1
        self._vocab_ids = torch.arange(vocab, device=dev, dtype=torch.int64)
        self._ctx_offsets = torch.arange(-(order - 1), 0, device=dev, dtype=torch.int64)
        self._mults = torch.tensor(_MULTS[: order - 1], device=dev, dtype=torch.int64)
        # Scored targets whose context had >= min_count earlier occurrences (a device count).
        self.hits = torch.zeros((), dtype=torch.int64, device=dev)

    def context_hash(self, positions: torch.Tensor) -> torch.Tensor:
        """Hash of tokens[p-n+1 : p] per target position p (>= order-1); int64, any sign."""
        # Rows without a full context (p < order-1) read only tokens[0 : p], then go unused.
        ctx = self.tokens[(positions[..., None] + self._ctx_offsets).clamp_min(0)]
        return (ctx * self._mults).sum(-1)

    def _slot(self, h: torch.Tensor) -> torch.Tensor:
        return h & self.mask

    def _pair_slot(self, h: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        return (h * _PAIR_MULT + nxt * 0x5BD1E995 + 0x27D4EB2F) & self.mask

    def absorb_until(self, end: int) -> None:
        """Add the pairs of targets [frontier, end) to the tables; reads tokens < end only."""
        # Pieces bound the temporaries: on 8 ranks the last one's first call absorbs 7/8 of
        # the stream at once.
        for a in range(self.frontier, end, self.ABSORB_PIECE):
            pos = torch.arange(a, min(end, a + self.ABSORB_PIECE), device=self.tokens.device)
            h = self.context_hash(pos)
            ones = torch.ones(pos.numel(), dtype=torch.int32, device=pos.device)
            self.contexts.index_add_(0, self._slot(h), ones)
            self.pairs.index_add_(0, self._pair_slot(h, self.tokens[pos]), ones)
        self.frontier = max(self.frontier, end)

    def in_batch_visible(self, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """[P, P] bool: target j (row) may count target i (column) of the same batch."""
        return (pos[None, :] < pos[:, None]) & valid[None, :]

    def tilt(
        self,
        nll: torch.Tensor,
        logits: torch.Tensor,
        target: torch.Tensor,
        pos: torch.Tensor,
        scored: torch.Tensor,
        first: int,
    ) -> torch.Tensor:
        """Tilted NLL for a batch of rows (any shape [...]); unscored rows pass through.

        ``pos`` holds each row's target position, ``scored`` which rows are scored and
        ``first`` the smallest scored position: the scored positions of one call are
        contiguous from ``first`` and lie after every earlier call's.
        """
        shape = nll.shape
        nll, target, pos, scored = (t.reshape(-1) for t in (nll, target, pos, scored))
        logits = logits.reshape(-1, logits.size(-1))
        self.absorb_until(max(first, self.order - 1))
        if nll.numel() > self.MAX_ROWS:
            # A batch holding block 0 keeps every row of its windows, most of them unscored:
            # the [P, P] matrix below is built on the scored rows only (one host sync, once).
            rows = torch.nonzero(scored).squeeze(1)
            out = nll.clone()
            out[rows] = self._tilt_rows(nll[rows], logits[rows], target[rows], pos[rows])
            return out.view(shape)
        out = self._tilt_rows(nll, logits, target, pos, scored)
        return torch.where(scored, out, nll).view(shape)

    def _tilt_rows(
        self,
        nll: torch.Tensor,
        logits: torch.Tensor,
        target: torch.Tensor,
        pos: torch.Tensor,
        scored: torch.Tensor | None = None,
    ) -> torch.Tensor:
        has_ctx = pos >= self.order - 1
        if scored is not None:
            has_ctx = has_ctx & scored
        h = self.context_hash(pos)
        # Counts from earlier calls and batches (all positions < first).
        ctx_n = self.contexts[self._slot(h)]
        pair_n = self.pairs[self._pair_slot(h[:, None], self._vocab_ids[None, :])]
        # Counts from this batch's earlier targets: same context hash, smaller position.
        seen = self.in_batch_visible(pos, has_ctx) & (h[None, :] == h[:, None])
        onehot = torch.nn.functional.one_hot(target, self.vocab).to(torch.float32)
        pair_f = pair_n.float() + seen.float() @ onehot
        ctx_f = ctx_n.float() + seen.sum(-1).float()
        enough = has_ctx & (ctx_f >= self.min_count)
        q = torch.where(enough[:, None], (pair_f / ctx_f.clamp_min(1)[:, None]).clamp_max(1), 0.0)
        self.hits += enough.sum()
        return torch.where(has_ctx, tilted_nll(logits, target, nll, q, self.lam), nll)
