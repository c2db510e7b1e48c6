"""``pgolf data build | fetch | info``: thin click wrappers over pgolf.data's modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from pgolf.cli_common import (
    ErrorHandlingGroup,
    check_output_dir,
    config_options,
    resolve_config,
)
from pgolf.errors import ConfigError, DataError


@click.group(cls=ErrorHandlingGroup)
def data() -> None:
    """Build, download and inspect token shards in the challenge's format."""


def _with_flags(run_config, **flags):
    """Explicit flags beat --preset/--set; validation errors name the flag's config key."""
    updates = {k: v for k, v in flags.items() if v is not None}
    if not updates:
        return run_config
    try:
        section = dataclasses.replace(run_config.data, **updates)
    except ValueError as e:
        raise ConfigError(f"invalid data config: {e}") from None
    return dataclasses.replace(run_config, data=section)


@data.command()
@click.argument("more_inputs", nargs=-1, type=click.Path(path_type=Path), metavar="[FILE]...")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Text file: .txt (blank-line-separated documents), .jsonl or .jsonl.zst/.xz/.gz "
    "(field 'text'). Repeatable, and files may follow it "
    "(--input a.jsonl.zst b.jsonl.zst); input order is kept.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output directory for shards, tokenizer, manifest.json and config.json.",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    help="SentencePiece .model to encode with (default: train a BPE one).",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Use the embedded demo corpus (Python's own docs) with the 'tiny' preset.",
)
@click.option("--vocab-size", type=int, help="Vocabulary of the trained tokenizer.")
@click.option("--val-docs", type=int, help="Leading documents that form the val split.")
@click.option("--shard-tokens", type=int, help="Tokens per shard (default 100,000,000).")
@click.option("--workers", type=int, help="Encoding processes (0 = one per core).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@config_options
def build(
    more_inputs,
    inputs,
    out_dir,
    tokenizer,
    demo,
    vocab_size,
    val_docs,
    shard_tokens,
    workers,
    progress,
    preset,
    overrides,
):
    """Tokenize text files into fineweb_{val,train}_NNNNNN.bin shards."""
    from pgolf.data.build import build as run_build
    from pgolf.logs import Logger

    check_output_dir(out_dir, "the shard folder (--out)")
    if demo and preset == "default":
        preset = "tiny"
    cfg = _with_flags(
        resolve_config(preset, overrides),
        vocab_size=vocab_size,
        val_docs=val_docs,
        shard_tokens=shard_tokens,
        workers=workers,
    )
    inputs = [*inputs, *more_inputs]
    if demo and not inputs:
        from pgolf.data.demo import write_demo_corpus

        inputs = [write_demo_corpus(out_dir)]
    elif demo:
        raise DataError("--demo builds the embedded corpus; drop it or drop --input")
    if not inputs:
        raise DataError("no input: pass --input FILE (repeatable) or --demo")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir / "config.json")
    with Logger(out_dir / "build_log.jsonl") as log:
        run_build(inputs, out_dir, cfg.data, tokenizer, log=log, progress=progress)


@data.command()
@click.option(
    "--variant",
    default="sp1024",
    show_default=True,
    help="Challenge tokenizer family: sp512, sp1024, sp2048, sp4096.",
)
@click.option(
    "--train-shards",
    type=int,
    default=1,
    show_default=True,
    help="Train shards to download (100M tokens each); the val shard always comes.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option(
    "--repo-id", default=None, help="Hugging Face dataset repo (default: the challenge's)."
)
@click.option("--remote-root", default=None, help="Folder of the export inside the repo.")
@click.option("--revision", default=None, help="Branch, tag or commit of the repo.")
def fetch(variant, train_shards, out_dir, repo_id, remote_root, revision):
    """Download the challenge's published shards and tokenizer (needs network + pgolf[online])."""
    from pgolf.data import fetch as fetch_mod
    from pgolf.logs import Logger

    check_output_dir(out_dir, "the shard folder (--out)")
    record = fetch_mod.fetch(
        variant,
        train_shards,
        out_dir,
        repo_id=repo_id or fetch_mod.DEFAULT_REPO_ID,
        remote_root=fetch_mod.DEFAULT_REMOTE_ROOT if remote_root is None else remote_root,
        revision=revision,
    )
    Logger().log("fetch_done", out=str(out_dir), files=len(record["files"]), variant=variant)


@data.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    help="Tokenizer the shards were encoded with (default: DIR/tokenizer.model).",
)
def info(data_dir, tokenizer):
    """Per split: shards, documents, tokens and bpb bytes, as key:value lines."""
    from pgolf.data.info import data_info
    from pgolf.logs import format_value

    for key, value in data_info(data_dir, tokenizer).items():
        click.echo(f"{key}:{format_value(value)}")
