"""The evaluation loop: compile, then score chunk by chunk with score-first TTT in between.

    for each chunk (contiguous targets, in stream order):
        score every window whose scored targets lie in the chunk   (no gradients)
        if not the last chunk: adapt on the chunk's targets         (already scored)

With ``ttt="none"`` the whole stream is one chunk. The research mode adapts on every chunk
first and scores afterwards; it is the only path where a token is learned before scored.

A TTT mode is a list of *adapters* (two-phase; per-document LoRA; phased global SGD; or
LoRA + phased) that each learn after every scored chunk, in order. Their wall time is
reported in total (``ttt``) and per adapter (``ttt_NAME``).
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
from pgolf.eval.score import (
    NllFn,
    Scorer,
    ScoreTotals,
    autocast_ctx,
    make_logits_fn,
    make_nll_fn,
)
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
    def adapting(self, name: str) -> Iterator[None]:
        """Time one adapter's work under both ``ttt`` and ``ttt_NAME``."""
        self.times.setdefault(f"ttt_{name}", 0.0)
        with self("ttt"), self(f"ttt_{name}"):
            yield

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.times[phase] += time.perf_counter() - t0


def device_stream(tokens: np.ndarray, device: torch.device) -> torch.Tensor:
    """The val stream on the device: the one tensor every scoring and TTT read indexes, so
    tests/test_ttt_legality.py wraps this function to audit which tokens TTT reads."""
    return torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=device)


def make_forward(model: nn.Module, cfg: EvalConfig, device: torch.device) -> tuple[NllFn, bool]:
    """(NLL function, compiled?): torch.compile on GPU only; on CPU compiling costs more than
    the whole tiny eval."""
    if device.type != "cuda" or not cfg.compile:
        return make_nll_fn(model), False
    # Static graphs: 2 scoring shapes x 2 TTT parameter sets x ragged last TTT micro-batches;
    # the default limit of 8 could silently drop the tail of those to eager mode.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if cfg.compile_scope == "blocks":
        if not hasattr(model, "compile_blocks"):
            raise ValueError(
                "eval.compile_scope=blocks needs pgolf's GPT (compile_blocks()); "
                "set eval.compile_scope=model for this model"
            )
        model.compile_blocks()
        return make_nll_fn(model), True
    if cfg.compile_scope == "nested" and hasattr(model, "nest_blocks"):
        model.nest_blocks()
    return make_nll_fn(model, compile=True), True


def make_adapters(
    model: nn.Module, forward: NllFn, stream: torch.Tensor, cfg: EvalConfig, d: Dist
) -> list:
    """The mode's adapters in the order they learn after a chunk (LoRA, then global SGD)."""
    if cfg.ttt in ("two-phase", "pre-train-on-val"):
        return [TwoPhaseTTT(model, forward, stream, cfg, d)]
    # Imported here: an exported train_gpt.py carries (and counts) only the modes it runs.
    adapters: list = []
    if cfg.uses_lora:
        from pgolf.eval.ttt_lora import LoraTTT

        adapters.append(LoraTTT(model, forward, stream, cfg, d))
    if cfg.uses_phased:
        from pgolf.eval.ttt_phased import PhasedSGD

        adapters.append(PhasedSGD(model, forward, stream, cfg, d))
    return adapters


def _adapt(adapters: list, clock: _Clock, chunk: int, c0: int, c1: int) -> None:
    for adapter in adapters:
        with clock.adapting(adapter.name):
            adapter.adapt(chunk, c0, c1)


def make_tilt(
    model: nn.Module, stream: torch.Tensor, vocab: int, cfg: EvalConfig, compiled: bool
) -> tuple[Any, Any]:
    """(NgramTilt, logits function) when ``eval.ngram_tilt`` is on, else (None, None)."""
    if not cfg.ngram_tilt:
        return None, None
    # Imported here: an exported train_gpt.py carries (and counts) it only when switched on.
    from pgolf.eval.ngram import NgramTilt

    tilt = NgramTilt(
        stream,
        vocab,
        order=cfg.ngram_order,
        lam=cfg.ngram_lambda,
        table_bits=cfg.ngram_table_bits,
        min_count=cfg.ngram_min_count,
    )
    # Under compile_scope "blocks" the model's own parts are compiled already.
    whole = compiled and cfg.compile_scope != "blocks"
    return tilt, make_logits_fn(model, compile=whole)


