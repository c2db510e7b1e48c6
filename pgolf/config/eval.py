"""Eval section: sliding-window scoring and test-time training.

Owned by the evaluator (pgolf/eval); fields are added there as the evaluator grows.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    # Tokens of context per scored window.
    window: int = 2048
    # New tokens scored per window (each val token is scored once, with up to window-1 context).
    stride: int = 64

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be >= 2, got {self.window}")
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be in [1, window={self.window}], got {self.stride}")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"window": 128, "stride": 32},
}
