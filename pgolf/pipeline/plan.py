"""The pipeline's plan: which processes run, with which arguments, into which folder.

OUT/data/       shards + manifest.json + tokenizer (stage data)
OUT/train/      checkpoint.safetensors + config.json + train log + loss curve (stage train)
OUT/artifact.pgolf                                  (stage pack)
OUT/pack.json                                       (stage pack: bytes, code bytes, bits)
OUT/eval_none.json, OUT/eval_two-phase.json         (stage eval: one report per TTT mode)
OUT/summary.json, OUT/summary.md                    (written after the last stage)
OUT/inputs.json   the run's inputs (--input, --data, --tokenizer) by path and content
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from pgolf.config import RunConfig
from pgolf.errors import ConfigError, DataError
from pgolf.io import atomic_write_text
from pgolf.pipeline.stages import Stage, python_module

INPUTS_FILE = "inputs.json"


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


def _file_identity(path: str | Path, *, sha256: bool = False) -> dict[str, Any]:
    """Resolved path and size (and sha256 for small files such as tokenizers).

    Text inputs can be many GB, so they are named by path and size only; mtime is kept
    for humans but not compared, so a copied or touched file is still the same input.
    """
    path = Path(path)
    ident: dict[str, Any] = {"path": str(path.resolve())}
    if path.is_file():
        st = path.stat()
        ident.update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
        if sha256:
            from pgolf.data.tokenizer import sha256_file

            ident["sha256"] = sha256_file(path)
    return ident


def _data_identity(path: Path) -> dict[str, Any]:
    """A shard folder by path plus the name and size of every shard and record in it."""
    files = {}
    if path.is_dir():
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            if entry.is_file() and entry.name.endswith((".bin", ".json", ".model")):
                files[entry.name] = entry.stat().st_size
    return {"path": str(path.resolve()), "files": files}


def inputs_identity(p: PipelineInputs) -> dict[str, Any]:
    """What makes two runs of one folder the same run besides its config."""
    return {
        "inputs": [_file_identity(i) for i in p.inputs],
        "data": None if p.data_dir is None else _data_identity(p.data_dir),
        "tokenizer": None if p.tokenizer is None else _file_identity(p.tokenizer, sha256=True),
    }


def _comparable(ident: dict[str, Any]) -> dict[str, Any]:
    def strip(entry: Any) -> Any:
        if isinstance(entry, dict):
            return {k: strip(v) for k, v in entry.items() if k != "mtime_ns"}
        if isinstance(entry, list):
            return [strip(v) for v in entry]
        return entry

    return strip(ident)


def check_same_inputs(p: PipelineInputs) -> dict[str, Any]:
    """The run's input identity; ConfigError when OUT's earlier stages used other inputs."""
    ident = inputs_identity(p)
    path = p.out / INPUTS_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None  # unreadable: cannot tell, as for a folder from before the record
        if isinstance(before, dict) and _comparable(before) != _comparable(ident):
            changed = [k for k in ident if _comparable(before.get(k)) != _comparable(ident[k])]
            flags = ", ".join(f"--{'input' if k == 'inputs' else k}" for k in changed)
            raise ConfigError(
                f"{p.out} was started with other inputs ({flags} differ; see {path}); re-run "
                "with the same ones, pass --redo all to start it over, or use a new --out folder"
            )
    return ident


def record_inputs(p: PipelineInputs, ident: dict[str, Any]) -> None:
    atomic_write_text(p.out / INPUTS_FILE, json.dumps(ident, indent=2) + "\n")


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
    elif run_dir.exists():
        # Killed before its first checkpoint: nothing to resume, and the folder is ours.
        args.append("--overwrite")
    return Stage(
        "train",
        python_module("pgolf.train", *args, *cfg_args, nproc=p.nproc),
        outputs=(run_dir / "checkpoint.safetensors",),
    )


def pack_stage(
    p: PipelineInputs, cfg_args: tuple[str, ...], tokenizer: Path, gptq_on: bool = False
) -> Stage:
    artifact = p.out / "artifact.pgolf"
    args = ["pack", str(p.out / "train"), "-o", str(artifact), "--tokenizer", str(tokenizer)]
    args += ["--report", str(p.out / "pack.json"), "--no-progress"]
    # With GPTQ, every GPU generates its share of the calibration text; without, one process.
    nproc = p.nproc if gptq_on else 1
    return Stage(
        "pack", python_module("pgolf.cli", *args, *cfg_args, nproc=nproc), outputs=(artifact,)
    )


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
