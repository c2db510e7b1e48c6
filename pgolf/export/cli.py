"""``pgolf export RUN_DIR... --out DIR`` and ``pgolf validate DIR``."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Records folder to write, e.g. records/track_10min_16mb/2026-05-01_MyRun.",
)
@click.option("--author", required=True, help="Your name, as submission.json shows it.")
@click.option("--github-id", required=True, help="Your GitHub user name.")
@click.option("--name", required=True, help="The submission's title.")
@click.option("--blurb", default="", help="One paragraph: what is new in this submission.")
@click.option("--date", default=None, help="YYYY-MM-DD (default: today).")
def export(run_dirs, out, author, github_id, name, blurb, date):
    """Write a records folder from finished `pgolf run` folders (one per seed)."""
    from pgolf.cli_common import check_output_dir
    from pgolf.export.records import Submitter, export_records

    check_output_dir(out, "the records folder (--out)")
    who = Submitter(
        author=author,
        github_id=github_id,
        name=name,
        blurb=blurb,
        date=date or datetime.date.today().isoformat(),
    )
    sub = export_records(list(run_dirs), out, who)
    click.echo(
        f"export out:{out} seeds:{','.join(map(str, sub['seeds']))} val_bpb:{sub['val_bpb']:.6f} "
        f"bytes_total:{sub['bytes_total']} bytes_code:{sub['bytes_code']}"
    )
    click.echo(json.dumps(sub["compliance"]))


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
def validate(folder):
    """Check a records folder as reviewers do; one line per problem, exit 1 on any."""
    from pgolf.export.validate import validate as check

    problems = check(folder)
    for line in problems:
        click.echo(f"problem: {line}")
    if problems:
        sys.exit(1)
    click.echo(f"ok: {folder} passes")
