"""Placeholder until the one-command pipeline lands (issue 6)."""

import click

from pgolf.errors import NotImplementedYet


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Run data → train → pack → eval (not implemented yet)."""
    raise NotImplementedYet("pgolf run is not implemented yet")
