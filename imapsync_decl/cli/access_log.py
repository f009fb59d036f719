"""The ``access-log`` command: who reached the archive, what they did, when, from where."""

from __future__ import annotations

from pathlib import Path

import click

from imapsync_decl.cli.options import (
    EXIT_CODES,
    archive_option,
    config_dir_option,
    format_option,
    print_json,
    valid_config,
)
from imapsync_decl.cli.render import plural, table
from imapsync_decl.cli.search import terminal_text
from imapsync_decl.errors import ExitCode, UsageError


@click.command("access-log", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@click.option(
    "--user",
    metavar="NAME",
    help="Only this user's records (for a failed sign-in: the name tried).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N records.")
@format_option
def access_log_command(
    config_dir: Path,
    archive_path: Path | None,
    user: str | None,
    limit: int | None,
    output_format: str,
) -> int:
    """Show the archive's access log, oldest first: sign-ins (also failed ones, with the
    name tried), sign-outs, message views, downloads, restores and password changes,
    each with its time (UTC), user, target and client address.

    Lines of the log that are not records (a write cut short by a crash, a damaged
    line) are skipped with a warning on stderr. --format json: a list of objects with
    time, user, action, target, address and detail.

    \b
    Examples:
      imapsync-decl access-log --user alice
      imapsync-decl access-log --archive /srv/archive --format json
    """
    from imapsync_decl.store.access_log import scan_access_log

    root = archive_path if archive_path is not None else valid_config(config_dir).archive_path
    if not root.is_dir():
        raise UsageError(f"no archive at {root}")
    reading = scan_access_log(root, user=user, limit=limit)
    for warning in reading.warnings():
        click.echo(f"warning: {warning}", err=True)
    if output_format == "json":
        print_json([entry.to_json() for entry in reading.entries])
        return ExitCode.OK
    if not reading.entries:
        click.echo("no access recorded")
        return ExitCode.OK
    header = ("TIME", "USER", "ACTION", "TARGET", "ADDRESS")
    rows = [
        tuple(
            terminal_text(value or "-")
            for value in (entry.time, entry.user, entry.action, entry.target, entry.address)
        )
        for entry in reading.entries
    ]
    lines = table([header, *rows])
    lines.append(plural(len(rows), "record"))
    click.echo("\n".join(lines))
    return ExitCode.OK
