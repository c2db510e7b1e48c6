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

import dataclasses

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
    w = w.float()
    rows, cols = w.shape
    g = group_size or cols
    ratios = torch.ones(1) if ratios is None else ratios
    rtn = Q.quantize(w, bits, group_size, ratios, clip=clip)
    scale = rtn.scales.float().reshape(rows, cols // g)
    pruned = w == 0
    hinv = _inverse_cholesky(hessian.double(), damp).float()
    m = grid.qmax(bits)
    work = w.clone()
    q = torch.zeros(rows, cols, dtype=torch.int8, device=w.device)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1 = work[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            s = scale[:, col // g]
            qc = torch.clamp(torch.round(w1[:, i] / s), -m, m)
            qc = qc.masked_fill(pruned[:, col], 0.0)  # pruned weights stay exact zeros
            q[:, col] = qc.to(torch.int8)
            e = (w1[:, i] - qc * s) / h1[i, i]
            w1[:, i:] -= e.unsqueeze(1) * h1[i, i:].unsqueeze(0)
            err1[:, i] = e
        work[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return Q.Quantized(q, rtn.scales, group_size, rtn.clip)


def _inverse_cholesky(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1; dead inputs get weight 1."""
    h = h.clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    h += torch.eye(h.shape[0], dtype=h.dtype, device=h.device) * damp * torch.diagonal(h).mean()
    inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inv, upper=True)


def _device() -> str:
    """Where calibration and the column sweep run: seconds on a GPU, minutes on CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_quantizer(hessians: dict[str, torch.Tensor], cfg: PackConfig):
    """A packer hook: GPTQ where a Hessian exists, clip-search rounding elsewhere.

    The column sweep runs on the GPU when there is one (thousands of small ops per matrix).
    """
    device = _device()

    def quantizer(name, w, bits, group_size, ratios, clip=None):
        h = hessians.get(name)
        if h is None or h.shape[0] != w.shape[1]:
            return Q.quantize(w, bits, group_size, ratios, clip=clip)
        qt = gptq_quantize(
            w.to(device),
            h.to(device),
            bits,
            group_size,
            ratios,
            None if clip is None else clip.to(device),
            damp=cfg.gptq_damp,
            block=cfg.gptq_block,
        )
        return Q.Quantized(qt.q.cpu(), qt.scales.cpu(), qt.group_size, qt.clip.cpu())

    return quantizer


@torch.no_grad()
def sample_tokens(model, n: int, length: int, bos_id: int, seed: int) -> torch.Tensor:
    """[n, length] token ids sampled from the model itself, starting at BOS."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    ids = torch.full((n, 1), bos_id, dtype=torch.long, device=device)
    for _ in range(length - 1):
        logits = model(ids)[:, -1].float()
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


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
    try:
        from pgolf.model import GPT
    except ImportError as e:  # the model package is owned elsewhere; fail clearly
        raise PgolfError(f"GPTQ needs pgolf.model.GPT, which is not importable ({e})") from None
    device = _device()
    model = GPT(dataclasses.replace(model_cfg, fused_qkv=False)).float().eval()
    missing, unexpected = model.load_state_dict(
        {k: v.float() for k, v in tensors.items()}, strict=False
    )
    if missing or unexpected:
        raise PgolfError(
            f"checkpoint does not match pgolf.model.GPT: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}; pack without GPTQ (--set pack.gptq=off)"
        )
    return model.to(device)


def calibrate(tensors: dict[str, torch.Tensor], model_cfg, cfg: PackConfig):
    """Hessians of every linear layer on sequences the checkpoint's model generates."""
    model = calibration_model(tensors, model_cfg)
    ids = sample_tokens(model, cfg.gptq_samples, cfg.gptq_seq_len, model_cfg.bos_id, cfg.seed)
    hessians = collect_hessians(model, ids, head=cfg.gptq_embed)
    return {k: v.cpu() for k, v in hessians.items()}
