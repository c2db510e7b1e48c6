"""``pgolf-train`` / ``pgolf train``: one process as is, one per GPU under torchrun."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pgolf.cli_common import check_output_dir, config_options, resolve_config, standalone


@click.command()
@config_options
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory with *_train_NNNNNN.bin / *_val_NNNNNN.bin shards.",
)
@click.option(
    "--tokenizer",
    required=True,
    type=click.Path(path_type=Path),
    help="SentencePiece .model the shards were built with (sets vocab size, BOS).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Run dir for checkpoint, config, logs, plots (defaults to --resume's).",
)
@click.option(
    "--train-seconds",
    type=float,
    default=None,
    help="Training clock budget in seconds (train.train_seconds; default 600).",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue a killed run from its last checkpoint (same config and data order).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start over in an --out that already holds a run, deleting its checkpoint and logs.",
)
def train(
    preset, overrides, data_dir, tokenizer, out, train_seconds, resume_dir, overwrite
) -> None:
    """Train a model; the run dir gets checkpoint.safetensors, config.json and logs."""
    from pgolf.config import load
    from pgolf.data.recorded import check_tokenizer_for_data
    from pgolf.errors import ConfigError
    from pgolf.train.loop import train as run_training

    if resume_dir is not None:
        config_path = resume_dir / "config.json"
        if not config_path.is_file():
            raise ConfigError(f"{resume_dir}: no config.json, so not a run dir to resume")
        if out is not None and out.resolve() != resume_dir.resolve():
            raise ConfigError("--resume continues in its own run dir; drop --out or make it equal")
        if overwrite:
            raise ConfigError("--resume continues a run and --overwrite deletes it; pick one")
        cfg = load(config_path).with_overrides(list(overrides))
        out = resume_dir
    else:
        if out is None:
            raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
        cfg = resolve_config(preset, overrides)
    if train_seconds is not None:
        cfg = cfg.with_overrides([f"train.train_seconds={train_seconds}"])
    # Shards are bare ids: the wrong tokenizer trains and scores without an error.
    check_tokenizer_for_data(data_dir, tokenizer)
    # Rank 0 alone owns the run dir; other ranks would race with the files it creates.
    if os.environ.get("RANK", "0") == "0":
        check_output_dir(out, "the run dir (--out)")
        if resume_dir is None:
            _claim_run_dir(out, overwrite)
    summary = run_training(cfg, data_dir, tokenizer, out, resume=resume_dir is not None)
    if os.environ.get("RANK", "0") == "0":
        click.echo("summary " + " ".join(f"{k}:{v}" for k, v in summary.items()))


def _claim_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse a fresh run in a folder holding another run (its checkpoint and log would be
    overwritten and mixed), unless --overwrite asks to delete exactly those files."""
    from pgolf.checkpoint import CHECKPOINT_FILE
    from pgolf.errors import ConfigError
    from pgolf.train.loop import RUN_FILES

    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if overwrite:
        for name in found:
            (out / name).unlink()
        return
    hint = f"continue it with --resume {out}, " if CHECKPOINT_FILE in found else ""
    raise ConfigError(
        f"{out} already holds a training run ({', '.join(found)}); {hint}choose a new --out, "
        "or pass --overwrite to delete it and start over"
    )


main = standalone(train)
