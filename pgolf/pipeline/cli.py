"""``pgolf run``: data build → train → pack → eval in one folder, resumable."""

from __future__ import annotations

from pathlib import Path

import click

from pgolf.cli_common import check_output_dir, config_options
from pgolf.config.eval import TTT_MODES


@click.command()
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Text files (.txt/.jsonl/.jsonl.zst/.jsonl.xz); none = embedded demo corpus.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Existing shard folder instead of building one.",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SentencePiece model (default: train one on the input).",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=1),
    default=None,
    help="Processes for train and eval (default: all visible GPUs, 1 on CPU).",
)
@click.option(
    "--train-seconds",
    type=float,
    default=None,
    help="Training clock budget; scales the recipe (see README).",
)
@click.option(
    "--ttt",
    "ttt_modes",
    type=click.Choice(TTT_MODES),
    multiple=True,
    help="TTT modes to evaluate the artifact with (default: none and the config's eval.ttt).",
)
@click.option(
    "--redo",
    multiple=True,
    type=click.Choice(["data", "train", "pack", "eval", "all"]),
    help="Redo a finished stage (and everything after it).",
)
@config_options
@click.pass_context
def run(
    ctx, out, inputs, data_dir, tokenizer, gpus, train_seconds, ttt_modes, redo, preset, overrides
):
    """Run the whole pipeline. With no arguments on a CPU machine: the tiny demo (< 5 min)."""
    import torch

    from pgolf.data.recorded import check_tokenizer_for_data
    from pgolf.pipeline.default_preset import default_preset
    from pgolf.pipeline.runner import run_pipeline

    check_output_dir(out, "the run folder (--out)")
    if data_dir is not None and tokenizer is not None:
        check_tokenizer_for_data(data_dir, tokenizer)  # else only the train stage would see it
    if gpus is None:
        gpus = max(1, torch.cuda.device_count())
    if ctx.get_parameter_source("preset") is click.core.ParameterSource.DEFAULT:
        preset, why = default_preset(torch.cuda.is_available(), tokenizer, data_dir)
    else:
        why = None
    run_pipeline(
        out=out,
        inputs=tuple(inputs),
        data_dir=data_dir,
        tokenizer=tokenizer,
        nproc=gpus,
        train_seconds=train_seconds,
        ttt_modes=tuple(ttt_modes),
        redo=tuple(redo),
        preset=preset,
        overrides=tuple(overrides),
        preset_reason=why,
    )
