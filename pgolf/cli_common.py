"""Pieces every command shares: --preset/--set options, one-line errors, lazy subcommands."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from pgolf.errors import PgolfError


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--preset NAME`` and repeatable ``--set section.key=value``."""
    fn = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config field, e.g. --set model.num_layers=9 (repeatable).",
    )(fn)
    return click.option(
        "--preset", default="default", show_default=True, help="Named preset (default, tiny)."
    )(fn)


def resolve_config(preset: str, overrides: tuple[str, ...]):
    from pgolf.config import resolve

    return resolve(preset, overrides)


def _report(err: PgolfError) -> None:
    click.echo(f"error: {err}", err=True)


class ErrorHandlingGroup(click.Group):
    """Turns PgolfError anywhere below into 'error: ...' on stderr and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgolfError as e:
            _report(e)
            ctx.exit(2)


class LazyGroup(ErrorHandlingGroup):
    """Subcommands imported on first use, so ``pgolf --help`` does not import torch."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


def standalone(command: click.Command) -> Callable[[], None]:
    """Entry point for a single command (bin/pgolf-train, bin/pgolf-eval) with one-line errors."""

    @functools.wraps(command.main)
    def main() -> None:
        try:
            command.main(standalone_mode=False)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Abort:
            sys.exit(130)
        except PgolfError as e:
            _report(e)
            sys.exit(2)

    return main
