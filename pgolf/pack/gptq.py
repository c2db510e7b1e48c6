"""Hessian-aware GPTQ (Frantar et al. 2022) with data-free, model-generated calibration.

GPTQ quantizes a weight matrix one column at a time and pushes each column's rounding
error onto the columns not yet quantized, weighted by the inverse Hessian H = sum x x^T
of the layer's inputs, so the *outputs* X W^T move less than with plain rounding. The grid
is unchanged (per-row/group fp16 scales from the clip search, levels in [-qmax, qmax]), so
the container and late QAT still agree.

Calibration never reads training data: the model samples its own sequences from BOS
(temperature 1) and the Hessians are collected on those. In the challenge any calibration
must fit inside the training window, so its wall time is logged (``calibration_s``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import torch

from pgolf.config.pack import PackConfig
from pgolf.errors import PgolfError
from pgolf.format import grid
from pgolf.pack import quantize as Q


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    bits: float,
    group_size: int = 0,
    ratios: torch.Tensor | None = None,
    clip: torch.Tensor | None = None,
    *,
    damp: float = 0.01,
    block: int = 128,
) -> Q.Quantized:
    """GPTQ of a [rows, cols] matrix against input Hessian [cols, cols]; zeros stay zeros.

    The grid is ``clip`` when given (SDClip), else the clip search's on the weights.
    """
    hinv = prepare_hessian(hessian, damp, w.device)
    return gptq_many([(w, hinv, bits, clip)], group_size, ratios, block=block)[0]


def gptq_many(
    jobs: list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]],
    group_size: int = 0,
    ratios: torch.Tensor | None = None,
    *,
    block: int = 128,
) -> list[Q.Quantized]:
    """GPTQ of several matrices, each ``(w, hinv, bits, clip)`` with ``hinv`` from
    ``prepare_hessian``; the column sweep runs once per shape for all matrices of that shape.

    GPTQ treats every row on its own (a row's updates read only its own errors and the
    shared inverse Hessian), so matrices of one shape are swept together as a batch: per
    column the same few element-wise ops as one matrix, on [batch, rows] slices. That turns
    ~45,000 column steps of the default model (thousands of tiny GPU kernels each few µs)
    into ~3,200; every element sees the same arithmetic as a sweep of its matrix alone.
    """
    ratios = torch.ones(1) if ratios is None else ratios
    out: list[Q.Quantized | None] = [None] * len(jobs)
    shapes: dict[tuple[int, int], list[int]] = {}
    for i, (w, *_rest) in enumerate(jobs):
        shapes.setdefault(tuple(w.shape), []).append(i)
    for (rows, cols), idx in shapes.items():
        g = group_size or cols
        ws, hinvs, scales, qmaxes, rtns = [], [], [], [], []
        for i in idx:
            w, hinv, bits, clip = jobs[i]
            w = w.float()
            rtn = Q.quantize(w, bits, group_size, ratios, clip=clip)
            rtns.append(rtn)
            ws.append(w)
            hinvs.append(hinv)
            scales.append(rtn.scales.float().reshape(rows, cols // g))
            qmaxes.append(float(grid.qmax(bits)))
        m = torch.tensor(qmaxes, device=ws[0].device).reshape(-1, 1)
        q = _sweep(torch.stack(ws), torch.stack(hinvs), torch.stack(scales), m, g, block)
        for j, i in enumerate(idx):
            out[i] = Q.Quantized(q[j], rtns[j].scales, group_size, rtns[j].clip)
    return out  # type: ignore[return-value]


def _sweep(
    w: torch.Tensor, hinv: torch.Tensor, scale: torch.Tensor, m: torch.Tensor, g: int, block: int
) -> torch.Tensor:
    """The lazy-batch column sweep (GPTQ paper, Alg. 1) over a batch of equal-shape matrices.

    w [B, rows, cols], hinv [B, cols, cols] (upper Cholesky of H^-1), scale [B, rows, groups],
    m [B, 1] the largest level; returns int8 levels [B, rows, cols]. Zeros stay zeros.
    """
    batch, rows, cols = w.shape
    pruned = w == 0
    lo, hi = -m, m
    work = w.clone()
    q = torch.zeros(batch, rows, cols, dtype=torch.int8, device=w.device)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = work[:, :, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            s = scale[:, :, col // g]
            qc = torch.clamp(torch.round(w1[:, :, i] / s), lo, hi)
            qc = qc.masked_fill(pruned[:, :, col], 0.0)  # pruned weights stay exact zeros
            q[:, :, col] = qc.to(torch.int8)
            e = (w1[:, :, i] - qc * s) / h1[:, i, i].unsqueeze(1)
            w1[:, :, i:] -= e.unsqueeze(2) * h1[:, i, i:].unsqueeze(1)
            err1[:, :, i] = e
        work[:, :, i2:] -= torch.bmm(err1, hinv[:, i1:i2, i2:])
    return q


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1; dead inputs get weight 1."""
    h = h.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h += torch.eye(h.shape[0], dtype=h.dtype, device=h.device) * damp * torch.diagonal(h).mean()
    inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inv, upper=True)


