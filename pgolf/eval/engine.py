"""The evaluation loop: compile, then score chunk by chunk with score-first TTT in between.

    for each chunk (contiguous targets, in stream order):
        score every window whose scored targets lie in the chunk   (no gradients)
        if not the last chunk: adapt on the chunk's targets         (already scored)

With ``ttt="none"`` the whole stream is one chunk. The research mode adapts on every chunk
first and scores afterwards; it is the only path where a token is learned before scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from pgolf.config.eval import EvalConfig
from pgolf.data.bpb import ByteTable
from pgolf.eval.score import NllFn, Scorer, ScoreTotals, autocast_ctx, make_nll_fn
from pgolf.eval.ttt import TwoPhaseTTT
from pgolf.eval.windows import block_bounds, chunk_blocks, windows_for_blocks
from pgolf.runtime import Dist


@dataclasses.dataclass
class EvalResult:
    totals: ScoreTotals
    # Wall seconds per phase: compile (warm-up graphs), ttt (adaptation), score (no-grad).
    times: dict[str, float]
    chunks: int
    ttt_steps: int
    info: dict[str, Any]

    def token_nll(self) -> np.ndarray:
        """Per-target NLL in stream order (rank 0, when kept)."""
        parts = self.totals.token_nll
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class _Clock:
    """Accumulates wall time per phase; synchronises CUDA so async work lands in its phase."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times = device, {"compile": 0.0, "ttt": 0.0, "score": 0.0}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times[phase] += time.perf_counter() - t0


def make_forward(model: nn.Module, cfg: EvalConfig, device: torch.device) -> tuple[NllFn, bool]:
    """(NLL function, compiled?): torch.compile on GPU only; on CPU compiling costs more than
    the whole tiny eval."""
    if device.type != "cuda" or not cfg.compile:
        return make_nll_fn(model), False
    # Static graphs: 2 scoring shapes x 2 TTT parameter sets x ragged last TTT micro-batches;
    # the default limit of 8 could silently drop the tail of those to eager mode.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    return make_nll_fn(model, compile=True), True


def _warm_up(forward: NllFn, ttt: TwoPhaseTTT | None, cfg: EvalConfig, d: Dist) -> None:
    """Compile the scoring graph (and TTT graphs) on dummy tokens; takes no optimizer step."""
    dev = d.device
    x = torch.zeros(cfg.batch_windows, cfg.window, dtype=torch.long, device=dev)
    with torch.no_grad(), autocast_ctx(dev, cfg.autocast_bf16):
        for keep in {cfg.window, cfg.stride}:
            forward(x, x, keep)
    if ttt is None:
        return
    # The micro-batch a rank really runs on a full chunk (8 ranks share a chunk's sequences).
    seqs_per_chunk = math.ceil(cfg.ttt_chunk_tokens / cfg.ttt_seq_len)
    per_rank = math.ceil(seqs_per_chunk / d.world_size)
    micro = min(cfg.ttt_micro_batch, per_rank)
    seq = torch.zeros(micro, cfg.ttt_seq_len, dtype=torch.long, device=dev)
    for params in (ttt.p1, ttt.p2):
        ttt._only(params)
        with autocast_ctx(dev, cfg.autocast_bf16):
            forward(seq, seq, cfg.ttt_seq_len).float().sum().backward()
        ttt.model.zero_grad(set_to_none=True)
    for p in ttt.model.parameters():
        p.requires_grad_(True)


def run_eval(
    model: nn.Module,
    tokens: np.ndarray,
    table: ByteTable,
    cfg: EvalConfig,
    d: Dist,
    *,
    keep_token_nll: bool = False,
) -> EvalResult:
    """Score ``tokens`` (the val stream) with ``model`` under ``cfg``; same result on every rank."""
    dev = d.device
    model.to(dev).eval()
    stream = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=dev)
    forward, compiled = make_forward(model, cfg, dev)
    clock = _Clock(dev)
    scorer = Scorer(
        forward,
        stream,
        table.torch_tables(dev),
        window=cfg.window,
        stride=cfg.stride,
        batch_windows=cfg.batch_windows,
        d=d,
        bf16=cfg.autocast_bf16,
        keep_token_nll=keep_token_nll,
    )
    ttt = TwoPhaseTTT(model, forward, stream, cfg, d) if cfg.ttt != "none" else None
    if compiled:
        with clock("compile"):
            _warm_up(forward, ttt, cfg, d)

    bounds = block_bounds(stream.numel(), cfg.window, cfg.stride)
    windows = windows_for_blocks(bounds, cfg.window)
    chunks = chunk_blocks(bounds, cfg.ttt_chunk_tokens if ttt else None)
    totals = ScoreTotals()
    if cfg.ttt == "pre-train-on-val":
        with clock("ttt"):
            for _ in range(cfg.ttt_research_epochs):
                for i, (a, b) in enumerate(chunks):
                    ttt.adapt(i, int(bounds[a]), int(bounds[b]))
        with clock("score"):
            totals.add(scorer.score(windows))
    else:
        for i, (a, b) in enumerate(chunks):
            with clock("score"):
                totals.add(scorer.score(windows.slice(a, b)))
            if ttt is not None and i + 1 < len(chunks):
                with clock("ttt"):
                    ttt.adapt(i, int(bounds[a]), int(bounds[b]))
    info = ttt.trainable_counts if ttt else {}
    return EvalResult(totals, clock.times, len(chunks), ttt.steps_taken if ttt else 0, info)
