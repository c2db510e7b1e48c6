"""The pipeline's plan: which processes run, with which arguments, into which folder.

OUT/data/       shards + manifest.json + tokenizer (stage data)
OUT/train/      checkpoint.safetensors + config.json + train log + loss curve (stage train)
OUT/artifact.pgolf                                  (stage pack)
OUT/pack.json                                       (stage pack: bytes, code bytes, bits)
OUT/eval_none.json, OUT/eval_two-phase.json         (stage eval: one report per TTT mode)
OUT/summary.json, OUT/summary.md                    (written after the last stage)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pgolf.config import RunConfig
from pgolf.errors import DataError
from pgolf.pipeline.stages import Stage, python_module


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineInputs:
    out: Path
    # Text files to build shards from; empty means the embedded demo corpus.
    inputs: tuple[str, ...] = ()
    # Existing shard folder (skips the data stage's build when given).
    data_dir: Path | None = None
    # SentencePiece model to encode with; None trains one (or uses the data dir's).
    tokenizer: Path | None = None
    # Processes (GPUs) for train and eval.
    nproc: int = 1
    # TTT modes to evaluate the artifact with; the first is the headline score.
    ttt_modes: tuple[str, ...] = ("none", "two-phase")


def config_args(config: RunConfig, overrides: tuple[str, ...]) -> tuple[str, ...]:
    args: list[str] = ["--preset", config.preset]
    for item in overrides:
        args += ["--set", item]
    return tuple(args)


def data_dir(p: PipelineInputs) -> Path:
    return p.data_dir if p.data_dir is not None else p.out / "data"


def resolve_tokenizer(p: PipelineInputs) -> Path:
    """The tokenizer the data stage used: given explicitly, or recorded in its manifest."""
    if p.tokenizer is not None:
        return p.tokenizer
    manifest = data_dir(p) / "manifest.json"
    if not manifest.is_file():
        raise DataError(f"{manifest}: missing; the data stage did not finish (re-run to resume)")
    path = Path(json.loads(manifest.read_text())["tokenizer"]["path"])
    return path if path.is_absolute() else (manifest.parent / path)


def data_stage(p: PipelineInputs, cfg_args: tuple[str, ...]) -> Stage:
    args = ["build", "--out", str(data_dir(p)), *cfg_args]
    if p.inputs:
        for item in p.inputs:
            args += ["--input", item]
    else:
        args.append("--demo")
    if p.tokenizer is not None:
        args += ["--tokenizer", str(p.tokenizer)]
    return Stage(
        "data",
        python_module("pgolf.cli", "data", *args),
        outputs=(data_dir(p) / "manifest.json",),
    )


def train_stage(p: PipelineInputs, cfg_args: tuple[str, ...], tokenizer: Path) -> Stage:
    run_dir = p.out / "train"
    args = ["--data", str(data_dir(p)), "--tokenizer", str(tokenizer), "--out", str(run_dir)]
    if (run_dir / "checkpoint.safetensors").exists():
        # A killed training run continues from its last checkpoint with the same data order.
        args += ["--resume", str(run_dir)]
    return Stage(
        "train",
        python_module("pgolf.train", *args, *cfg_args, nproc=p.nproc),
        outputs=(run_dir / "checkpoint.safetensors",),
    )


def pack_stage(p: PipelineInputs, cfg_args: tuple[str, ...], tokenizer: Path) -> Stage:
    artifact = p.out / "artifact.pgolf"
    args = ["pack", str(p.out / "train"), "-o", str(artifact), "--tokenizer", str(tokenizer)]
    args += ["--report", str(p.out / "pack.json"), "--no-progress"]
    return Stage("pack", python_module("pgolf.cli", *args, *cfg_args), outputs=(artifact,))


def eval_stage(p: PipelineInputs, cfg_args: tuple[str, ...], tokenizer: Path) -> Stage:
    """All TTT modes in one process: one artifact load, one compile (eval_{mode}.json each)."""
    args = [
        str(p.out / "artifact.pgolf"),
        "--data",
        str(data_dir(p)),
        "--tokenizer",
        str(tokenizer),
    ]
    for mode in p.ttt_modes:
        args += ["--ttt", mode]
    args += ["--report", str(p.out / "eval_{ttt}.json")]
    return Stage(
        "eval",
        python_module("pgolf.eval", *args, *cfg_args, nproc=p.nproc),
        outputs=tuple(p.out / f"eval_{mode}.json" for mode in p.ttt_modes),
    )
