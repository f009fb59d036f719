"""The ``users`` commands: bring the archive's user list up to date, and list it."""

from __future__ import annotations

from pathlib import Path

import click

from imapsync_decl.cli.options import (
    EXIT_CODES,
    config_dir_option,
    format_option,
    print_json,
    setup_logging,
    valid_config,
)
from imapsync_decl.cli.render import render_users
from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.run.service import list_users, sync_users


@click.group("users", epilog=EXIT_CODES)
def users_group() -> None:
    """The archive's user list: Users documents, directory users, users of CSV profiles."""


@users_group.command("sync", epilog=EXIT_CODES)
@config_dir_option
@format_option
def users_sync(config_dir: Path, output_format: str) -> int:
    """Read every directory of the Users documents and bring the user list up to date.

    Adds new users, updates changed ones, and marks users that left the directory as
    gone (their archived mail stays). Takes the archive's lock. Exit 3 when a
    directory cannot be read (nothing is changed for it).
    """
    config = valid_config(config_dir)
    if not config.directories:
        raise UsageError("no Users document has a directory to synchronise with")
    setup_logging()
    changes, read = sync_users(config)
    if output_format == "json":
        print_json({"changes": changes, "warnings": read.warnings, "error": read.error})
    else:
        for warning in read.warnings:
            click.echo(f"warning: {warning}", err=True)
        for directory, found in changes.items():
            click.echo(f"{directory}:")
            for kind in ("added", "updated", "returned", "gone"):
                for name in found[kind]:
                    click.echo(f"  {kind:8} {name}")
            if not any(found.values()):
                click.echo("  no changes")
    if read.error is not None:
        click.echo(f"error: {read.error}", err=True)
        return ExitCode.PARTIAL
    return ExitCode.OK


@users_group.command("list", epilog=EXIT_CODES)
@config_dir_option
@format_option
def users_list(config_dir: Path, output_format: str) -> int:
    """List the archive's users: NAME, E-MAIL, ALIASES, DISPLAY NAME, SOURCE, STATUS.

    SOURCE is document (a Users document), directory (synchronised from a directory;
    STATUS gone once it left it), csv or single (created by such a profile's apply).
    """
    rows = list_users(valid_config(config_dir))
    if output_format == "json":
        print_json(rows)
    else:
        click.echo(render_users(rows))
    return ExitCode.OK
