"""Full-precision checkpoints: ``checkpoint.safetensors`` + ``config.json`` in a run dir.

The trainer writes them, the packer reads them, ``pgolf unpack`` writes them back.
safetensors only (never pickle). The safetensors metadata repeats the resolved config
and the tokenizer identity so a lone .safetensors file is still self-describing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pgolf.config import RunConfig, from_json
from pgolf.errors import DataError
from pgolf.io import atomic_write_bytes, atomic_write_text

CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"


def save_checkpoint(
    run_dir: str | Path,
    state: dict[str, torch.Tensor],
    config: RunConfig,
    *,
    tokenizer: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    name: str = CHECKPOINT_FILE,
) -> Path:
    """Write tensors (contiguous, CPU) and the config atomically; returns the checkpoint path."""
    run_dir = Path(run_dir)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    metadata = {"pgolf_config": config.to_json()}
    if tokenizer is not None:
        metadata["tokenizer"] = json.dumps(tokenizer, sort_keys=True)
    if extra is not None:
        metadata["extra"] = json.dumps(extra, sort_keys=True)
    path = run_dir / name
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
    return path


def load_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], RunConfig, dict[str, Any]]:
    """Read a run dir (or a .safetensors file) -> (tensors, config, metadata dict)."""
    path = Path(path)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{file}: no checkpoint found (expected a run dir with {CHECKPOINT_FILE})")
    try:
        tensors = load_file(str(file))
        with open(file, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            meta = json.loads(f.read(header_len)).get("__metadata__", {}) or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{file}: not a readable safetensors checkpoint ({e})") from None
    config_path = file.parent / CONFIG_FILE
    if "pgolf_config" in meta:
        config = from_json(meta["pgolf_config"])
    elif config_path.is_file():
        config = from_json(config_path.read_text())
    else:
        raise DataError(f"{file}: carries no pgolf config and {config_path} is missing")
    info: dict[str, Any] = {}
    for key in ("tokenizer", "extra"):
        if key in meta:
            info[key] = json.loads(meta[key])
    return tensors, config, info
