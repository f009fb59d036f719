"""The commands that find archived messages: ``archive search|show|rebuild-search``.

``search`` and ``show`` only read (the search index and the index, opened
read-only); ``rebuild-search`` takes the archive's lock and indexes from the blobs
what has no search document yet. Nothing of a message reaches a terminal
unescaped: text output passes through :func:`terminal_text`, which drops escape
sequences and control characters; ``show --raw`` writes the archived bytes, and only
them, to stdout.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from imapsync_decl.cli.render import plural
from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.store.search.database import damaged, open_search
from imapsync_decl.store.search.find import Hit, Scope, find
from imapsync_decl.store.search.query import SORTS, parse_query

# An escape sequence: CSI (ESC [ ... final), OSC/DCS/APC/PM/SOS (up to BEL or ST), or
# ESC and one character; then every other control character (C0, DEL, C1).
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|\x9b[0-?]*[ -/]*[@-~]?",
    re.DOTALL,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\t\n\r\x0b\x0c\x85\u2028\u2029]+")
SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject", "Message-ID")


def terminal_text(text: str, *, multiline: bool = False) -> str:
    """``text`` safe for a terminal: escape sequences and control characters removed;
    line breaks and tabs kept when ``multiline``, else each run of them one space."""
    text = _ESCAPES.sub("", text)
    if multiline:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    else:
        text = _LINE_BREAKS.sub(" ", text)
    return _CONTROLS.sub("", text)


def _archive_root(config_dir: Path, archive_path: Path | None) -> Path:
    root = archive_path if archive_path is not None else valid_config(config_dir).archive_path
    if not (root / "index.sqlite").is_file():
        raise UsageError(f"no archive at {root} (run `apply` first)")
    return root


# --- search ----------------------------------------------------------------------------------


@click.command("search", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@click.option("--user", metavar="NAME", help="Only this archive user's messages.")
@click.option("--mailbox", metavar="ADDR", help="Only this mailbox (its archive folder).")
@click.option("--folder", metavar="PATH", help="Only this folder and its subfolders.")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Hits shown."
)
@click.option("--offset", type=click.IntRange(0), default=0, help="Hits skipped first.")
@click.option(
    "--sort",
    type=click.Choice(list(SORTS)),
    default=None,
    help="relevance (the default with free-text words), -date (newest first; the default"
    " otherwise) or date.",
)
@format_option
@click.argument("words", nargs=-1, required=True, metavar="QUERY...")
def archive_search(
    config_dir: Path,
    archive_path: Path | None,
    user: str | None,
    mailbox: str | None,
    folder: str | None,
    limit: int,
    offset: int,
    sort: str | None,
    output_format: str,
    words: tuple[str, ...],
) -> int:
    """Find archived messages: one hit per placement (a message in two folders is
    found in both).

    The QUERY words are joined with spaces and read as one query: free text (every
    word must match, word* for a prefix), "exact phrase", from:, to: (To, Cc or
    Bcc), subject:, has:attachment, attachment:NAME, after:YYYY-MM-DD (inclusive),
    before:YYYY-MM-DD (exclusive), larger:SIZE, smaller:SIZE (e.g. 5M), NOT term,
    term OR term. Matching ignores case and diacritics. An invalid query exits 10.
    Text output: per hit a line with date, user, folder, from, subject and id (for
    `archive show`), then the snippet; --format json: a list of objects.

    \b
    Examples:
      imapsync-decl archive search from:auditor after:2024-03-01 before:2024-04-01 has:attachment
      imapsync-decl archive search --user alice '"the contract"' from:bob
      imapsync-decl archive search --folder Projekte --sort -date budget OR Budget
    """
    text = " ".join(words)
    query = parse_query(text)
    root = _archive_root(config_dir, archive_path)
    with open_search(root) as search:
        try:
            hits = find(
                search,
                query,
                Scope(user=user, mailbox=mailbox, folder=folder),
                sort=sort or "relevance",
                limit=limit,
                offset=offset,
            )
        except sqlite3.DatabaseError as exc:
            raise damaged(root, exc) from None
    if output_format == "json":
        print_json([hit.to_json() for hit in hits])
    elif not hits:
        click.echo("no messages found")
    else:
        for hit in hits:
            click.echo(_hit_line(hit))
            if hit.snippet:
                click.echo(f"    {terminal_text(hit.snippet)}")
    return ExitCode.OK


def _hit_line(hit: Hit) -> str:
    date = hit.date.strftime("%Y-%m-%d %H:%M") if hit.date is not None else "(no date)"
    fields = [
        date,
        hit.user,
        f"{hit.mailbox}/{hit.folder}",
        hit.sender or "(no sender)",
        hit.subject or "(no subject)",
    ]
    return "  ".join(terminal_text(f) for f in fields) + f"  [id {hit.id}]"


# --- show ------------------------------------------------------------------------------------


@click.command("show", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@click.option("--raw", "part", flag_value="raw", help="The archived bytes, exactly, on stdout.")
@click.option("--headers", "part", flag_value="headers", help="Only the decoded headers.")
@click.option("--text", "part", flag_value="text", help="Only the body text.")
@format_option
@click.argument("message_id", type=int, metavar="ID")
def archive_show(
    config_dir: Path,
    archive_path: Path | None,
    part: str | None,
    output_format: str,
    message_id: int,
) -> int:
    """Show one archived message by the id `archive search` gives.

    Default: From, To, Cc, Date, Subject, Message-ID, the attachment names and the
    body text. --headers: every header field, decoded; --text: the body text;
    --raw: the archived bytes exactly (nothing else). Escape sequences and control
    characters of the message never reach the terminal. --format json: id, user,
    mailbox, folder, uidvalidity, uid, internal_date, flags, sha256, size, headers,
    text, attachments. An unknown id exits 10, a damaged or missing blob 12.

    \b
    Examples:
      imapsync-decl archive show 4711
      imapsync-decl archive show 4711 --raw > message.eml
      imapsync-decl archive show 4711 --format json
    """
    root = _archive_root(config_dir, archive_path)
    from imapsync_decl.store import Archive

    with Archive.open(root, read_only=True) as archive:
        found = archive.index.placements_by_id([message_id])
        if not found:
            raise UsageError(f"no message with id {message_id}")
        placement = found[0]
        raw = archive.blobs.get(placement.sha256)
    if part == "raw":
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        return ExitCode.OK
    from imapsync_decl.store.restoring import show_document
    from imapsync_decl.store.search.extract import readable  # only `show` parses a message

    message = readable(raw)
    if output_format == "json":
        print_json(show_document(message_id, placement, message))
        return ExitCode.OK
    lines: list[str] = []
    if part in (None, "headers"):
        wanted = {name.lower() for name in SHOWN_HEADERS}
        for name, value in message.headers:
            if part == "headers" or name.lower() in wanted:
                lines.append(f"{terminal_text(name)}: {terminal_text(value)}")
    if part is None:
        if message.attachment_names:
            names = ", ".join(terminal_text(n) for n in message.attachment_names)
            lines.append(f"Attachments: {names}")
        lines.append("")
    if part in (None, "text"):
        if not message.extracted:
            lines.append("(the text of this message cannot be read; see --raw)")
        lines.append(terminal_text(message.text, multiline=True))
    click.echo("\n".join(lines))
    return ExitCode.OK


# --- rebuild-search --------------------------------------------------------------------------


@click.command("rebuild-search", epilog=EXIT_CODES)
@config_dir_option
@archive_option
@format_option
@click.option("--force", is_flag=True, help="Delete the search index first and index everything.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar (default: when stderr is a terminal).",
)
def archive_rebuild_search(
    config_dir: Path,
    archive_path: Path | None,
    output_format: str,
    force: bool,
    progress: bool | None,
) -> int:
    """Index every archived message that has no search document yet, from its blob.

    The search index (search.sqlite beside index.sqlite) is derived data: this
    changes nothing archived. Resumable: what is indexed stays, an interrupted
    rebuild goes on where it stopped. --force deletes the search index first (also
    a damaged one) and indexes every message. Takes the archive's lock (exit 13 while
    another command holds it). A message whose blob is damaged or missing is skipped
    and listed on stderr, then exit 12.

    \b
    Examples:
      imapsync-decl archive rebuild-search
      imapsync-decl archive rebuild-search --force --archive /srv/archive
    """
    root = _archive_root(config_dir, archive_path)
    show = progress if progress is not None else sys.stderr.isatty()
    from imapsync_decl.run.service import rebuild_search_index

    report = rebuild_search_index(root, force=force, progress=_bar if show else None)
    counts = report.counts
    if output_format == "json":
        print_json(
            {
                "indexed_now": report.indexed,
                "skipped": list(report.skipped),
                "indexed": counts.indexed,
                "headers_only": counts.headers_only,
                "unindexed": counts.unindexed,
            }
        )
    else:
        for sha in report.skipped:
            click.echo(f"not indexed: damaged or missing blob {sha}", err=True)
        click.echo(
            f"indexed {plural(report.indexed, 'message')}; the search index holds"
            f" {plural(counts.indexed, 'message')} ({counts.headers_only} by their headers"
            f" only), {counts.unindexed} not indexed"
        )
        if report.skipped:
            click.echo(
                "error: run `archive verify`, then `apply --repair`, then `archive rebuild-search`",
                err=True,
            )
    return ExitCode.INTEGRITY if report.skipped else ExitCode.OK


@contextmanager
def _bar(done: int, total: int) -> Iterator[Callable[[int], None]]:
    """A bar on stderr over the messages to index; yields what advances it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bars = Progress(
        "indexing",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with bars:
        task = bars.add_task("indexing", total=max(total, 1))

        def advanced(count: int) -> None:
            bars.update(task, advance=count)

        yield advanced