def _warm_up(
    forward: NllFn, adapters: list, cfg: EvalConfig, d: Dist, logits_fn: Any = None
) -> None:
    """Compile the scoring graph (and TTT graphs) on dummy tokens; takes no optimizer step."""
    dev = d.device
    x = torch.zeros(cfg.batch_windows, cfg.window, dtype=torch.long, device=dev)
    with torch.no_grad(), autocast_ctx(dev, cfg.autocast_bf16):
        for keep in {cfg.window, cfg.stride}:
            if logits_fn is not None:
                logits_fn(x, keep)
            else:
                forward(x, x, keep)
    if not adapters:
        return
    # The micro-batch a rank really runs on a full chunk (8 ranks share a chunk's sequences).
    seqs_per_chunk = math.ceil((cfg.chunk_tokens() or 1) / cfg.ttt_seq_len)
    per_rank = math.ceil(seqs_per_chunk / d.world_size)
    micro = min(cfg.ttt_micro_batch, per_rank)
    for adapter in adapters:
        adapter.warm_up(micro)


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
    stream = device_stream(tokens, dev)
    forward, compiled = make_forward(model, cfg, dev)
    clock = _Clock(dev)
    vocab = getattr(model, "vocab_size", table.vocab_size)
    tilt, logits_fn = make_tilt(model, stream, vocab, cfg, compiled)
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
        tilt=tilt,
        logits_fn=logits_fn,
    )
    adapters = make_adapters(model, forward, stream, cfg, d) if cfg.ttt != "none" else []
    try:
        if compiled:
            with clock("compile"):
                _warm_up(forward, adapters, cfg, d, logits_fn)
        totals, n_chunks = _score_and_adapt(scorer, adapters, stream.numel(), cfg, clock)
    finally:
        for adapter in adapters:
            if hasattr(adapter, "close"):
                adapter.close()
    info: dict[str, Any] = model.kernels(dev.type) if hasattr(model, "kernels") else {}
    for adapter in adapters:
        info.update(adapter.trainable_counts)
    info.update({f"time_{k}_s": v for k, v in clock.times.items() if k.startswith("ttt_")})
    if tilt is not None:
        # Part of time_score_s (the tilt runs inside scoring), reported on its own.
        info["time_ngram_s"] = scorer.tilt_seconds
        hits = tilt.hits.clone()
        if d.distributed:
            torch.distributed.all_reduce(hits)
        info["ngram_hits"] = int(hits)
    steps = sum(a.steps_taken for a in adapters)
    return EvalResult(totals, clock.times, n_chunks, steps, info)


def _score_and_adapt(
    scorer: Scorer, adapters: list, n_tokens: int, cfg: EvalConfig, clock: _Clock
) -> tuple[ScoreTotals, int]:
    bounds = block_bounds(n_tokens, cfg.window, cfg.stride)
    windows = windows_for_blocks(bounds, cfg.window)
    chunks = chunk_blocks(bounds, cfg.chunk_tokens())
    if adapters and adapters[0].name == "lora":  # documents side by side (ttt_lora.py)
        totals = adapters[0].score_and_adapt(scorer, bounds, windows, chunks, adapters, clock)
        return totals, len(chunks)
    totals = ScoreTotals()
    if cfg.ttt == "pre-train-on-val":
        for _ in range(cfg.ttt_research_epochs):
            for i, (a, b) in enumerate(chunks):
                _adapt(adapters, clock, i, int(bounds[a]), int(bounds[b]))
        with clock("score"):
            totals.add(scorer.score(windows))
        return totals, len(chunks)
    for i, (a, b) in enumerate(chunks):
        with clock("score"):
            totals.add(scorer.score(windows.slice(a, b)))
        if i + 1 < len(chunks):
            _adapt(adapters, clock, i, int(bounds[a]), int(bounds[b]))
    return totals, len(chunks)
