"""Train section: optimizer, schedule, averaging, QAT, batch and logging knobs.

Owned by the trainer (pgolf/train); fields are added there as the trainer grows.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # Wall-clock training budget in seconds (compile/warmup excluded); the schedule ends on it.
    train_seconds: float = 600.0
    # Tokens per sequence.
    seq_len: int = 2048
    # Tokens per optimizer step summed over all ranks and accumulation steps.
    global_batch_tokens: int = 786_432
    # Seed for init and data order.
    seed: int = 1337

    def __post_init__(self) -> None:
        if self.train_seconds <= 0:
            raise ValueError(f"train_seconds must be > 0, got {self.train_seconds}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if self.global_batch_tokens % self.seq_len:
            raise ValueError(
                f"global_batch_tokens {self.global_batch_tokens} must be a multiple of "
                f"seq_len {self.seq_len}"
            )


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"train_seconds": 30.0, "seq_len": 128, "global_batch_tokens": 4096},
}
