"""Per-document LoRA test-time training (leaderboard PR #1530), score-first, batched.

Every chosen projection of every block gets a low-rank adapter, added to its output by a
forward hook (the model definition stays untouched): ``y + (x Aᵀ) Bᵀ`` with A [r, in]
uniform(±1/√in) and B [out, r] zero, so a fresh adapter changes nothing. After a chunk is
scored, one Adam step trains the adapters on the chunk's targets that belong to the
document being read, with context from that document only. When a new document starts
(a BOS among the scored tokens) the adapters and Adam's state are reset: each document
adapts from the artifact alone, so one odd document cannot drift the model for the next.

Rows: one document at a time takes thousands of tiny sequential steps (no result within
290 s on the H200), so the chunks are cut into ``ttt_lora_batch_docs`` contiguous *rows*
of equal length, each with its own adapters (A [rows, r, in], B [rows, out, r], applied
per row with bmm) and its own Adam state. The rows advance together: chunk i of every row
is scored in one call, then one batched step trains each row on its own chunk (losses are
summed; rows are separate parameters, and clipping and Adam work per row, so rows never mix).
Equal spans keep every row busy until the last step with no sorting, and no document end is
looked up ahead: a row still finds its documents only among tokens it has scored. A row
starts with fresh adapters and reads nothing before its span (those tokens are scored later
by the previous row), so a document cut by a row edge (at most rows-1 of them) adapts from
there. Scoring keeps the stream's windows (context may reach into the previous row's text,
which comes earlier in the stream). One row is the plain stream-order loop.

Phased global SGD (phased-lora) cuts the chunks at its pauses; each part runs its rows, then
the pause trains on everything before it. Ranks take disjoint rows (no LoRA all-reduce),
score them alone, and add their sums (and per-token NLLs, in stream order) at each pause.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pgolf.config.eval import EvalConfig
from pgolf.eval.score import NllFn, ScoreTotals, autocast_ctx, rank_slice
from pgolf.eval.ttt import trainable_only
from pgolf.eval.windows import Windows, train_starts
from pgolf.model.layers import CastedLinear
from pgolf.runtime import Dist

# Config target name -> the block's attribute path of that CastedLinear.
TARGET_PATHS = {
    "q": "attn.q",
    "k": "attn.k",
    "v": "attn.v",
    "o": "attn.proj",
    "fc": "mlp.fc",
    "mlp": "mlp.proj",
}
# A is drawn once from this seed (identically on every rank) and restored at every reset.
RESET_SEED = 1530
BETA2, EPS = 0.999, 1e-8  # Adam, beta1 = 0 (PR #1530)
WINDOW_FIELDS = ("starts", "lo", "hi")


class LoRA(nn.Module):
    def __init__(self, linear: CastedLinear, rank: int, rows: int, gen: torch.Generator) -> None:
        super().__init__()
        dev, bound = linear.weight.device, 1.0 / math.sqrt(linear.in_features)
        a0 = torch.rand(rank, linear.in_features, generator=gen) * (2 * bound) - bound
        self.A = nn.Parameter(a0.to(dev).repeat(rows, 1, 1))
        self.B = nn.Parameter(torch.zeros(rows, linear.out_features, rank, device=dev))
        self.a0 = self.A[0].detach().clone()
        self.active = True
        self.rows: torch.Tensor | None = None  # the row of each sequence of the next forward

    def hook(self, _module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return out
        x = inputs[0]
        A, B = self.A.to(x.dtype), self.B.to(x.dtype)
        if A.size(0) == 1:
            return out + (x @ A[0].t()) @ B[0].t()
        A, B = A[self.rows], B[self.rows]
        return out + torch.bmm(torch.bmm(x, A.transpose(1, 2)), B.transpose(1, 2))


def doc_train_starts(t0: int, c1: int, seq_len: int, floor: int) -> tuple[np.ndarray, int]:
    """Like ``train_starts`` (targets [t0, c1), nothing later) with no input before ``floor``."""
    starts, length = train_starts(t0 - floor, c1 - floor, seq_len)
    return starts + floor, length


class LoraTTT:
    """Adapters on ``model``; ``score_and_adapt`` runs the whole evaluation, ``close`` ends it."""

    name = "lora"

    def __init__(
        self, model: nn.Module, forward: NllFn, tokens: torch.Tensor, cfg: EvalConfig, d: Dist
    ) -> None:
        self.model, self.forward, self.tokens, self.cfg, self.d = model, forward, tokens, cfg, d
        self.bos_id = model.cfg.bos_id
        self.mine = range(*rank_slice(cfg.ttt_lora_batch_docs, d))  # this rank's global rows
        n = max(len(self.mine), 1)
        gen = torch.Generator().manual_seed(RESET_SEED)
        self.loras: list[LoRA] = []
        self._handles = []
        for block in model.blocks:
            for target in cfg.lora_targets:
                linear = block.get_submodule(TARGET_PATHS[target])
                lora = LoRA(linear, cfg.ttt_lora_rank, n, gen)
                self.loras.append(lora)
                self._handles.append(linear.register_forward_hook(lora.hook))
        # A fused q/k/v GEMM bypasses the q/k/v modules (and their hooks); unfused is the
        # same maths, so attention runs unfused while adapters exist.
        self._fused = {}
        if {"q", "k", "v"} & set(cfg.lora_targets):
            for block in model.blocks:
                self._fused[block.attn] = block.attn.fused_qkv
                block.attn.fused_qkv = False
        self.params = [p for lora in self.loras for p in lora.parameters()]
        self.sq = [torch.zeros_like(p) for p in self.params]  # Adam's second moment
        self.t = np.zeros(n, dtype=np.int64)  # Adam steps of each row's current document
        self.doc = np.zeros(n, dtype=np.int64)  # each row's document start (training floor)
        self.until = np.full(n, -1)  # the chunk a row's state is ready for
        self.steps_taken = self.resets = self.batches = 0
        # Compiled graphs have static shapes: pad each micro-batch to ttt_micro_batch
        # sequences of one of 4 lengths (seq_len / 8 ... seq_len), at most 2x the work.
        self.fixed = d.device.type == "cuda" and cfg.compile
        self._set_rows(torch.zeros(cfg.batch_windows, dtype=torch.long, device=d.device))

    @property
    def trainable_counts(self) -> dict[str, int]:
        return {
            "ttt_lora_params": sum(p.numel() for p in self.params) // self.t.size,  # per row
            "ttt_lora_resets": self.resets,  # document starts seen, all rows
            "ttt_lora_batches": self.batches,  # batched optimizer steps of rank 0
        }

    def _set_rows(self, rows: torch.Tensor) -> None:
        for lora in self.loras:
            lora.rows = rows

    def _switch(self, on: bool) -> None:
        for lora in self.loras:
            lora.active = on

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """The base model alone (phased global SGD trains it without the current adapters)."""
        self._switch(False)
        try:
            yield
        finally:
            self._switch(True)

    def _lengths(self) -> list[int]:
        n = self.cfg.ttt_seq_len
        return sorted({max(n >> k, 1) for k in range(4)}) if self.fixed else []

    def warm_up(self, micro: int) -> None:
        """Compile the training graphs (every padded length) on dummy tokens; no step."""
        dev, m = self.d.device, self.cfg.ttt_micro_batch
        self._set_rows(torch.zeros(m, dtype=torch.long, device=dev))
        for n in self._lengths():
            seq = torch.zeros(m, n, dtype=torch.long, device=dev)
            with trainable_only(self.model, []), autocast_ctx(dev, self.cfg.autocast_bf16):
                self.forward(seq, seq, n).float().sum().backward()
        for p in self.params:
            p.grad = None
        self._set_rows(torch.zeros(self.cfg.batch_windows, dtype=torch.long, device=dev))
        # Off until score_and_adapt: the phased warm-up next compiles the base-model graph it
        # trains with (adapters suspended), not one with adapters of another batch size.
        self._switch(False)

    def score_and_adapt(self, scorer, bounds, windows: Windows, chunks, adapters, clock):
        """Score every chunk, learning after each (not after the last): the whole TTT eval."""
        others = [a for a in adapters if a is not self]
        ends = [int(bounds[b]) for _, b in chunks]
        n = len(chunks)
        # Pause after chunk i when it reaches another phased boundary (as PhasedSGD counts).
        hit = [sum(b <= e for a in others for b in a.boundaries) for e in ends]
        cuts = [i + 1 for i in range(n - 1) if hit[i] > (hit[i - 1] if i else 0)]
        total = ScoreTotals()
        keep, inner = scorer.d, scorer.nll_fn
        scorer.d = dataclasses.replace(self.d, rank=0, world_size=1)  # each rank scores its rows

        def nll_fn(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
            self._set_rows(next(self._queue))
            return inner(x, y, k)

        scorer.nll_fn = nll_fn if self.t.size > 1 else inner
        self._switch(True)
        try:
            for s0, s1 in zip([0, *cuts], [*cuts, n], strict=True):
                total.add(self._part(scorer, bounds, windows, chunks, s0, s1, clock))
                for a in others if s1 < n else []:
                    c0, c1 = int(bounds[chunks[s1 - 1][0]]), ends[s1 - 1]
                    with clock.adapting(a.name), self.suspended():
                        a.adapt(s1 - 1, c0, c1)
        finally:
            scorer.d, scorer.nll_fn = keep, inner
        self.steps_taken, self.resets = (int(v) for v in self._sum([self.steps_taken, self.resets]))
        return total

    def _sum(self, values: list) -> torch.Tensor:
        t = torch.tensor(values, dtype=torch.float64, device=self.d.device)
        if self.d.distributed:
            dist.all_reduce(t)
        return t.tolist()

    def _part(self, scorer, bounds, windows: Windows, chunks, s0: int, s1: int, clock):
        """Chunks [s0, s1) as rows side by side; totals of every rank (NLLs on rank 0)."""
        g, m, last = self.cfg.ttt_lora_batch_docs, s1 - s0, len(chunks) - 1
        spans = [(s0 + m * k // g, s0 + m * (k + 1) // g) for k in self.mine]
        for j, (a, b) in enumerate(spans):
            if a < b and self.until[j] != a:  # carried on only where the row itself stopped
                self._reset(j)
                self.doc[j] = bounds[chunks[a][0]] - (self.mine[j] == 0)
        out, nll = ScoreTotals(), [[] for _ in spans]
        for i in range(max((b - a for a, b in spans), default=0)):
            live = [j for j, (a, b) in enumerate(spans) if a + i < b]
            cs = [spans[j][0] + i for j in live]
            parts = [windows.slice(*chunks[c]) for c in cs]
            w = Windows(*(np.concatenate([getattr(p, f) for p in parts]) for f in WINDOW_FIELDS))
            rows = np.repeat(live, [len(p) for p in parts])
            bw = scorer.batch
            self._queue = iter(
                torch.as_tensor(
                    np.pad(rows[k : k + bw], (0, max(0, k + bw - rows.size))), device=self.d.device
                )
                for k in range(0, rows.size, bw)
            )
            with clock("score"):
                got = scorer.score(w)
            out.nll_sum, out.bytes, out.tokens = (
                out.nll_sum + got.nll_sum,
                out.bytes + got.bytes,
                out.tokens + got.tokens,
            )
            if got.token_nll:
                cut = np.cumsum([p.targets for p in parts])[:-1]
                for j, piece in zip(live, np.split(got.token_nll[0], cut), strict=True):
                    nll[j].append(piece)
            todo = [(j, c) for j, c in zip(live, cs, strict=True) if c < last]
            with clock.adapting(self.name):
                self._adapt(todo, bounds, chunks)
            for j, c in todo:
                self.until[j] = c + 1
        s = self._sum([out.nll_sum, out.bytes, out.tokens])
        total = ScoreTotals(nll_sum=s[0], bytes=int(round(s[1])), tokens=int(round(s[2])))
        if scorer.keep:
            mine = [x for parts in nll for x in parts]
            flat = np.concatenate(mine) if mine else np.zeros(0, dtype=np.float32)
            total.token_nll.append(self._gather(flat))
        return total

    def _gather(self, flat: np.ndarray) -> np.ndarray | None:
        """Every rank's NLLs on rank 0 in rank (= stream) order; None elsewhere."""
        if not self.d.distributed:
            return flat
        dev, ws = self.d.device, self.d.world_size
        sizes = [torch.zeros(1, dtype=torch.long, device=dev) for _ in range(ws)]
        dist.all_gather(sizes, torch.tensor([flat.size], device=dev))
        sizes = [int(s) for s in sizes]
        buf = torch.zeros(max(sizes), dtype=torch.float32, device=dev)
        buf[: flat.size] = torch.as_tensor(flat, device=dev)
        parts = [torch.empty_like(buf) for _ in range(ws)]
        dist.all_gather(parts, buf)
        got = [p[:n].cpu().numpy() for p, n in zip(parts, sizes, strict=True)]
        return np.concatenate(got) if self.d.is_main else None

    @torch.no_grad()
    def _reset(self, j: int) -> None:
        for lora in self.loras:
            lora.A[j] = lora.a0
            lora.B[j] = 0
        for s in self.sq:
            s[j] = 0
        self.t[j] = 0

    def _adapt(self, todo: list[tuple[int, int]], bounds, chunks) -> None:
        """One step per row j on its chunk c's targets of its document; reads no token >= c1."""
        spans = [(int(bounds[chunks[c][0]]), int(bounds[chunks[c][1]])) for _, c in todo]
        if not spans:
            return
        pos = np.concatenate([np.arange(c0, c1) for c0, c1 in spans])
        bos = (self.tokens[torch.as_tensor(pos, device=self.d.device)] == self.bos_id).cpu()
        bos, seqs = np.split(bos.numpy(), np.cumsum([c1 - c0 for c0, c1 in spans])[:-1]), []
        for (j, _), (c0, c1), hit in zip(todo, spans, bos, strict=True):
            if hit.any():
                self.doc[j] = c0 + np.flatnonzero(hit)[-1]
                self._reset(j)
                self.resets += 1
            t0 = max(c0, self.doc[j] + 1)
            if t0 < c1 and c1 - 1 - self.doc[j] >= self.cfg.ttt_lora_min_doc_tokens:
                seqs.append((j, *doc_train_starts(t0, c1, self.cfg.ttt_seq_len, self.doc[j])))
        if seqs:
            with trainable_only(self.model, []):
                self._step(seqs)

    def _step(self, seqs: list[tuple[int, np.ndarray, int]]) -> None:
        """Sum of each row's mean NLL over its sequences; clip and Adam per row."""
        cfg, dev = self.cfg, self.d.device
        rows = np.concatenate([np.full(s.size, j) for j, s, _ in seqs])
        starts = np.concatenate([s for _, s, _ in seqs])
        lens = np.concatenate([np.full(s.size, n) for _, s, n in seqs])
        tots = np.concatenate([np.full(s.size, s.size * n) for _, s, n in seqs])
        for p in self.params:
            p.grad = None
        m = cfg.ttt_micro_batch
        for i in range(0, starts.size, m):
            r, s, ln, tot = rows[i : i + m], starts[i : i + m], lens[i : i + m], tots[i : i + m]
            n = int(ln.max())
            if self.fixed:  # pad to m sequences (dummies: length 0) of a bucket length
                n, pad = next(b for b in self._lengths() if b >= n), m - r.size
                r, s = np.pad(r, (0, pad), mode="edge"), np.pad(s, (0, pad), mode="edge")
                ln, tot = np.pad(ln, (0, pad)), np.pad(tot, (0, pad), constant_values=1)
            idx = s[:, None] + np.minimum(np.arange(n + 1), ln[:, None])
            seq = self.tokens[torch.as_tensor(idx, device=dev)]
            self._set_rows(torch.as_tensor(r, device=dev))
            with autocast_ctx(dev, cfg.autocast_bf16):
                nll = self.forward(seq[:, :-1], seq[:, 1:], n)
            mask = torch.as_tensor(np.arange(n) < ln[:, None], device=dev)
            tot = torch.as_tensor(tot, dtype=torch.float32, device=dev)
            (torch.where(mask, nll.float(), 0.0).sum(1) / tot).sum().backward()
        self._adam(np.unique(rows))

    @torch.no_grad()
    def _adam(self, live: np.ndarray) -> None:
        """Adam (beta1 = 0) with gradient-norm clipping, on the rows in ``live`` only."""
        dev, shape = self.d.device, (-1, 1, 1)
        self.t[live] += 1
        on = torch.zeros(self.t.size, dtype=torch.bool)
        on[live] = True
        on = on.to(dev).view(shape)
        grads = [p.grad for p in self.params]
        if self.cfg.ttt_grad_clip > 0:
            norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]
            total = torch.linalg.vector_norm(torch.stack(norms, 1), dim=1)
            coef = torch.clamp(self.cfg.ttt_grad_clip / (total + 1e-6), max=1.0).view(shape)
            for g in grads:
                g.mul_(coef)
        bc = torch.as_tensor(np.sqrt(1 - BETA2 ** np.maximum(self.t, 1)), dtype=torch.float32)
        bc = bc.to(dev).view(shape)
        for p, g, sq in zip(self.params, grads, self.sq, strict=True):
            new = sq.mul(BETA2).addcmul_(g, g, value=1 - BETA2)
            step = p.addcdiv(g, (new.sqrt() / bc).add_(EPS), value=-self.cfg.ttt_lora_lr)
            sq.copy_(torch.where(on, new, sq))
            p.copy_(torch.where(on, step, p))
        self.steps_taken += live.size
        self.batches += 1

    def close(self) -> None:
        """Remove the hooks and restore fused attention: the model is the artifact's again."""
        for handle in self._handles:
            handle.remove()
        for attn, fused in self._fused.items():
            attn.fused_qkv = fused
