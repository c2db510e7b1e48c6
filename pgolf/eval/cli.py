"""``pgolf eval ARTIFACT --data DIR --tokenizer MODEL`` (and ``bin/pgolf-eval``, torchrun-ready).

    torchrun --nproc_per_node 8 bin/pgolf-eval artifact.pgolf --data data/ \
        --tokenizer fineweb_1024_bpe.model --report eval.json
"""

from __future__ import annotations

from pathlib import Path

import click

from pgolf.cli_common import config_options, resolve_config, standalone
from pgolf.config.eval import TTT_MODES


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory holding the val shards (*_val_NNNNNN.bin).",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    help="SentencePiece .model the artifact was trained with (sha256-checked).",
)
@click.option(
    "--ttt",
    type=click.Choice(TTT_MODES),
    default=None,
    help="Test-time training (default: eval.ttt = two-phase, score-first).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    help="Write the report as JSON here.",
)
@click.option(
    "--save-token-nll",
    type=click.Path(path_type=Path),
    help="Write per-token NLL (nats, float32, stream order) as .npy.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=2),
    default=None,
    help="Score only this many leading val tokens (quick runs; marked in the report).",
)
@config_options
def evaluate(
    artifact, data_dir, tokenizer, ttt, report_path, save_token_nll, max_tokens, preset, overrides
) -> None:
    """Score ARTIFACT (a .pgolf file or a checkpoint run dir) on the val split: val_bpb."""
    from pgolf import runtime
    from pgolf.eval.evaluate import evaluate_artifact
    from pgolf.eval.report import detail_line, summary_line, write_report

    overrides = tuple(overrides) + ((f"eval.ttt={ttt}",) if ttt else ())
    cfg = resolve_config(preset, overrides).eval
    d = runtime.init(cfg.device)
    try:
        report = evaluate_artifact(
            artifact,
            data_dir,
            tokenizer,
            cfg,
            max_tokens=max_tokens,
            save_token_nll=save_token_nll,
            d=d,
        )
        if d.is_main:
            click.echo(detail_line(report))
            click.echo(summary_line(report))
            if report_path is not None:
                write_report(report_path, report)
    finally:
        runtime.shutdown()


main = standalone(evaluate)