def prepare_hessian(h: torch.Tensor, damp: float, device: str | torch.device) -> torch.Tensor:
    """What the sweep reads of a Hessian: the float32 upper Cholesky factor of the damped
    inverse, on ``device``. It depends on neither bits nor pruning, so one factor serves
    every pack of a budget search."""
    return _inverse_cholesky(h.to(device).double(), damp).float()


def _device() -> str:
    """Where calibration and the column sweep run: seconds on a GPU, minutes on CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class Quantizer:
    """A packer hook: GPTQ where a Hessian exists, clip-search rounding elsewhere.

    The column sweep runs on the GPU when there is one. Work shared by the packs of a
    budget search is done once: each Hessian's inverse Cholesky factor is computed on first
    use and kept, and a tensor quantized again at the same bits from the same (pruned)
    weights returns the earlier result (``stats`` counts both).
    """

    def __init__(self, hessians: dict[str, torch.Tensor], cfg: PackConfig, device=None) -> None:
        self.hessians = hessians
        self.cfg = cfg
        self.device = device or _device()
        self._hinv: dict[str, torch.Tensor] = {}
        self._done: dict[tuple, Q.Quantized] = {}
        self.stats = {"factors": 0, "swept": 0, "reused": 0}

    def covers(self, name: str, w: torch.Tensor) -> bool:
        h = self.hessians.get(name)
        return h is not None and w.dim() == 2 and h.shape[0] == w.shape[1]

    def hinv(self, name: str) -> torch.Tensor:
        if name not in self._hinv:
            self._hinv[name] = prepare_hessian(self.hessians[name], self.cfg.gptq_damp, self.device)
            self.stats["factors"] += 1
        return self._hinv[name]

    def many(self, jobs, group_size: int, ratios: torch.Tensor) -> dict[str, Q.Quantized]:
        """``jobs``: (name, w, bits, clip); every covered matrix is swept in one batch."""
        out: dict[str, Q.Quantized] = {}
        todo, keys = [], []
        for name, w, bits, clip in jobs:
            if not self.covers(name, w):
                out[name] = Q.quantize(w, bits, group_size, ratios, clip=clip)
                continue
            key = _job_key(name, w, bits, group_size, ratios, clip)
            if key in self._done:
                out[name] = self._done[key]
                self.stats["reused"] += 1
                continue
            dev_clip = None if clip is None else clip.to(self.device)
            todo.append((w.to(self.device), self.hinv(name), bits, dev_clip))
            keys.append((name, key))
        if todo:
            done = gptq_many(todo, group_size, ratios.to(self.device), block=self.cfg.gptq_block)
            self.stats["swept"] += len(todo)
            for (name, key), qt in zip(keys, done, strict=True):
                qt = Q.Quantized(qt.q.cpu(), qt.scales.cpu(), qt.group_size, qt.clip.cpu())
                self._done[key] = out[name] = qt
        return out


def _job_key(name, w, bits, group_size, ratios, clip) -> tuple:
    """Identifies a GPTQ job's inputs: the name (hence Hessian), bits, grid options and a
    fingerprint of the (pruned) weights and clip, so a changed tensor is never reused."""

    def fp(t):
        if t is None:
            return None
        t = t.detach().double()
        return (tuple(t.shape), float(t.sum()), float(t.square().sum()), int((t == 0).sum()))

    return (name, float(bits), group_size, fp(w), fp(clip), tuple(ratios.tolist()))


def make_quantizer(hessians: dict[str, torch.Tensor], cfg: PackConfig) -> Quantizer:
    """A packer hook: GPTQ where a Hessian exists, clip-search rounding elsewhere."""
    return Quantizer(hessians, cfg)


@torch.no_grad()
def sample_tokens(
    model, n: int, length: int, bos_id: int, seed: int, rows: list[int] | None = None
) -> torch.Tensor:
    """[len(rows), length] token ids sampled from the model itself, starting at BOS: rows
    ``rows`` (default all) of an ``n``-sequence calibration set.

    Sequence i's randomness is fixed by ``seed`` and i alone (uniforms drawn for all ``n``
    rows on the CPU, then inverse-CDF sampling), so ranks that each generate their own rows
    make the same set as one process generating them all.
    """
    device = next(model.parameters()).device
    rows = list(range(n)) if rows is None else rows
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, max(length - 1, 1), generator=g, dtype=torch.float64)[rows].to(device)
    ids = torch.full((len(rows), 1), bos_id, dtype=torch.long, device=device)
    with _tf32_matmuls():
        for t in range(length - 1):
            probs = torch.softmax(model(ids)[:, -1].double(), dim=-1)
            cdf = probs.cumsum(-1)
            nxt = torch.searchsorted(cdf, u[:, t : t + 1] * cdf[:, -1:])
            ids = torch.cat([ids, nxt.clamp_(max=probs.size(-1) - 1)], dim=1)
    return ids


@contextlib.contextmanager
def _tf32_matmuls():
    """TF32 GEMMs while sampling: the text only has to be plausible, and fp32 GEMMs run at a
    fraction of TF32's rate on the GPU (the Hessians are still measured in fp32)."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    matmul.allow_tf32 = True
    try:
        yield
    finally:
        matmul.allow_tf32 = before


