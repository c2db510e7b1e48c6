"""``pgolf pack`` / ``unpack`` / ``inspect``: thin click wrappers over pgolf.pack.api."""

from __future__ import annotations

import json

import click

from pgolf.cli_common import config_options, resolve_config


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Artifact file to write.")
@click.option(
    "--budget",
    type=int,
    default=None,
    help="Byte budget, code included (decimal; default pack.budget_bytes=16000000).",
)
@click.option(
    "--tokenizer",
    type=click.Path(),
    default=None,
    help="SentencePiece .model whose sha256 and vocab size the artifact records.",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@click.option("--report", type=click.Path(), default=None, help="Write the pack summary as JSON.")
@config_options
def pack(checkpoint, output, budget, tokenizer, no_progress, report, preset, overrides):
    """Prune, quantize and entropy-code CHECKPOINT (a run dir) into an artifact."""
    from pgolf.logs import Logger
    from pgolf.pack.api import pack_checkpoint

    run = resolve_config(preset, overrides)
    cfg = run.pack
    if budget is not None:
        cfg = run.with_overrides([f"pack.budget_bytes={budget}"]).pack
    summary = pack_checkpoint(
        checkpoint, output, cfg, tokenizer=tokenizer, log=Logger(), progress=not no_progress
    )
    if report is not None:
        from pgolf.io import atomic_write_text

        atomic_write_text(report, json.dumps(summary, indent=2) + "\n")


@click.command()
@click.argument("artifact", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Directory to write.")
def unpack(artifact, output):
    """Write ARTIFACT's dequantized checkpoint.safetensors + config.json to a directory."""
    import time

    from pgolf.logs import Logger
    from pgolf.pack.api import unpack_artifact

    t0 = time.perf_counter()
    path = unpack_artifact(artifact, output)
    Logger().log("unpack", checkpoint=str(path), unpack_s=time.perf_counter() - t0)


@click.command()
@click.argument("artifact", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", type=click.Path(), default=None, help="PNG of bytes per tensor group.")
@click.option("--budget", type=int, default=None, help="Budget to compare the total with.")
@click.option(
    "--code-bytes",
    "code_only",
    is_flag=True,
    help="Report the counted eval-side code bytes (no artifact needed).",
)
def inspect(artifact, as_json, plot, budget, code_only):
    """Show ARTIFACT's header, per-tensor bytes and errors, and totals vs the budget."""
    from pgolf.errors import PgolfError
    from pgolf.pack import codebytes
    from pgolf.pack.api import inspect_artifact
    from pgolf.pack.report import format_summary, plot_groups

    if code_only:
        m = codebytes.measure()
        if as_json:
            click.echo(json.dumps(m.__dict__, indent=2))
        else:
            click.echo(
                f"files:{len(m.files)} source_bytes:{m.source_bytes} minified_bytes:"
                f"{m.minified_bytes} lzma_bytes:{m.lzma_bytes} shipped_bytes:"
                f"{m.shipped_bytes}"
            )
        return
    if artifact is None:
        raise PgolfError("inspect needs an ARTIFACT (or --code-bytes)")
    s = inspect_artifact(artifact, budget=budget)
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))
    if plot:
        plot_groups(s, plot)
