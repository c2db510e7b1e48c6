"""Pieces every command shares: --preset/--set options, one-line errors, lazy subcommands,
and the output-path checks every writing command runs before its work."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pgolf.errors import PgolfError
from pgolf.io import HOST

# The temp names pgolf.io.atomic_open gives: .NAME.pgolf-PID-HOST-RANDOM.tmp
_TEMP_NAME = re.compile(r"^\..+\.pgolf-(?P<pid>\d+)-(?P<host>[A-Za-z0-9]+)-[^/]*\.tmp$")


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


class OutputPathError(PgolfError, ValueError):
    """An output path that cannot be written: a file where a folder is expected, the reverse,
    or a folder without write permission."""


def check_output_file(path: str | Path, what: str = "the output file") -> Path:
    """``path`` once a file can be written there (else a one-line OutputPathError); stale
    temp files of killed pgolf writers in its folder are removed on the way."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(
            f"{path}: is a folder, but {what} is a file; give a file path such as {path / 'NAME'}"
        )
    _check_writable_dir(path, _existing_ancestor(path.parent), what)
    return path


def check_output_dir(path: str | Path, what: str = "the output folder") -> Path:
    """``path`` once it is (or can become) a writable folder, else a one-line OutputPathError;
    stale temp files of killed pgolf writers in it are removed on the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(
            f"{path}: is a file, but {what} is a folder; pass a folder path (existing or new)"
        )
    _check_writable_dir(path, _existing_ancestor(path), what)
    return path


def _existing_ancestor(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_dir(path: Path, folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise OutputPathError(
            f"{path}: {folder} is a file, but {what} needs a folder there; choose another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{path}: cannot write in {folder} (no permission) for {what}; choose a writable "
            "location or fix the folder's permissions"
        )
    remove_stale_temps(folder)


def remove_stale_temps(folder: str | Path) -> int:
    """Delete our temp files in ``folder`` whose writer (a process on this host) is gone.

    A killed ``pgolf pack`` (or any writer) leaves one; a live writer's is left alone.
    """
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TEMP_NAME.match(entry.name)
            if m and m["host"] == HOST and not _alive(int(m["pid"])):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
