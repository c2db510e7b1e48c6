"""Pack section: pruning, quantization, entropy coding and the byte budget.

Owned by the packer (pgolf/pack); fields are added there as the packer grows.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class PackConfig:
    # Artifact budget in decimal bytes, counted code included (the challenge cap).
    budget_bytes: int = 16_000_000

    def __post_init__(self) -> None:
        if self.budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0, got {self.budget_bytes}")


PRESETS: dict[str, dict[str, Any]] = {}
