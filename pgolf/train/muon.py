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

Coefficient = tuple[float, float, float]

# Quintic coefficients from Keller Jordan's Muon: they push singular values into roughly
# [0.7, 1.2] in 5 steps, which trains as well as an exact polar factor and is much cheaper.
NS_COEFFS: Coefficient = (3.4445, -4.7750, 2.0315)

# Polar Express (Amsel et al. 2025, arXiv:2505.16932): one minimax-optimal quintic per
# iteration, each tuned to the singular-value interval the previous one leaves, so 5 steps
# land much closer to 1 than 5 fixed quintics. These are the paper's published values for
# 5 steps on bf16 (safety factor 1.01), as used by leaderboard PRs #1344 / #1787.
POLAR_EXPRESS: tuple[Coefficient, ...] = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
NS_SCHEDULES: dict[str, tuple[Coefficient, ...]] = {
    "quintic": (NS_COEFFS,),
    "polar_express": POLAR_EXPRESS,
}


def ns_coefficients(name: str, steps: int) -> tuple[Coefficient, ...]:
    """(a, b, c) of each iteration; past the table's end its last (converged) tuple repeats."""
    table = NS_SCHEDULES[name]
    return tuple(table[min(i, len(table) - 1)] for i in range(steps))


def newton_schulz(g: torch.Tensor, steps: int, coeffs: str = "quintic") -> torch.Tensor:
    """Approximate orthogonal factor U V^T of each matrix in a [n, rows, cols] stack.

    Runs in bf16 on CUDA (tensor cores; the iteration tolerates it) and in fp32 on CPU,
    where bf16 matmuls are slow and its rounding would make CPU runs (tests comparing
    1 process with 2) differ by far more than summation order.
    """
    x = g.bfloat16() if g.is_cuda else g.float()
    transposed = x.size(-2) > x.size(-1)
    if transposed:  # iterate on the short side: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for a, b, c in ns_coefficients(coeffs, steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if transposed else x


def equalize_rows(stack: torch.Tensor) -> torch.Tensor:
    """MuonEq-R (leaderboard PRs #1217, #1394): every row of each [rows, cols] matrix scaled
    to unit L2 norm before orthogonalization, so rows with large gradients do not dominate
    the polar factor's direction."""
    return stack / stack.norm(dim=-1, keepdim=True).clamp_min(1e-7)


class Muon:
    def __init__(
        self,
        named_params: list[tuple[str, nn.Parameter]],
        *,
        lr: float,
        weight_decay: float,
        nesterov: bool,
        ns_steps: int,
        ns_coeffs: str = "quintic",
        row_eq: bool = False,
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
        self.ns_coeffs, self.row_eq = ns_coeffs, row_eq
        self.rank, self.world = rank, world_size
        self.params = {n: p for n, p in named_params}
        self.momentum = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named_params}
        groups: dict[tuple[int, ...], list[str]] = {}
        for n, p in named_params:
            assert p.ndim == 2, f"Muon takes matrices, {n} has shape {tuple(p.shape)}"
            groups.setdefault(tuple(p.shape), []).append(n)
        self.groups = list(groups.values())
        self._ns: Callable[[torch.Tensor, int, str], torch.Tensor] = newton_schulz
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
            stack = torch.stack(grads)
            update = self._orthogonalize(equalize_rows(stack) if self.row_eq else stack)
            rows, cols = params[0].shape
            # Scale so that every shape gets the same per-element RMS step (tall matrices).
            scale = -lr * math.sqrt(max(1.0, rows / cols))
            if self.weight_decay:
                torch._foreach_mul_(params, 1.0 - lr * self.weight_decay)
            torch._foreach_add_(params, list(update.to(params[0].dtype).unbind(0)), alpha=scale)

    def _orthogonalize(self, stack: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return self._ns(stack, self.ns_steps, self.ns_coeffs)
        n = stack.size(0)
        per = math.ceil(n / self.world)
        pad = per * self.world - n
        if pad:
            stack = torch.cat((stack, stack.new_zeros(pad, *stack.shape[1:])))
        mine = self._ns(
            stack[self.rank * per : (self.rank + 1) * per], self.ns_steps, self.ns_coeffs
        )
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
