"""Per-document LoRA test-time training (leaderboard PR #1530), score-first.

Every chosen projection of every block gets a low-rank adapter, added to its output by a
forward hook (the model definition stays untouched): ``y + (x Aᵀ) Bᵀ`` with A [r, in]
uniform(±1/√in) and B [out, r] zero, so a fresh adapter changes nothing. After each chunk
is scored, one Adam step trains the adapters on the chunk's targets that belong to the
document being read, with context from that document only. When a new document starts
(a BOS among the scored tokens) the adapters and Adam's state are reset: each document
adapts from the artifact alone, so one odd document cannot drift the model for the next.

The document structure is found only in scored tokens (the chunk just scored), never by
scanning ahead. All ranks hold the same adapters (reset from one fixed seed) and share a
step's sequences, summing gradients like the two-phase mode.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from pgolf.config.eval import EvalConfig
from pgolf.eval.score import NllFn, rank_slice
from pgolf.eval.ttt import Adapter, StepRunner, trainable_only
from pgolf.eval.windows import train_starts
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
# Adapters are re-drawn from this seed at every reset, identically on every rank.
RESET_SEED = 1530


class LoRA(nn.Module):
    def __init__(self, linear: CastedLinear, rank: int) -> None:
        super().__init__()
        dev = linear.weight.device
        self.A = nn.Parameter(torch.empty(rank, linear.in_features, device=dev))
        self.B = nn.Parameter(torch.zeros(linear.out_features, rank, device=dev))
        self.active = True

    def reset(self, gen: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.A.size(1))
        with torch.no_grad():
            draw = torch.rand(self.A.shape, generator=gen) * (2 * bound) - bound
            self.A.copy_(draw)
            self.B.zero_()

    def hook(self, _module: nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return out
        x = inputs[0]
        return out + (x @ self.A.to(x.dtype).t()) @ self.B.to(x.dtype).t()


def doc_train_starts(t0: int, c1: int, seq_len: int, floor: int) -> tuple[np.ndarray, int]:
    """Like ``train_starts`` (targets [t0, c1), nothing later) with no input before ``floor``."""
    starts, length = train_starts(t0 - floor, c1 - floor, seq_len)
    return starts + floor, length


class LoraTTT(Adapter):
    """Adapters on ``model``; ``adapt`` after each scored chunk, ``close`` when done."""

    name = "lora"

    def __init__(
        self, model: nn.Module, forward: NllFn, tokens: torch.Tensor, cfg: EvalConfig, d: Dist
    ) -> None:
        self.model, self.tokens, self.cfg, self.d = model, tokens, cfg, d
        self.runner = StepRunner(forward, tokens, cfg, d)
        self.bos_id = model.cfg.bos_id
        self.loras: list[LoRA] = []
        self._handles = []
        for block in model.blocks:
            for target in cfg.lora_targets:
                linear = block.get_submodule(TARGET_PATHS[target])
                lora = LoRA(linear, cfg.ttt_lora_rank)
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
        self.doc_start = 0  # the current document's BOS position (0: the stream's start)
        self.resets = 0
        self._reset()

    @property
    def trainable_counts(self) -> dict[str, int]:
        return {
            "ttt_lora_params": sum(p.numel() for p in self.params),
            "ttt_lora_resets": self.resets - 1,  # document starts seen (the first is setup)
        }

    def _reset(self) -> None:
        gen = torch.Generator().manual_seed(RESET_SEED)
        for lora in self.loras:
            lora.reset(gen)
        self.opt = torch.optim.Adam(self.params, lr=self.cfg.ttt_lora_lr, betas=(0.0, 0.999))
        self.resets += 1

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """The base model alone (phased global SGD trains it without the current adapters)."""
        for lora in self.loras:
            lora.active = False
        try:
            yield
        finally:
            for lora in self.loras:
                lora.active = True

    def warm_up(self, micro: int) -> None:
        self.runner.warm_up(self.model, self.params, micro)

    def adapt(self, chunk: int, c0: int, c1: int) -> None:
        """One step on the current document's targets in [c0, c1); reads no token >= c1."""
        bos = torch.nonzero(self.tokens[c0:c1] == self.bos_id).flatten()
        if bos.numel():
            self.doc_start = c0 + int(bos[-1])
            self._reset()
        t0 = max(c0, self.doc_start + 1)
        scored_in_doc = c1 - 1 - self.doc_start
        if t0 >= c1 or scored_in_doc < self.cfg.ttt_lora_min_doc_tokens:
            return
        starts, length = doc_train_starts(t0, c1, self.cfg.ttt_seq_len, self.doc_start)
        a, b = rank_slice(starts.size, self.d)
        with trainable_only(self.model, []):
            self.runner.step(self.params, self.opt, starts[a:b], length, starts.size * length)

    def close(self) -> None:
        """Remove the hooks and restore fused attention: the model is the artifact's again."""
        for handle in self._handles:
            handle.remove()
        for attn, fused in self._fused.items():
            attn.fused_qkv = fused
