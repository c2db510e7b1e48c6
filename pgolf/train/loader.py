"""Training batches: a deterministic function of the step, read from memory-mapped shards.

The train shards form one token stream (wrapping at its end). Step s covers the
``global_batch_tokens`` tokens starting at s * global_batch_tokens; that span is cut into
world * accumulation micro-chunks and rank r takes chunks r*accum .. r*accum + accum - 1,
so ranks read disjoint slices, and 1 rank with accumulation k sees exactly the tokens of k
ranks without it. Because the batch depends only on the step, resuming needs no loader
state beyond the step (plus a fingerprint that the shards did not change).

A background thread prepares the next steps' batches in pinned host memory so the
host-to-device copy (non_blocking) overlaps the previous step's compute.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import torch

from pgolf.data.shards import list_shards, read_shard
from pgolf.errors import DataError


class TokenStream:
    """Random access into the concatenation of shards, wrapping around at the end."""

    def __init__(self, paths: list[Path], vocab_size: int) -> None:
        self.paths, self.vocab_size = paths, vocab_size
        # No vocab check here: it would read every shard (GBs) before step 0; read() checks
        # the tokens it returns instead.
        self.shards = [read_shard(p) for p in paths]
        sizes = [len(s) for s in self.shards]
        self.starts = np.concatenate(([0], np.cumsum(sizes)))
        self.total = int(self.starts[-1])
        if self.total < 2:
            raise DataError(f"{paths[0].parent}: train shards hold {self.total} tokens")

    def fingerprint(self) -> list[list]:
        return [[p.name, len(s)] for p, s in zip(self.paths, self.shards, strict=True)]

    def read(self, start: int, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        filled, pos = 0, start % self.total
        while filled < n:
            i = int(np.searchsorted(self.starts, pos, side="right")) - 1
            off = pos - int(self.starts[i])
            take = min(n - filled, len(self.shards[i]) - off)
            out[filled : filled + take] = self.shards[i][off : off + take]
            filled += take
            pos = (pos + take) % self.total
        if n and int(out.max()) >= self.vocab_size:
            raise DataError(
                f"train token id {int(out.max())} near stream position {start} is >= the "
                f"model's vocab size {self.vocab_size} (shards built with another tokenizer?)"
            )
        return out


class BatchPlan:
    def __init__(
        self,
        stream: TokenStream,
        *,
        global_tokens: int,
        micro_seqs: int,
        seq_len: int,
        rank: int,
        world: int,
        accum: int,
    ) -> None:
        self.stream, self.global_tokens = stream, global_tokens
        self.micro_seqs, self.seq_len = micro_seqs, seq_len
        self.rank, self.world, self.accum = rank, world, accum
        self.micro_tokens = micro_seqs * seq_len
        assert world * accum * self.micro_tokens == global_tokens

    def epoch(self, step: int) -> int:
        return (step * self.global_tokens) // self.stream.total

    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (inputs, targets) int64 CPU tensors [micro_seqs, seq_len] for ``step``."""
        base = step * self.global_tokens
        out = []
        for a in range(self.accum):
            chunk = self.rank * self.accum + a
            tokens = self.stream.read(base + chunk * self.micro_tokens, self.micro_tokens + 1)
            t = torch.from_numpy(tokens)
            x = t[:-1].view(self.micro_seqs, self.seq_len)
            y = t[1:].view(self.micro_seqs, self.seq_len)
            out.append((x, y))
        return out


class Prefetcher:
    """Yields device batches for steps start, start+1, ...; a thread stays ``depth`` ahead."""

    def __init__(self, plan: BatchPlan, start_step: int, device: torch.device, depth: int = 2):
        self.plan, self.device, self.step = plan, device, start_step
        self.pin = device.type == "cuda"
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(start_step,), daemon=True)
        self._thread.start()

    def _work(self, step: int) -> None:
        while not self._stop.is_set():
            try:
                batch = self.plan.micro_batches(step)
                if self.pin:
                    batch = [(x.pin_memory(), y.pin_memory()) for x, y in batch]
                item: object = (step, batch)
            except Exception as e:  # surfaced in the main thread by next()
                item = (step, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    def next(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        step, batch = self._queue.get()
        assert step == self.step, (step, self.step)
        if isinstance(batch, Exception):
            raise batch
        self.step += 1
        return [
            (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            for x, y in batch
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def train_stream(data_dir: str | Path, vocab_size: int) -> TokenStream:
    return TokenStream(list_shards(data_dir, "train"), vocab_size)
