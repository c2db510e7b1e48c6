"""Weight averaging: EMA every step, or tight SWA (uniform average of late snapshots).

Both keep fp32 copies on the training device; the checkpoint holds their average.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """shadow <- d_t * shadow + (1 - d_t) * weights after optimizer step t.

    d_t = min(decay, (1 + t) / (10 + t)): the warmup forgets the random init quickly, so a
    run of a few hundred steps still averages trained weights (measured on an H100: 76
    steps at a flat 0.997 gave val_bpb 3.56 for the EMA against 2.00 for the raw weights).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for _, p in model.named_parameters()]

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay_at(step))

    def average(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t for n, t in zip(self.names, self.shadow, strict=True)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n, t in zip(self.names, self.shadow, strict=True):
            t.copy_(tensors[f"ema.{n}"])


class SWA:
    """Sum of snapshots taken every ``every`` steps once the lr scale is below ``threshold``.

    "Tight" SWA: only the low-lr tail is averaged, where the iterates sit in one basin.
    """

    def __init__(self, model: nn.Module, every: int, threshold: float) -> None:
        self.every, self.threshold = every, threshold
        self.names = [n for n, _ in model.named_parameters()]
        self.total = [torch.zeros_like(p, dtype=torch.float32) for p in model.parameters()]
        self.count = 0

    @torch.no_grad()
    def maybe_update(self, model: nn.Module, step: int, lr_scale: float) -> bool:
        if lr_scale >= self.threshold or step % self.every:
            return False
        torch._foreach_add_(self.total, [p.detach().float() for p in model.parameters()])
        self.count += 1
        return True

    def average(self) -> dict[str, torch.Tensor] | None:
        """Mean of the snapshots, or None before the first one."""
        if not self.count:
            return None
        return {n: t / self.count for n, t in zip(self.names, self.total, strict=True)}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"swa.{n}": t for n, t in zip(self.names, self.total, strict=True)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        for n, t in zip(self.names, self.total, strict=True):
            t.copy_(tensors[f"swa.{n}"])
        self.count = count


def averaged_weights(
    model: nn.Module, ema: EMA | None, swa: SWA | None
) -> tuple[dict[str, torch.Tensor], str]:
    """(weights the checkpoint should hold, which average they are)."""
    if ema is not None:
        return ema.average(), "ema"
    if swa is not None and swa.count:
        return swa.average(), f"swa({swa.count})"
    return {n: p.detach().float() for n, p in model.named_parameters()}, "none"
