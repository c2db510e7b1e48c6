"""Phased global SGD on already-scored text (leaderboard PRs #1610, #1626), score-first.

The first ``ttt_phased_prefix_tokens`` targets (at most ``ttt_phased_prefix_max_frac`` of the
split's) are cut into ``ttt_phases`` equal parts.
When scoring has passed the end of part k, the evaluation pauses once and the whole model
trains with SGD + momentum for ``ttt_phased_epochs`` passes over *every* target scored so
far, then scoring resumes with the adapted model. Text after the prefix is only scored. PR
#1626 measured 3 phases 0.0008 bpb better than 1; more phases overfit the small early parts.

A pause falls on the first chunk edge at or after its boundary (chunks are whole stride
blocks), so it trains on the targets [1, c1) of that chunk edge: all scored, none later.
Each step takes ``ttt_phased_batch_seqs`` sequences over all ranks, split contiguously;
gradients are summed like the two-phase mode, so every rank stays identical.
"""

from __future__ import annotations

import torch
from torch import nn

from pgolf.config.eval import EvalConfig
from pgolf.eval.score import NllFn, rank_slice
from pgolf.eval.ttt import Adapter, StepRunner, trainable_only
from pgolf.eval.windows import train_starts
from pgolf.runtime import Dist


class PhasedSGD(Adapter):
    name = "phased"

    def __init__(
        self, model: nn.Module, forward: NllFn, tokens: torch.Tensor, cfg: EvalConfig, d: Dist
    ) -> None:
        self.model, self.cfg, self.d = model, cfg, d
        self.runner = StepRunner(forward, tokens, cfg, d)
        self.params = list(model.parameters())
        self.opt = torch.optim.SGD(
            self.params, lr=cfg.ttt_phased_lr, momentum=cfg.ttt_phased_momentum
        )
        n = cfg.ttt_phases
        self.prefix = cfg.ttt_phased_prefix_tokens
        if cfg.ttt_phased_prefix_max_frac < 1:  # 1 = no cap: the prefix may pass the split
            cap = int(cfg.ttt_phased_prefix_max_frac * (tokens.numel() - 1))
            self.prefix = max(1, min(self.prefix, cap))
        # Target positions (exclusive ends) after which a pause is due; targets start at 1.
        self.boundaries = [1 + self.prefix * k // n for k in range(1, n + 1)]
        self.pauses_done = 0

    @property
    def trainable_counts(self) -> dict[str, int]:
        return {
            "ttt_phased_params": sum(p.numel() for p in self.params),
            "ttt_phased_pauses": self.pauses_done,
            "ttt_phased_prefix_used": self.prefix,
        }

    def warm_up(self, micro: int) -> None:
        self.runner.warm_up(self.model, self.params, micro)

    def adapt(self, chunk: int, c0: int, c1: int) -> None:
        """Train on targets [1, c1) once per boundary this chunk edge has reached."""
        due = sum(1 for b in self.boundaries if b <= c1) - self.pauses_done
        if due <= 0:
            return
        # Several boundaries inside one chunk make one pause: the data would be the same.
        self.pauses_done += due
        starts, length = train_starts(1, c1, self.cfg.ttt_seq_len)
        batch = self.cfg.ttt_phased_batch_seqs
        with trainable_only(self.model, self.params):
            for _ in range(self.cfg.ttt_phased_epochs):
                for i in range(0, starts.size, batch):
                    part = starts[i : i + batch]
                    a, b = rank_slice(part.size, self.d)
                    self.runner.step(self.params, self.opt, part[a:b], length, part.size * length)
