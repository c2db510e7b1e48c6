"""Placeholders until the packer lands (issue 4)."""

import click

from pgolf.errors import NotImplementedYet


def _placeholder(name: str) -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise NotImplementedYet(f"pgolf {name} is not implemented yet")

    command.help = f"{name.capitalize()} an artifact (not implemented yet)."
    return command


pack = _placeholder("pack")
unpack = _placeholder("unpack")
inspect = _placeholder("inspect")
