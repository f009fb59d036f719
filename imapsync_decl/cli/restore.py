"""The ``archive restore`` command: parse, call ``run.restore.restore``, render, exit code."""

from __future__ import annotations

from pathlib import Path

import click

from imapsync_decl.cli.options import (
    EXIT_CODES,
    catching_stop,
    config_dir_option,
    format_option,
    print_json,
    setup_logging,
    valid_config,
)
from imapsync_decl.run.executor import StopRequested
from imapsync_decl.run.restore import RestoreRequest, RestoreResult, restore


def shown(text: object) -> str:
    """``text`` safe for a terminal: control characters (ESC too) as ``\\xNN``."""
    return "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in str(text))


@click.command("restore", epilog=EXIT_CODES)
@config_dir_option
@format_option
@click.option(
    "--profile",
    required=True,
    metavar="PROFILE",
    help="Restore to the mailboxes this profile reaches (and log in as it does).",
)
@click.option("--user", metavar="NAME", help="Restore every placement of this archive user.")
@click.option("--folder", metavar="PATH", help="With --user: only this folder and its subfolders.")
@click.option(
    "--query",
    metavar="QUERY",
    help="With --user: only the hits of this search query (needs the search index).",
)
@click.option(
    "--to-folder",
    metavar="PATH",
    help="Put everything into this folder (created "
    "when missing) instead of each message's own folder.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only read: show what would be restored and what is there already; change nothing.",
)
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
def restore_command(
    config_dir: Path,
    output_format: str,
    profile: str,
    user: str | None,
    folder: str | None,
    query: str | None,
    to_folder: str | None,
    dry_run: bool,
    ids: tuple[int, ...],
) -> int:
    """Put archived messages back into the mailboxes a profile reaches.

    Either the placements ID... (the `id` of `archive search` hits) or every
    placement of --user (of --folder and its subfolders, of the hits of --query).
    Each message goes to its user's mailbox under PROFILE, into its own folder or
    into --to-folder, created when missing; exactly the archived bytes, with their
    flags (without \\Recent and \\Deleted) and internal date. A message the target
    folder holds already (same SHA-256, or same Message-ID and size) is skipped, so
    a second restore adds nothing. Recorded as a run (see `imapsync-decl runs`).
    Exit 3 when some messages failed (a user the profile does not reach), 12 when a
    blob is damaged (the others are restored), 13 when the archive is locked.

    \b
    Examples:
      imapsync-decl archive restore 1042 1043 --profile staff
      imapsync-decl archive restore --user alice --folder Projekte --profile staff
      imapsync-decl archive restore --user alice --query 'from:bob contract' \\
          --profile staff --to-folder Restored --dry-run
    """
    config = valid_config(config_dir)
    request = RestoreRequest(
        profile=profile,
        ids=ids,
        user=user,
        folder=folder,
        query=query,
        to_folder=to_folder,
        dry_run=dry_run,
    )
    setup_logging()
    stop = StopRequested()
    with catching_stop(stop):
        result = restore(config, request, should_stop=stop.__bool__)
    if output_format == "json":
        print_json(result.to_json())
    else:
        click.echo(render_restore(result))
    return stop.exit_code if stop else result.exit_code


def render_restore(result: RestoreResult) -> str:
    """The text summary: per user and folder, then the totals and every error."""
    document = result.to_json()
    verb = "would restore" if result.dry_run else "restored"
    lines: list[str] = []
    if result.dry_run:
        for message in document["messages"]:
            what = {"restored": "restore", "already_there": "skip (already there)"}.get(
                message["outcome"], "fail"
            )
            lines.append(
                f"  {what}: id {message['id']} {shown(message['user'])}"
                f" {shown(message['folder'])} -> {shown(message['target'])}"
            )
    for count in document["folders"]:
        created = " (created)" if count["created"] else ""
        lines.append(
            f"{shown(count['user'])} {shown(count['folder'])}{created}: {verb}"
            f" {count['restored']}, already there {count['already_there']},"
            f" failed {count['failed']}"
        )
    totals = document["totals"]
    lines.append(
        f"{'Dry run: ' if result.dry_run else ''}{verb} {totals['restored']},"
        f" already there {totals['already_there']}, failed {totals['failed']}"
        + (f" ({totals['damaged']} damaged blobs)" if totals["damaged"] else "")
        + ("" if result.dry_run else f"; run {result.run_id}")
    )
    lines.extend(f"! error: {shown(error)}" for error in result.errors)
    return "\n".join(lines)
