"""The ``pgolf`` command: data → train → pack → eval, each a separate process with files between."""

from __future__ import annotations

import click

from pgolf.cli_common import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy={
        "data": "pgolf.data.cli:data",
        "train": "pgolf.train.cli:train",
        "pack": "pgolf.pack.cli:pack",
        "unpack": "pgolf.pack.cli:unpack",
        "inspect": "pgolf.pack.cli:inspect",
        "eval": "pgolf.eval.cli:evaluate",
        "run": "pgolf.pipeline.cli:run",
        "export": "pgolf.export.cli:export",
        "validate": "pgolf.export.cli:validate",
    },
)
@click.version_option(package_name="pgolf")
def cli() -> None:
    """pgolf: compression-first toolkit for the OpenAI Parameter Golf challenge."""


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
