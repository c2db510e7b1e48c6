"""Plain validation: non-overlapping seq_len windows of the val split, exact bpb.

val_bpb = sum NLL (nats) / ln 2 / sum target bytes, bytes from the tokenizer's ByteTable
(the same accounting as the evaluator; its sliding window scores lower than this).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.distributed as dist

from pgolf.config.train import TrainConfig
from pgolf.data.bpb import target_bytes_torch
from pgolf.runtime import Dist


@torch.no_grad()
def evaluate_bpb(
    model: torch.nn.Module, tokens: np.ndarray, byte_tables: tuple, tc: TrainConfig, d: Dist
) -> dict[str, float]:
    """Scores of ``tokens`` in ``tc.seq_len`` windows, ``tc.val_batch_seqs`` at a time; each
    rank of ``d`` scores its share (every world-th window) and the sums are all-reduced."""
    seq_len, batch_seqs, device = tc.seq_len, tc.val_batch_seqs, d.device
    n_seqs = (len(tokens) - 1) // seq_len
    if n_seqs < 1:
        raise ValueError(f"val split has {len(tokens)} tokens, fewer than seq_len+1={seq_len + 1}")
    stream = torch.from_numpy(np.asarray(tokens[: n_seqs * seq_len + 1], dtype=np.int64))
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, tokens, bytes
    was_training = model.training
    model.eval()
    ctx = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if tc.autocast_bf16 and device.type == "cuda"
        else contextlib.nullcontext()
    )
    mine = list(range(d.rank, n_seqs, d.world_size))
    for i in range(0, len(mine), batch_seqs):
        idx = torch.tensor(mine[i : i + batch_seqs])
        starts = idx[:, None] * seq_len + torch.arange(seq_len + 1)
        window = stream[starts].to(device, non_blocking=True)
        x, y = window[:, :-1], window[:, 1:]
        with ctx:
            nll = model(x, y, reduction="none")
        sums[0] += nll.double().sum()
        sums[1] += y.numel()
        sums[2] += target_bytes_torch(byte_tables, x, y).double().sum()
    if d.distributed:
        dist.all_reduce(sums)
    model.train(was_training)
    nll, count, nbytes = sums.tolist()
    return {
        "val_loss": nll / count,
        "val_bpb": nll / math.log(2) / nbytes,
        "val_tokens": int(count),
    }
