"""Placeholder until the evaluator lands (issue 5)."""

import click

from pgolf.cli_common import standalone
from pgolf.errors import NotImplementedYet


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def evaluate(args: tuple[str, ...]) -> None:
    """Evaluate an artifact (not implemented yet)."""
    raise NotImplementedYet("pgolf eval is not implemented yet")


main = standalone(evaluate)
