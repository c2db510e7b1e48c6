"""A tiny GPT with every zero-initialised path switched on, shared by model and eval tests."""

from __future__ import annotations

import torch

from pgolf.config import ModelConfig, resolve
from pgolf.model import GPT

TINY = resolve("tiny").model


def noisy_model(cfg: ModelConfig = TINY, seed: int = 0) -> GPT:
    """Zero-initialised projections would hide a feature from causality/leak tests: add noise."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()
