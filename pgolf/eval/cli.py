"""``pgolf eval ARTIFACT --data DIR --tokenizer MODEL`` (and ``bin/pgolf-eval``, torchrun-ready).

    torchrun --nproc_per_node 8 bin/pgolf-eval artifact.pgolf --data data/ \
        --tokenizer fineweb_1024_bpe.model --report eval.json
"""

from __future__ import annotations

from pathlib import Path

import click

from pgolf.cli_common import check_output_file, config_options, resolve_config, standalone
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
    multiple=True,
    help="Test-time training (default: eval.ttt = two-phase, score-first). Repeat it to score "
    "several modes from one load and one compile; paths then need a {ttt} placeholder.",
)
@click.option(
    "--report",
    "report_path",
    help="Write the report as JSON here ({ttt} is replaced by the mode).",
)
@click.option(
    "--save-token-nll",
    help="Write per-token NLL (nats, float32, stream order) as .npy ({ttt} as for --report).",
)
@click.option(
    "--unverified-tokenizer",
    is_flag=True,
    help="Score an artifact that records no tokenizer sha256 (only the vocab size is then "
    "checked); the report says tokenizer_verified: false.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=2),
    default=None,
    help="Score only this many leading val tokens (quick runs; marked in the report).",
)
@config_options
def evaluate(
    artifact,
    data_dir,
    tokenizer,
    ttt,
    report_path,
    save_token_nll,
    unverified_tokenizer,
    max_tokens,
    preset,
    overrides,
) -> None:
    """Score ARTIFACT (a .pgolf file or a checkpoint run dir) on the val split: val_bpb."""
    from pgolf import runtime
    from pgolf.data.recorded import check_tokenizer_for_data
    from pgolf.eval.evaluate import evaluate_many
    from pgolf.eval.report import detail_line, summary_line, warnings, write_report

    modes = list(dict.fromkeys(ttt)) or [None]
    cfgs = [
        resolve_config(preset, tuple(overrides) + ((f"eval.ttt={m}",) if m else ())).eval
        for m in modes
    ]
    reports_to = _per_mode(report_path, cfgs, "--report")
    nll_to = _per_mode(save_token_nll, cfgs, "--save-token-nll")
    # Output paths and the tokenizer are checked before the artifact is read and scored.
    for path in reports_to or []:
        check_output_file(path, "the report (--report)")
    for path in nll_to or []:
        check_output_file(path, "the token NLL file (--save-token-nll)")
    if tokenizer is not None:
        check_tokenizer_for_data(data_dir, tokenizer)
    d = runtime.init(cfgs[0].device)
    try:
        reports = evaluate_many(
            artifact,
            data_dir,
            tokenizer,
            cfgs,
            max_tokens=max_tokens,
            token_nll_paths=nll_to,
            unverified_tokenizer=unverified_tokenizer,
            d=d,
        )
        if d.is_main:
            for i, report in enumerate(reports):
                click.echo(detail_line(report))
                click.echo(summary_line(report))
                for line in warnings(report):
                    click.echo(line, err=True)
                if reports_to is not None:
                    write_report(reports_to[i], report)
    finally:
        runtime.shutdown()


def _per_mode(template: str | None, cfgs, option: str) -> list[Path] | None:
    """One path per mode from a template; several modes need the {ttt} placeholder."""
    from pgolf.eval.load import EvalInputError

    if template is None:
        return None
    if len(cfgs) > 1 and "{ttt}" not in template:
        raise EvalInputError(
            f"{option} {template!r} needs a {{ttt}} placeholder when several --ttt modes run, "
            "e.g. eval_{ttt}.json"
        )
    return [Path(template.replace("{ttt}", c.ttt)) for c in cfgs]


main = standalone(evaluate)
