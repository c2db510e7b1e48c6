"""Resume state: raw weights, optimizer moments, averages and counters (no pickle).

One safetensors file (``resume.safetensors``) carries every tensor and, in its metadata,
the JSON counters, so a single atomic rename commits a consistent state; ``resume.json``
is a human-readable twin that is never trusted for loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from pgolf.errors import DataError
from pgolf.io import atomic_write_bytes, atomic_write_text

RESUME_FILE = "resume.safetensors"
RESUME_JSON = "resume.json"
STATE_VERSION = 1


def save_resume(
    run_dir: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    run_dir = Path(run_dir)
    meta = {"version": STATE_VERSION, **meta}
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path = run_dir / RESUME_FILE
    atomic_write_bytes(path, save(cpu, metadata={"pgolf_resume": json.dumps(meta)}))
    atomic_write_text(run_dir / RESUME_JSON, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def load_resume(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: no resume state (the run wrote no checkpoint yet; start it again "
            "without --resume)"
        )
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        meta = json.loads(header["__metadata__"]["pgolf_resume"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: unreadable resume state ({e})") from None
    if meta.get("version") != STATE_VERSION:
        raise DataError(
            f"{path}: resume state version {meta.get('version')} but this pgolf writes "
            f"version {STATE_VERSION}; resume with the pgolf version that wrote it"
        )
    return tensors, meta


def adam_state_tensors(opt: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """Moments as tensors keyed by parameter name, and the step counts as JSON."""
    tensors, steps = {}, {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            name = names[id(p)]
            tensors[f"adam.{name}.exp_avg"] = st["exp_avg"]
            tensors[f"adam.{name}.exp_avg_sq"] = st["exp_avg_sq"]
            steps[name] = float(st["step"])
    return tensors, steps


def load_adam_state(
    opt: torch.optim.Optimizer, names: dict[int, str], tensors: dict, steps: dict
) -> None:
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            if name not in steps:
                continue
            opt.state[p] = {
                "step": torch.tensor(steps[name], dtype=torch.float32),
                "exp_avg": tensors[f"adam.{name}.exp_avg"].to(p.device, p.dtype).clone(),
                "exp_avg_sq": tensors[f"adam.{name}.exp_avg_sq"].to(p.device, p.dtype).clone(),
            }
