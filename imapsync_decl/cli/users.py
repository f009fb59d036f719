"""The ``users`` commands: bring the archive's user list up to date, list it, and set
the users' web passwords."""

from __future__ import annotations

import getpass
import sys
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
from imapsync_decl.run.accounts import disable_web_password, set_web_password
from imapsync_decl.run.service import list_users, sync_users

# Longest password accepted (the accounts store refuses longer ones), plus its line end.
_STDIN_LIMIT = 1024 + 2


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
    """List the archive's users: NAME, E-MAIL, ALIASES, DISPLAY NAME, SOURCE, STATUS, WEB.

    SOURCE is document (a Users document), directory (synchronised from a directory;
    STATUS gone once it left it), csv or single (created by such a profile's apply).
    WEB (web_password in JSON) is set (a web password is set), disabled (`users passwd
    --disable`) or none.
    """
    rows = list_users(valid_config(config_dir))
    if output_format == "json":
        print_json(rows)
    else:
        click.echo(render_users(rows))
    return ExitCode.OK


@users_group.command("passwd", epilog=EXIT_CODES)
@config_dir_option
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts).",
)
@click.option("--disable", is_flag=True, help="No web sign-in for this user any more.")
@click.argument("name")
def users_passwd(config_dir: Path, password_stdin: bool, disable: bool, name: str) -> int:
    """Set or reset the web password of the archive user NAME, or --disable its web access.

    On a terminal the password is asked twice, without echo (different answers: exit
    10); with --password-stdin it is the first line of standard input. It is stored
    only as an Argon2id hash in accounts.sqlite in the archive directory, never
    logged or shown. Setting a password enables a disabled user again; both end the
    user's web sessions and are written to the access log. NAME must be a user of
    `users list` (else exit 10); the password must not be empty nor longer than 1024
    characters (exit 10).

    \b
    Examples:
      imapsync-decl users passwd alice
      printf '%s\\n' "$PASSWORD" | imapsync-decl users passwd --password-stdin alice
      imapsync-decl users passwd --disable bob
    """
    config = valid_config(config_dir)
    if disable and password_stdin:
        raise UsageError("--disable takes no password: leave out --password-stdin")
    setup_logging()
    if disable:
        disable_web_password(config, name)
        click.echo(f"web access of {name} disabled")
        return ExitCode.OK
    password = _read_password_stdin() if password_stdin else _ask_password(name)
    set_web_password(config, name, password)
    click.echo(f"web password of {name} set")
    return ExitCode.OK


def _read_password_stdin() -> str:
    raw = sys.stdin.buffer.readline(_STDIN_LIMIT * 4 + 1)  # UTF-8: up to 4 bytes a character
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError("the password on standard input is not UTF-8") from None
    if line.endswith("\n"):
        line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
    elif len(raw) > _STDIN_LIMIT * 4:
        raise UsageError("the password on standard input is longer than 1024 characters")
    return line


def _ask_password(name: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            "standard input is not a terminal: give the password with --password-stdin"
        )
    first = getpass.getpass(f"New web password for {name}: ")
    second = getpass.getpass("The same again: ")
    if first != second:
        raise UsageError("the two passwords differ; nothing was changed")
    return first
