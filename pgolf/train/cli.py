"""Placeholder until the trainer lands (issue 3)."""

import click

from pgolf.cli_common import standalone
from pgolf.errors import NotImplementedYet


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args: tuple[str, ...]) -> None:
    """Train a model (not implemented yet)."""
    raise NotImplementedYet("pgolf train is not implemented yet")


main = standalone(train)
