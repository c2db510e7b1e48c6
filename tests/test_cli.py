"""The root command: help lists every command, errors are one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.cli_common import ErrorHandlingGroup, LazyGroup, standalone
from pgolf.errors import DataError

COMMANDS = ("data", "train", "pack", "unpack", "inspect", "eval", "run")


def test_root_help_lists_all_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert name in result.output


def test_data_help_lists_subcommands():
    result = CliRunner().invoke(cli, ["data", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("build", "fetch", "info"):
        assert name in result.output
    for sub in ("build", "fetch", "info"):
        assert CliRunner().invoke(cli, ["data", sub, "--help"]).exit_code == 0


def test_version_and_unknown_command():
    assert CliRunner().invoke(cli, ["--version"]).exit_code == 0
    result = CliRunner().invoke(cli, ["nosuchcommand"])
    assert result.exit_code != 0 and "No such command" in result.output


def test_root_help_does_not_import_torch():
    code = (
        "import sys\nfrom pgolf.cli import cli\ntry:\n    cli(['--help'])\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def _group_with(exc: Exception, cls=ErrorHandlingGroup) -> click.Group:
    @click.group(cls=cls)
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise exc

    return group


def test_pgolf_errors_become_one_line_exit_2():
    result = CliRunner().invoke(_group_with(DataError("x.bin: bad magic")), ["boom"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: x.bin: bad magic"


def test_other_exceptions_are_not_swallowed():
    result = CliRunner().invoke(_group_with(RuntimeError("bug")), ["boom"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_lazy_group_resolves_named_commands():
    group = LazyGroup(name="g", lazy={"data": "pgolf.data.cli:data"})
    ctx = click.Context(group)
    assert group.list_commands(ctx) == ["data"]
    assert group.get_command(ctx, "data").name == "data"
    assert group.get_command(ctx, "missing") is None


def test_standalone_entry_point_exit_codes(monkeypatch, capsys):
    @click.command()
    @click.option("--fail", is_flag=True)
    def cmd(fail: bool) -> None:
        if fail:
            raise DataError("broken input")

    main = standalone(cmd)
    for argv, code in ((["x"], 0), (["x", "--fail"], 2), (["x", "--bogus"], 2)):
        monkeypatch.setattr(sys, "argv", argv)
        try:
            main()
            rc = 0
        except SystemExit as e:
            rc = e.code
        assert rc == code, argv
    assert "error: broken input" in capsys.readouterr().err
