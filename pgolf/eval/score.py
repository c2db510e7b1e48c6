"""Sliding-window scoring: per-token NLL and exact bytes for a set of windows, over ranks.

Each call splits its windows contiguously across ranks; every rank runs fixed-shape
batches [batch_windows, W] (the last one padded with empty rows, so a compiled graph never
recompiles), keeps only the scored rows' NLL, and sums NLL in fp64 and bytes as integers.
One fp64 all-reduce combines the ranks (integers stay exact below 2**53). Per-token NLLs,
when asked for, are gathered onto rank 0 in stream order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pgolf.data.bpb import target_bytes_torch
from pgolf.eval.windows import Windows
from pgolf.runtime import Dist

# nll_fn(input_ids [B, T], target_ids [B, T], keep) -> fp32 NLL of the last ``keep`` positions.
NllFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def make_nll_fn(model: nn.Module, compile: bool = False) -> NllFn:
    """Per-token NLL of the last ``keep`` positions, compiled with static shapes on request.

    Later windows score only their last S positions, so when the model exposes
    ``hidden``/``logits`` the head and the fp32 log-softmax run on those positions alone
    (with V=1024, W=2048 the full fp32 logits are 8 MiB per window). Other models fall
    back to the full ``model(x, y, reduction="none")``.
    """
    if hasattr(model, "hidden") and hasattr(model, "logits"):

        def nll_fn(x: torch.Tensor, y: torch.Tensor, keep: int) -> torch.Tensor:
            return _plain_nll(_last_logits(model, x, keep), y[:, -keep:])

    else:

        def nll_fn(x: torch.Tensor, y: torch.Tensor, keep: int) -> torch.Tensor:
            return model(x, y, reduction="none").float()[:, -keep:]

    return torch.compile(nll_fn, dynamic=False) if compile else nll_fn


def make_logits_fn(model: nn.Module, compile: bool = False) -> Callable:
    """fp32 logits [B, keep, V] of the last ``keep`` positions (the n-gram tilt needs the whole
    distribution, not only the target's NLL)."""
    if not (hasattr(model, "hidden") and hasattr(model, "logits")):
        raise ValueError(
            "eval.ngram_tilt needs a model with hidden()/logits() (pgolf's GPT); "
            "set eval.ngram_tilt=false for this model"
        )

    def logits_fn(x: torch.Tensor, keep: int) -> torch.Tensor:
        return _last_logits(model, x, keep)

    return torch.compile(logits_fn, dynamic=False) if compile else logits_fn


def _last_logits(model: nn.Module, x: torch.Tensor, keep: int) -> torch.Tensor:
    return model.logits(model.hidden(x)[:, -keep:]).float()


def _plain_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-target NLL, shaped like ``y``: what ``make_nll_fn`` scores, and what the n-gram
    tilt starts from (so a zero tilt gives the plain score)."""
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
    return flat.view(y.shape)


@dataclasses.dataclass
class ScoreTotals:
    """Running sums over every rank; ``token_nll`` (rank 0, stream order) only when kept."""

    nll_sum: float = 0.0
    bytes: int = 0
    tokens: int = 0
    token_nll: list[np.ndarray] = dataclasses.field(default_factory=list)

    def add(self, other: ScoreTotals) -> None:
        self.nll_sum += other.nll_sum
        self.bytes += other.bytes
        self.tokens += other.tokens
        self.token_nll.extend(other.token_nll)

    @property
    def val_loss(self) -> float:
        return self.nll_sum / max(self.tokens, 1)

    @property
    def val_bpb(self) -> float:
        return self.nll_sum / np.log(2.0) / max(self.bytes, 1)


def rank_slice(n: int, d: Dist) -> tuple[int, int]:
    """Contiguous share [a, b) of n items for this rank (sizes differ by at most one)."""
    return n * d.rank // d.world_size, n * (d.rank + 1) // d.world_size


def autocast_ctx(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Scorer:
    """Scores windows of one token stream held on the device."""

    def __init__(
        self,
        nll_fn: NllFn,
        tokens: torch.Tensor,
        tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        *,
        window: int,
        stride: int,
        batch_windows: int,
        d: Dist,
        bf16: bool = True,
        keep_token_nll: bool = False,
        tilt: Any = None,
        logits_fn: Callable | None = None,
    ) -> None:
        self.nll_fn = nll_fn
        # Optional n-gram tilt (pgolf.eval.ngram.NgramTilt) and the logits function it needs;
        # ``tilt_seconds`` is its share of the scoring time.
        self.tilt, self.logits_fn, self.tilt_seconds = tilt, logits_fn, 0.0
        self.tokens = tokens  # int64 [N] on the device
        self.tables = tables
        self.window = window
        self.stride = stride
        self.batch = batch_windows
        self.d = d
        self.bf16 = bf16
        self.keep = keep_token_nll
        self._offsets = torch.arange(window + 1, device=tokens.device)

    def keep_for(self, w: Windows) -> int:
        """Positions the batch needs: the last S, or all W when it holds block 0 (two graphs)."""
        tail = self.window - self.stride
        return self.stride if len(w) == 0 or int(w.lo.min()) >= tail else self.window

    def _batch(self, w: Windows) -> tuple[torch.Tensor, ...]:
        """Inputs, targets [batch, W], the scored-row mask and each row's target position;
        missing rows are empty."""
        dev = self.tokens.device
        pad = self.batch - len(w)
        starts = torch.as_tensor(np.pad(w.starts, (0, pad)), device=dev)
        # Padding rows score nothing: lo = hi = W.
        lo = torch.as_tensor(np.pad(w.lo, (0, pad), constant_values=self.window), device=dev)
        hi = torch.as_tensor(np.pad(w.hi, (0, pad), constant_values=self.window), device=dev)
        idx = (starts[:, None] + self._offsets).clamp_max(self.tokens.numel() - 1)
        seq = self.tokens[idx]
        rows = self._offsets[None, :-1]
        mask = (rows >= lo[:, None]) & (rows < hi[:, None])
        return seq[:, :-1], seq[:, 1:], mask, idx[:, 1:]

    @torch.no_grad()
    def _local(self, w: Windows) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp64 [nll_sum, bytes, tokens], scored NLLs in stream order) for this rank's windows."""
        dev = self.tokens.device
        sums = torch.zeros(3, dtype=torch.float64, device=dev)
        kept = []
        for a in range(0, len(w), self.batch):
            part = w.slice(a, a + self.batch)
            keep = self.keep_for(part)
            x, y, mask, pos = self._batch(part)
            if self.tilt is None:
                with autocast_ctx(dev, self.bf16):
                    nll = self.nll_fn(x, y, keep)
            else:
                with autocast_ctx(dev, self.bf16):
                    logits = self.logits_fn(x, keep)
                nll = self._tilted(logits, y[:, -keep:], mask[:, -keep:], pos[:, -keep:], part)
            x, y, mask = x[:, -keep:], y[:, -keep:], mask[:, -keep:]
            nll = nll.float()
            # Masked sums instead of boolean indexing: no host sync per batch on GPU.
            nbytes = target_bytes_torch(self.tables, x, y)
            sums[0] += torch.where(mask, nll, 0.0).sum(dtype=torch.float64)
            sums[1] += torch.where(mask, nbytes, 0).sum(dtype=torch.float64)
            sums[2] += mask.sum(dtype=torch.float64)
            if self.keep:
                kept.append(nll[mask])
        flat = torch.cat(kept) if kept else torch.zeros(0, device=dev)
        return sums, flat

    def _tilted(self, logits, y, mask, pos, part: Windows) -> torch.Tensor:
        nll = _plain_nll(logits, y)
        if nll.device.type == "cuda":  # the forward's async work stays out of time_ngram_s
            torch.cuda.synchronize(nll.device)
        t0 = time.perf_counter()
        first = int(part.starts[0] + part.lo[0] + 1)  # windows are in stream order
        nll = self.tilt.tilt(nll, logits, y, pos, mask, first)
        if nll.device.type == "cuda":
            torch.cuda.synchronize(nll.device)
        self.tilt_seconds += time.perf_counter() - t0
        return nll

    def score(self, windows: Windows) -> ScoreTotals:
        """Score ``windows`` (in stream order) across all ranks; identical totals on every rank."""
        a, b = rank_slice(len(windows), self.d)
        sums, nll = self._local(windows.slice(a, b))
        if self.d.distributed:
            dist.all_reduce(sums)
            nll = self._gather(windows, nll) if self.keep else nll
        s = sums.tolist()
        out = ScoreTotals(nll_sum=s[0], bytes=int(round(s[1])), tokens=int(round(s[2])))
        assert out.tokens == windows.targets, (out.tokens, windows.targets)
        if self.keep and self.d.is_main:
            out.token_nll.append(nll.cpu().numpy())
        return out

    def _gather(self, windows: Windows, nll: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's NLLs in rank (= stream) order; sizes are known up front."""
        ws = self.d.world_size
        sizes = [windows.slice(*rank_slice(len(windows), Dist(r, ws))).targets for r in range(ws)]
        buf = torch.zeros(max(sizes), dtype=nll.dtype, device=nll.device)
        buf[: nll.numel()] = nll
        parts = [torch.empty_like(buf) for _ in range(ws)]
        dist.all_gather(parts, buf)
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])
