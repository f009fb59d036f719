"""The commands that read the archive back: ``archive export|verify|rebuild-index|stats``, ``runs``.

Export, verify and the statistics open the archive read-only; ``rebuild-index``
takes the archive's lock and restores the index from the journal; ``runs`` lists
the protocols of past runs or shows one.
"""

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
from imapsync_decl.cli.render import plural, render_run, render_run_list, render_stats
from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.plan.planner import open_index_if_exists
from imapsync_decl.run.service import list_runs, rebuild_archive_index, show_run
from imapsync_decl.store import Archive
from imapsync_decl.store.export import export_archive
from imapsync_decl.store.runs import list_document, protocol_document
from imapsync_decl.store.stats import gather_stats
from imapsync_decl.store.verify import verify


def _existing_archive(config_dir: Path, archive_path: Path | None) -> Archive:
    root = archive_path if archive_path is not None else valid_config(config_dir).archive_path
    index = open_index_if_exists(root)
    if index is None:
        raise UsageError(f"no archive at {root} (run `apply` first)")
    index.close()
    return Archive.open(root, read_only=True)


@click.command("export", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@click.option(
    "--format",
    "export_format",
    type=click.Choice(["eml", "mbox", "maildir"]),
    default="eml",
    show_default=True,
    help="eml: one file per message; mbox: one mboxrd file per folder; maildir: one "
    "maildir per folder.",
)
@click.option("--user", metavar="USER", help="Only this archive user.")
@click.option(
    "--folder", metavar="PATH", help="Only this folder path (e.g. INBOX or Projects/2024)."
)
@click.argument("destination", type=click.Path(path_type=Path, file_okay=False))
def archive_export(
    config_dir: Path,
    archive_path: Path | None,
    export_format: str,
    user: str | None,
    folder: str | None,
    destination: Path,
) -> int:
    """Export messages as files below DEST/<user>/<archive folder>/<folder path>.

    \b
    eml      <folder path>/<uidvalidity>-<uid>.eml, exactly the archived bytes
    mbox     <folder path>.mbox, mboxrd: "From MAILER-DAEMON <internal date, UTC>"
             lines, LF line endings, ">From " quoting: NOT byte-exact
    maildir  <folder path>/cur/<epoch>.<uidvalidity>_<uid>.imapsync-decl:2,<flags>,
             exactly the archived bytes, mtime = internal date, flags as
             D F P R S T (\\Draft \\Flagged $Forwarded \\Answered \\Seen \\Deleted)

    Folder levels are directories. Names that cannot be path components ('/',
    NUL, '.', '..') are escaped as %XX; a name over 255 bytes is cut and ends with
    %~ and 16 hex digits of its SHA-256. Every file is written under a temporary
    name and renamed. DEST and the directories below it must be real directories of
    the running user that group and others cannot write (exit 10 naming the path
    otherwise). A message whose blob is damaged or missing is left out and listed on
    stderr; the others are exported, then exit 12. An empty selection writes nothing.

    \b
    Examples:
      imapsync-decl archive export --format maildir out/
      imapsync-decl archive export --format mbox --user alice --folder INBOX out/
      imapsync-decl archive export --archive /srv/archive out/
    """
    with _existing_archive(config_dir, archive_path) as archive:
        exported = export_archive(archive, destination, export_format, user=user, folder=folder)
    if not exported.messages and not exported.failed:
        selection = ", ".join(
            f"{name} {value!r}" for name, value in (("user", user), ("folder", folder)) if value
        )
        click.echo(
            f"nothing to export: no archived messages{' for ' + selection if selection else ''};"
            " nothing written"
        )
        return ExitCode.OK
    files = "" if export_format != "mbox" else f" in {plural(exported.files, 'file')}"
    click.echo(
        f"exported {plural(exported.messages, 'message')}{files} ({exported.bytes} bytes,"
        f" {export_format}) to {destination}"
    )
    if exported.failed:
        for failed in exported.failed:
            click.echo(f"not exported: {failed}", err=True)
        click.echo(
            f"error: {plural(len(exported.failed), 'message')} not exported: damaged or missing"
            " blobs; run `archive verify`, then `apply --repair`",
            err=True,
        )
        return ExitCode.INTEGRITY
    return ExitCode.OK


@click.command("verify", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
def archive_verify(config_dir: Path, archive_path: Path | None, output_format: str) -> int:
    """Re-hash every blob and check that every index row resolves to one.

    Exit 12 naming each damaged or missing blob. Orphan blobs (left by a crash,
    reused by the next apply) are reported but are no failure.
    """
    with _existing_archive(config_dir, archive_path) as archive:
        report = verify(archive.blobs, archive.index)
    if output_format == "json":
        print_json(
            {
                "ok": report.ok,
                "checked": report.checked,
                "damaged": list(report.damaged),
                "missing": list(report.missing),
                "orphans": list(report.orphans),
            }
        )
    else:
        for sha in report.damaged:
            click.echo(f"damaged blob: {sha}", err=True)
        for sha in report.missing:
            click.echo(f"missing blob: {sha}", err=True)
        click.echo(
            f"checked {plural(report.checked, 'blob')}: {len(report.damaged)} damaged, "
            f"{len(report.missing)} missing, {len(report.orphans)} orphaned"
        )
        if not report.ok:
            click.echo(
                "run `apply --repair` to fetch their messages again from the server", err=True
            )
    return ExitCode.OK if report.ok else ExitCode.INTEGRITY


@click.command("rebuild-index", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
@click.option("--force", is_flag=True, help="Rebuild even when the index is healthy.")
def archive_rebuild_index(
    config_dir: Path, archive_path: Path | None, output_format: str, force: bool
) -> int:
    """Rebuild a damaged or lost index from the archive's journal.

    Every user, mailbox, folder, message and placement (and the runs) is restored
    from journal/; torn last records of a crash are ignored. The old database is
    kept as index.sqlite.damaged-<time>. Checkpoints are not restored: the next
    apply searches every folder once, and archives nothing twice. A healthy index
    is left alone unless --force (exit 10). Takes the archive's lock.

    \b
    Examples:
      imapsync-decl archive rebuild-index
      imapsync-decl archive rebuild-index --archive /srv/archive
    """
    root = archive_path if archive_path is not None else valid_config(config_dir).archive_path
    report = rebuild_archive_index(root, force=force)
    restored = {
        kind: report.restored.get(kind, 0)
        for kind in ("user", "mailbox", "folder", "message", "place", "move", "run")
    }
    left_out = {
        kind: report.restored.get(kind, 0)
        for kind in ("missing_blobs", "placements_without_blob", "conflicts")
    }
    if output_format == "json":
        print_json(
            {
                "index": str(report.index),
                "kept_as": str(report.kept_as) if report.kept_as else None,
                "segments": report.read.segments,
                "records": report.read.records,
                "torn": report.read.torn,
                "damaged": report.read.damaged,
                "restored": restored,
                "left_out": left_out,
            }
        )
    else:
        click.echo(
            f"rebuilt {report.index} from {plural(report.read.records, 'journal record')}"
            f" in {plural(report.read.segments, 'segment')}: {restored['place']} placements,"
            f" {restored['message']} messages, {restored['run']} runs"
            + (f"; the old index is kept as {report.kept_as}" if report.kept_as else "")
        )
        if report.read.torn:
            click.echo(f"ignored {report.read.torn} torn record(s) of an interrupted write")
        for kind, count in (("damaged journal record", report.read.damaged), *left_out.items()):
            if count:
                click.echo(f"warning: left out {count}: {kind}", err=True)
    problems = report.read.damaged + sum(left_out.values())
    return ExitCode.INTEGRITY if problems else ExitCode.OK


@click.command("stats", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
def archive_stats(config_dir: Path, archive_path: Path | None, output_format: str) -> int:
    """Show what the archive holds and what deduplication and compression save.

    Users, mailboxes, folders, messages (distinct contents, one blob each) and
    placements (copies in folders); bytes in folders (every placement), original
    (every distinct message) and stored (compressed, on disk); the ratios
    dedup = in folders / original, compression = original / stored and overall =
    in folders / stored; and per user its mailboxes, folders, messages, placements
    and bytes; the search index: messages indexed, of them found by their headers
    only (text not extractable), and not indexed yet. Only the indexes are read.

    \b
    Examples:
      imapsync-decl archive stats
      imapsync-decl archive stats --archive /srv/archive --format json
    """
    with _existing_archive(config_dir, archive_path) as archive:
        stats = gather_stats(archive.index, archive.root)
    if output_format == "json":
        print_json(stats.to_json())
    else:
        click.echo(render_stats(stats))
    return ExitCode.OK


# --- runs ------------------------------------------------------------------------------------


@click.command("runs", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
@click.option("--last", is_flag=True, help="Show the protocol of the newest run.")
@click.argument("run_id", required=False, metavar="[RUN_ID]")
def runs_command(
    config_dir: Path,
    archive_path: Path | None,
    output_format: str,
    last: bool,
    run_id: str | None,
) -> int:
    """List past runs, newest first, or show one run's whole protocol.

    Without arguments: one line per run with its id, start, end, status and
    totals (archived, already present, failed mailboxes). With --last or a
    RUN_ID (a whole id, or a prefix naming one run): the run's protocol, its
    start and end, status, warnings, per mailbox and folder what was archived,
    already present, vanished or skipped, and every error. --format json prints
    the stored protocol document (the one `apply --format json` printed). An
    unknown RUN_ID exits 10. Passwords are never part of a protocol.

    \b
    Examples:
      imapsync-decl runs
      imapsync-decl runs --last
      imapsync-decl runs 3f2a9c1e --format json
      imapsync-decl runs --archive /srv/archive --format json
    """
    if last and run_id is not None:
        raise UsageError("give either --last or a RUN_ID, not both")
    root = archive_path if archive_path is not None else valid_config(config_dir).archive_path
    if not last and run_id is None:
        listed = list_runs(root)
        if listed is None:
            if output_format == "json":
                print_json([])
            else:
                click.echo(f"no runs yet (no archive at {root})")
        elif output_format == "json":
            print_json(list_document(listed))
        else:
            click.echo(render_run_list(listed))
        return ExitCode.OK
    run = show_run(root, run_id)
    if output_format == "json":
        print_json(protocol_document(run))
    else:
        click.echo(render_run(run))
    return ExitCode.OK
