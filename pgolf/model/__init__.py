"""The GPT and its pieces (imports nothing from train/pack/eval)."""

from pgolf.model.attention import BACKENDS, attend, available_backends, resolve_backend
from pgolf.model.gpt import (
    GPT,
    matmul_params,
    param_groups,
    param_role,
    train_flops_per_token,
)

__all__ = [
    "GPT",
    "BACKENDS",
    "attend",
    "available_backends",
    "resolve_backend",
    "param_groups",
    "param_role",
    "matmul_params",
    "train_flops_per_token",
]
