"""``pgolf pack`` / ``unpack`` / ``inspect``: thin click wrappers over pgolf.pack.api."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pgolf.cli_common import check_output_dir, check_output_file, config_options, resolve_config


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
    """Prune, quantize and entropy-code CHECKPOINT (a run dir) into an artifact.

    Under torchrun (several GPUs) every rank generates its share of GPTQ's calibration text;
    rank 0 then packs alone."""
    import os

    from pgolf import runtime
    from pgolf.logs import Logger
    from pgolf.pack.api import calibrate_on_ranks, pack_checkpoint, sidecar_path

    check_output_file(output, "the artifact (-o)")
    check_output_file(sidecar_path(output), "the artifact's config sidecar")
    if report is not None:
        check_output_file(report, "the pack report (--report)")
    run = resolve_config(preset, overrides)
    cfg = run.pack
    if budget is not None:
        cfg = run.with_overrides([f"pack.budget_bytes={budget}"]).pack
    runtime.limit_cpu_threads()
    calibration = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        d = runtime.init()
        try:
            calibration = calibrate_on_ranks(checkpoint, cfg, d, Logger(enabled=d.is_main))
        finally:
            runtime.shutdown()  # packing needs no peers: leave together before it starts
        if not d.is_main:
            return
    summary = pack_checkpoint(
        checkpoint,
        output,
        cfg,
        tokenizer=tokenizer,
        log=Logger(),
        progress=not no_progress,
        calibration=calibration,
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

    check_output_dir(output, "the unpacked checkpoint's folder (-o)")
    _check_unpack_target(Path(output))
    t0 = time.perf_counter()
    path = unpack_artifact(artifact, output)
    Logger().log("unpack", checkpoint=str(path), unpack_s=time.perf_counter() - t0)


def _check_unpack_target(out_dir: Path) -> None:
    """Refuse a folder whose checkpoint or config is not an earlier unpack's: a trained run
    dir holds the full-precision checkpoint, and the dequantized one must not replace it."""
    from safetensors import SafetensorError, safe_open

    from pgolf.checkpoint import CHECKPOINT_FILE, CONFIG_FILE
    from pgolf.errors import PgolfError

    ckpt, config = out_dir / CHECKPOINT_FILE, out_dir / CONFIG_FILE
    if ckpt.is_file():
        try:  # the header only: a full load would read every tensor
            with safe_open(str(ckpt), "pt") as f:
                extra = (f.metadata() or {}).get("extra", "")
        except (SafetensorError, OSError):
            extra = ""
        if '"unpacked_from"' in extra:
            return
    elif not config.exists() and not ckpt.exists():
        return
    held = CHECKPOINT_FILE if ckpt.exists() else CONFIG_FILE
    raise PgolfError(
        f"{out_dir} holds a {held} that is not from an earlier unpack (a training run?) and "
        "unpacking would replace it; pass a new folder to -o"
    )


@click.command()
@click.argument("artifact", type=click.Path(), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", type=click.Path(), default=None, help="PNG of bytes per tensor group.")
@click.option("--budget", type=int, default=None, help="Budget to compare the total with.")
@click.option(
    "--code-bytes",
    "code_only",
    is_flag=True,
    help="Report the counted code: the train_gpt.py `pgolf export` writes for --preset/--set.",
)
@config_options
def inspect(artifact, as_json, plot, budget, code_only, preset, overrides):
    """Show ARTIFACT's header, per-tensor bytes and errors, and totals vs the budget."""
    from pgolf.errors import PgolfError
    from pgolf.logs import format_line
    from pgolf.pack import codebytes
    from pgolf.pack.api import inspect_artifact
    from pgolf.pack.report import format_summary, plot_groups

    if code_only:
        m = codebytes.measure(resolve_config(preset, overrides))
        sizes = {
            "modules": len(m.modules),
            "source_bytes": m.source_bytes,
            "minified_bytes": m.minified_bytes,
            "compressed_bytes": m.compressed_bytes,
            "shipped_bytes": m.shipped_bytes,
        }
        click.echo(json.dumps(sizes, indent=2) if as_json else format_line(sizes))
        return
    if artifact is None:
        raise PgolfError("inspect needs an ARTIFACT (or --code-bytes)")
    if plot:
        check_output_file(plot, "the plot (--plot)")
    s = inspect_artifact(artifact, budget=budget)
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))
    if plot:
        plot_groups(s, plot)
