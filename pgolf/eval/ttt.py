"""Score-first test-time training: learn only from val tokens that are already scored.

Two phases, chosen per chunk (pgolf.config.eval.EvalConfig.phase1_on / phase2_on):

* Phase 1, recalibration: only the control tensors (norms, gains, scales, residual mixes,
  skip weights, smear gate; ~22 K parameters on the default model) train, with Adam. They
  absorb most of the damage that int5/int6 rounding does to the big matrices, cheaply.
* Phase 2, adaptation: the last K blocks + control tensors + the tied embedding/head train
  with SGD + momentum, adapting the model to the text it is reading.

All ranks hold one model: each computes gradients on its share of the chunk's training
sequences, gradients are summed with one all-reduce of a flat buffer and normalised by the
chunk's total target count, so every rank takes the same step and the result does not
depend on the world size beyond floating-point noise. Optimizer state persists across
chunks (adaptation accumulates); nothing is ever restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pgolf.config.eval import EvalConfig
from pgolf.eval.score import NllFn, autocast_ctx, rank_slice
from pgolf.eval.windows import train_starts
from pgolf.model import param_groups
from pgolf.runtime import Dist

HEAD_NAMES = ("tok_emb.weight", "head.weight")


def control_params(model: nn.Module) -> list[nn.Parameter]:
    """Norms, gains, scales, mixes, skip weights, gates: the model's own "control" role."""
    return [p for _, p in param_groups(model)["control"]]


def phase2_params(model: nn.Module, last_blocks: int) -> list[nn.Parameter]:
    """Last K blocks + every control tensor + the tied embedding/head, without duplicates."""
    chosen: dict[int, nn.Parameter] = {}
    blocks = list(model.blocks)[-last_blocks:] if last_blocks else []
    for block in blocks:
        chosen.update((id(p), p) for p in block.parameters())
    chosen.update((id(p), p) for p in control_params(model))
    for name, p in model.named_parameters():
        if name in HEAD_NAMES:
            chosen[id(p)] = p
    return list(chosen.values())


@contextlib.contextmanager
def trainable_only(model: nn.Module, params: list) -> Iterator[None]:
    """Only ``params`` of ``model`` take gradients inside; every flag is restored afterwards.

    Parameters outside the model (LoRA adapters) keep their own flag. The model stays in
    eval mode: train-mode switches (e.g. QAT fake-quant) must not change what is adapted;
    these models have no dropout.
    """
    flags = [p.requires_grad for p in model.parameters()]
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def all_reduce_grads(params: list, d: Dist) -> None:
    """Sum gradients over ranks with one flat all-reduce, so every rank takes the same step."""
    for p in params:
        if p.grad is None:  # a rank with no sequences still joins the all-reduce
            p.grad = torch.zeros_like(p)
    if not d.distributed:
        return
    flat = torch.cat([p.grad.reshape(-1).float() for p in params])
    dist.all_reduce(flat)
    i = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[i : i + n].view_as(p.grad))
        i += n


class StepRunner:
    """One optimizer step over training sequences of the val stream, shared by every mode.

    Every TTT read of the val stream happens in ``step`` (``tokens[starts + offsets]``), so
    the token-read audit in tests/test_ttt_legality.py sees exactly what each step learns from.
    """

    def __init__(self, forward: NllFn, tokens: torch.Tensor, cfg: EvalConfig, d: Dist) -> None:
        self.forward, self.tokens, self.cfg, self.d = forward, tokens, cfg, d
        self.steps_taken = 0
        self._offsets = torch.arange(cfg.ttt_seq_len + 1, device=tokens.device)

    def step(self, params, opt, starts: np.ndarray, length: int, total: int) -> None:
        """Gradients of this rank's ``starts`` (sequences of ``length``), summed over ranks and
        divided by ``total`` (targets on all ranks), clipped, then one ``opt`` step."""
        opt.zero_grad(set_to_none=False)
        offsets = self._offsets[: length + 1]
        dev = self.tokens.device
        for i in range(0, starts.size, self.cfg.ttt_micro_batch):
            s = torch.as_tensor(starts[i : i + self.cfg.ttt_micro_batch], device=dev)
            seq = self.tokens[s[:, None] + offsets]
            with autocast_ctx(dev, self.cfg.autocast_bf16):
                nll = self.forward(seq[:, :-1], seq[:, 1:], length)
            (nll.float().sum() / total).backward()
        all_reduce_grads(params, self.d)
        if self.cfg.ttt_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.ttt_grad_clip)
        opt.step()
        self.steps_taken += 1

    def warm_up(self, model: nn.Module, params: list, micro: int) -> None:
        """Compile the TTT forward/backward for ``params`` on dummy tokens; no step is taken."""
        dev, n = self.tokens.device, self.cfg.ttt_seq_len
        seq = torch.zeros(micro, n, dtype=torch.long, device=dev)
        with trainable_only(model, params), autocast_ctx(dev, self.cfg.autocast_bf16):
            self.forward(seq, seq, n).float().sum().backward()
        model.zero_grad(set_to_none=True)
        for p in params:
            p.grad = None


class Adapter:
    """What every TTT mode shares: a StepRunner (``self.runner``) that counts its steps."""

    runner: StepRunner

    @property
    def steps_taken(self) -> int:
        return self.runner.steps_taken


class TwoPhaseTTT(Adapter):
    """Adapts ``model`` in place on already-scored targets; call ``adapt`` after each chunk."""

    name = "two_phase"

    def __init__(
        self,
        model: nn.Module,
        forward: NllFn,
        tokens: torch.Tensor,
        cfg: EvalConfig,
        d: Dist,
    ) -> None:
        self.model, self.cfg, self.d = model, cfg, d
        self.runner = StepRunner(forward, tokens, cfg, d)
        self.p1 = control_params(model)
        self.p2 = phase2_params(model, cfg.ttt_phase2_blocks)
        self.opt1 = torch.optim.Adam(self.p1, lr=cfg.ttt_phase1_lr) if self.p1 else None
        self.opt2 = torch.optim.SGD(self.p2, lr=cfg.ttt_phase2_lr, momentum=cfg.ttt_phase2_momentum)

    @property
    def trainable_counts(self) -> dict[str, int]:
        return {
            "ttt_phase1_params": sum(p.numel() for p in self.p1),
            "ttt_phase2_params": sum(p.numel() for p in self.p2),
        }

    def warm_up(self, micro: int) -> None:
        for params in (self.p1, self.p2):
            self.runner.warm_up(self.model, params, micro)

    def adapt(self, chunk: int, c0: int, c1: int) -> None:
        """Learn from targets [c0, c1) (and earlier context); never reads a token >= c1."""
        if self.cfg.phase1_on(chunk) and self.opt1 is not None:
            self._run(self.p1, self.opt1, self.cfg.ttt_phase1_steps, c0, c1)
        if self.cfg.phase2_on(chunk):
            self._run(self.p2, self.opt2, self.cfg.ttt_phase2_steps, c0, c1)

    def _run(self, params: list, opt: torch.optim.Optimizer, steps: int, c0: int, c1: int) -> None:
        starts, length = train_starts(c0, c1, self.cfg.ttt_seq_len)
        a, b = rank_slice(starts.size, self.d)
        with trainable_only(self.model, params):
            for _ in range(steps):
                # Divide by the chunk's total (all ranks) so summed gradients are the chunk mean.
                self.runner.step(params, opt, starts[a:b], length, starts.size * length)
