"""Muon: momentum SGD whose update is orthogonalized by a Newton-Schulz iteration.

Matrices of one shape are stacked and orthogonalized in one batched call (fewer kernel
launches: the default model has 68 matrices but 8 shapes). With several ranks, gradients
are already averaged, so every rank updates all momentum buffers (cheap, elementwise)
but orthogonalizes only its slice of each stack; an all-gather then hands everyone the
full update. Optimizer state stays identical on every rank, so rank 0 can save it alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

# Quintic coefficients from Keller Jordan's Muon: they push singular values into roughly
# [0.7, 1.2] in 5 steps, which trains as well as an exact polar factor and is much cheaper.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximate orthogonal factor U V^T of each matrix in a [n, rows, cols] stack.

    Runs in bf16 on CUDA (tensor cores; the iteration tolerates it) and in fp32 on CPU,
    where bf16 matmuls are slow and its rounding would make CPU runs (tests comparing
    1 process with 2) differ by far more than summation order.
    """
    a, b, c = NS_COEFFS
    x = g.bfloat16() if g.is_cuda else g.float()
    transposed = x.size(-2) > x.size(-1)
    if transposed:  # iterate on the short side: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


class Muon:
    def __init__(
        self,
        named_params: list[tuple[str, nn.Parameter]],
        *,
        lr: float,
        weight_decay: float,
        nesterov: bool,
        ns_steps: int,
        rank: int = 0,
        world_size: int = 1,
        compile: bool = False,
    ) -> None:
        self.lr, self.weight_decay, self.nesterov, self.ns_steps = (
            lr,
            weight_decay,
            nesterov,
            ns_steps,
        )
        self.rank, self.world = rank, world_size
        self.names = [n for n, _ in named_params]
        self.params = {n: p for n, p in named_params}
        self.momentum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named_params}
        groups: dict[tuple[int, ...], list[str]] = {}
        for n, p in named_params:
            assert p.ndim == 2, f"Muon takes matrices, {n} has shape {tuple(p.shape)}"
            groups.setdefault(tuple(p.shape), []).append(n)
        self.groups = list(groups.values())
        self._ns: Callable[[torch.Tensor, int], torch.Tensor] = newton_schulz
        if compile:
            self._ns = torch.compile(newton_schulz, fullgraph=True, dynamic=False)

    @torch.no_grad()
    def step(self, lr_scale: float, momentum: float) -> None:
        lr = self.lr * lr_scale
        for names in self.groups:
            params = [self.params[n] for n in names]
            bufs = [self.momentum[n] for n in names]
            grads = [
                p.grad.float() if p.grad is not None else torch.zeros_like(b)
                for p, b in zip(params, bufs, strict=True)
            ]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
            if self.nesterov:
                grads = torch._foreach_add(grads, bufs, alpha=momentum)
            else:
                grads = bufs
            update = self._orthogonalize(torch.stack(grads))
            rows, cols = params[0].shape
            # Scale so that every shape gets the same per-element RMS step (tall matrices).
            scale = -lr * math.sqrt(max(1.0, rows / cols))
            if self.weight_decay:
                torch._foreach_mul_(params, 1.0 - lr * self.weight_decay)
            torch._foreach_add_(params, list(update.to(params[0].dtype).unbind(0)), alpha=scale)

    def _orthogonalize(self, stack: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return self._ns(stack, self.ns_steps)
        n = stack.size(0)
        per = math.ceil(n / self.world)
        pad = per * self.world - n
        if pad:
            stack = torch.cat((stack, stack.new_zeros(pad, *stack.shape[1:])))
        mine = self._ns(stack[self.rank * per : (self.rank + 1) * per], self.ns_steps)
        parts = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(parts, mine.contiguous())
        return torch.cat(parts)[:n]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"muon.{n}": b for n, b in self.momentum.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n, b in self.momentum.items():
            b.copy_(tensors[f"muon.{n}"])


def momentum_at(step: int, start: float, end: float, warmup_steps: int) -> float:
    """Linear momentum ramp start -> end over warmup_steps, then constant."""
    if warmup_steps <= 0:
        return end
    frac = min(1.0, step / warmup_steps)
    return start + frac * (end - start)