@torch.no_grad()
def collect_hessians(model, ids: torch.Tensor, *, head: bool = False) -> dict[str, torch.Tensor]:
    """H = sum over tokens of x x^T for the input x of every linear layer (float64).

    ``head`` adds the output head's: its input is the final hidden state, and with tied
    embeddings the head *is* ``tok_emb.weight`` (the logits call no nn.Linear to hook).
    """
    hessians: dict[str, torch.Tensor] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            key = f"{name}.weight"

            def hook(_m, inputs, _out, key=key):
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
                hessians[key] = hessians.get(key, 0) + x.T @ x

            handles.append(mod.register_forward_hook(hook))
    try:
        if head:
            x = model.hidden(ids)
            x = x.reshape(-1, x.shape[-1]).double()
            hessians["tok_emb.weight" if model.head is None else "head.weight"] = x.T @ x
        else:
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return hessians


def calibration_model(tensors: dict[str, torch.Tensor], model_cfg) -> torch.nn.Module:
    """The checkpoint as an fp32 GPT on the best device, with q/k/v unfused so the Hessian
    hooks sit on each nn.Linear's own forward call."""
    from pgolf.model import GPT

    device = _device()
    model = GPT(dataclasses.replace(model_cfg, fused_qkv=False), init_weights=False)
    model = model.float().eval()
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in tensors.items()}, strict=False
    )
    if missing or unexpected:
        raise PgolfError(
            f"checkpoint does not match pgolf.model.GPT: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; pack without GPTQ (--set pack.gptq=off)"
        )
    return model.to(device)


def calibrate(tensors: dict[str, torch.Tensor], model_cfg, cfg: PackConfig, times=None, d=None):
    """Hessians of every linear layer on sequences the checkpoint's model generates.

    ``d`` (a runtime.Dist with several ranks): each rank generates and measures its share of
    the ``gptq_samples`` sequences (rows rank, rank + world, ...), and the Hessians, sums over
    tokens, are summed over the ranks: every rank gets those of the whole set, in 1/world of
    the time. ``times`` (a dict), when given, gets the wall seconds of "model" (build and
    copy to the device), "generate" (sampling the calibration text) and "hessians" (one
    forward pass with the hooks, the sum over ranks, the copy back to the CPU).
    """
    times = {} if times is None else times
    rank, world = (d.rank, d.world_size) if d is not None else (0, 1)
    t = time.perf_counter()
    model = calibration_model(tensors, model_cfg)
    t = _lap(times, "model", t)
    rows = list(range(rank, cfg.gptq_samples, world))
    ids = sample_tokens(
        model, cfg.gptq_samples, cfg.gptq_seq_len, model_cfg.bos_id, cfg.seed, rows=rows
    )
    t = _lap(times, "generate", t)
    hessians = collect_hessians(model, ids, head=cfg.gptq_embed) if rows else {}
    if world > 1:
        hessians = _sum_over_ranks(hessians, _hessian_sizes(model, cfg.gptq_embed))
    out = {k: v.cpu() for k, v in hessians.items()}
    _lap(times, "hessians", t)
    return out


def _hessian_sizes(model, head: bool) -> dict[str, int]:
    """Every Hessian collect_hessians makes for ``model``: name -> input width."""
    sizes = {
        f"{name}.weight": mod.in_features
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)
    }
    if head:
        sizes["tok_emb.weight" if model.head is None else "head.weight"] = model.cfg.model_dim
    return sizes


def _sum_over_ranks(hessians: dict[str, torch.Tensor], sizes: dict[str, int]):
    """All-reduce (sum) every Hessian, in one name order on every rank; a rank that had no
    rows (fewer samples than ranks) contributes zeros."""
    import torch.distributed as dist

    device = next(iter(hessians.values())).device if hessians else _device()
    out = {}
    for name in sorted(sizes):
        h = hessians.get(name)
        if h is None:
            h = torch.zeros(sizes[name], sizes[name], dtype=torch.float64, device=device)
        dist.all_reduce(h)
        out[name] = h
    return out


def _lap(times: dict[str, float], phase: str, t: float) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # GPU work is asynchronous: charge it to its own phase
    now = time.perf_counter()
    times[phase] = now - t
    return now
