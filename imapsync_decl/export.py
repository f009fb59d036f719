"""Read the archive back: export messages as files in three formats.

* ``eml``: ``DEST/<user>/<archive folder>/<folder path>/<uidvalidity>-<uid>.eml``, one file
  per message, exactly the archived bytes.
* ``mbox``: ``DEST/<user>/<archive folder>/<folder path>.mbox``, one mboxrd file per folder.
  Line endings become LF and lines matching ``^>*From `` get one more ``>``, so an mbox file
  is *not* byte-exact; stripping one ``>`` from such lines and restoring CRLF gives the
  original back.
* ``maildir``: ``DEST/<user>/<archive folder>/<folder path>/{cur,new,tmp}``, one file per
  message in ``cur/``, exactly the archived bytes, named
  ``<internal date epoch>.<uidvalidity>_<uid>.imapsync-decl:2,<flag letters>`` with the
  internal date as the file's modification time.

Folder levels are directories in every format. Each name becomes one harmless path component
(``safe_component``), and nothing below DEST is followed if it is a symbolic link: an export
never writes outside its destination.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path

from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.store import Archive, PlacementRow
from imapsync_decl.store.fs import FILE_MODE, AtomicFile

FORMATS = ("eml", "mbox", "maildir")

# Characters that cannot stand in a path component, and '%' so the escape is reversible.
_UNSAFE = {"/": "%2F", "\\": "%5C", "\0": "%00", "%": "%25"}

# Maildir info letters of the IMAP flags that have one, matched case-insensitively.
MAILDIR_FLAGS = {
    "\\draft": "D",
    "\\flagged": "F",
    "$forwarded": "P",
    "\\answered": "R",
    "\\seen": "S",
    "\\deleted": "T",
}
MAILDIR_SUBDIRS = ("cur", "new", "tmp")
MAILDIR_TAG = "imapsync-decl"
MBOX_SENDER = "MAILER-DAEMON"

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


class ExportError(ImapsyncError):
    """An export cannot write where it should (a symbolic link or a file in the way)."""

    exit_code = ExitCode.CONFIG


def safe_component(name: str) -> str:
    """A name that is one harmless path component: no separators, no NUL, never '.' or '..'.

    Unsafe characters become %XX; '.' and '..' (and the empty name) get escaped dots,
    so an export can never write outside its destination.
    """
    escaped = "".join(_UNSAFE.get(c, c) for c in name)
    if escaped in ("", ".", ".."):
        escaped = escaped.replace(".", "%2E") or "%00"
    return escaped


def mbox_directory_component(name: str) -> str:
    """A folder level that holds subfolders, in the mbox layout.

    A directory ``X.mbox`` would clash with the file of a folder ``X``, so the dot of a
    ``.mbox`` ending is escaped (``X%2Embox``).
    """
    escaped = safe_component(name)
    if escaped.endswith(".mbox"):
        escaped = escaped[: -len(".mbox")] + "%2Embox"
    return escaped


def maildir_component(name: str) -> str:
    """A folder level in the maildir layout: ``cur``, ``new`` and ``tmp`` are the maildir's
    own directories, so such a folder name gets its first letter escaped (``%63ur``)."""
    escaped = safe_component(name)
    if escaped in MAILDIR_SUBDIRS:
        escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
    return escaped


def maildir_info(flags: Iterable[str]) -> str:
    """The maildir info letters of IMAP flags, sorted; flags without a letter are left out."""
    return "".join(sorted({MAILDIR_FLAGS[f.lower()] for f in flags if f.lower() in MAILDIR_FLAGS}))


def maildir_name(row: PlacementRow) -> str:
    """``<epoch>.<uidvalidity>_<uid>.imapsync-decl:2,<letters>`` (epoch 0 without a date)."""
    epoch = int(row.internal_date.timestamp()) if row.internal_date is not None else 0
    return f"{epoch}.{row.uidvalidity}_{row.uid}.{MAILDIR_TAG}:2,{maildir_info(row.flags)}"


def mbox_from_line(internal_date: datetime | None) -> bytes:
    """``From MAILER-DAEMON <asctime of the internal date in UTC>`` (the epoch without one)."""
    when = (
        internal_date.astimezone(UTC)
        if internal_date is not None
        else datetime.fromtimestamp(0, UTC)
    )
    return f"From {MBOX_SENDER} {time.asctime(when.timetuple())}\n".encode("ascii")


def mboxrd_entry(data: bytes, internal_date: datetime | None) -> bytes:
    """One message as an mboxrd entry: From line, LF line endings, ``>``-quoted From lines,
    a final line break and one blank line."""
    body = data.replace(b"\r\n", b"\n")
    body = _FROM_LINE.sub(rb">\1", body)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return mbox_from_line(internal_date) + body + b"\n"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: ``messages`` exported, ``files`` written, ``bytes`` written."""

    messages: int
    files: int
    bytes: int
    format: str = "eml"


Exporter = Callable[..., ExportResult]


def export_archive(
    archive: Archive,
    destination: Path,
    export_format: str,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Export the selected placements in ``export_format`` (one of ``FORMATS``)."""
    exporters: dict[str, Exporter] = {
        "eml": export_eml,
        "mbox": export_mbox,
        "maildir": export_maildir,
    }
    if export_format not in exporters:
        raise ValueError(f"unknown export format {export_format!r}")
    return exporters[export_format](archive, destination, user=user, folder=folder)


def export_eml(
    archive: Archive,
    destination: Path,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Write ``DEST/<user>/<archive folder>/<folder path>/<uidvalidity>-<uid>.eml``."""
    messages = written = 0
    for row in archive.index.iter_placements(user=user, folder=folder):
        directory = _make_dirs(destination, [safe_component(p) for p in _parts(row)])
        data = archive.blobs.get(row.sha256)
        target = directory / f"{row.uidvalidity}-{row.uid}.eml"
        # O_NOFOLLOW: a planted symlink at the target is refused, never followed.
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EISDIR):
                raise
            raise ExportError(
                f"cannot export to {target}: a symbolic link or directory is in the way"
            ) from None
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        messages += 1
        written += len(data)
    return ExportResult(messages, messages, written, "eml")


def export_mbox(
    archive: Archive,
    destination: Path,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Write one mboxrd file per folder: ``DEST/<user>/<archive folder>/<folder path>.mbox``.

    Each file is written to a temporary name beside it, synced, then renamed over the
    target, so a reader sees the old file or the whole new one.
    """
    messages = files = written = 0
    for parts, rows in _by_folder(archive, user, folder):
        names = [safe_component(p) for p in parts[:2]]
        names += [mbox_directory_component(p) for p in parts[2:-1]]
        directory = _make_dirs(destination, names)
        target = directory / f"{safe_component(parts[-1])}.mbox"
        with _atomic_file(directory, target) as out:
            for row in rows:
                entry = mboxrd_entry(archive.blobs.get(row.sha256), row.internal_date)
                out.write(entry)
                messages += 1
                written += len(entry)
        files += 1
    return ExportResult(messages, files, written, "mbox")


def export_maildir(
    archive: Archive,
    destination: Path,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Write one maildir per folder: ``DEST/<user>/<archive folder>/<folder path>/cur/<name>``.

    Each message is written into ``tmp/``, synced, given its internal date as modification
    time and renamed into ``cur/`` (the maildir delivery order). A file of the same message
    left by an earlier export under other flag letters is replaced, not doubled.
    """
    messages = written = 0
    for parts, rows in _by_folder(archive, user, folder):
        names = [safe_component(p) for p in parts[:2]]
        names += [maildir_component(p) for p in parts[2:]]
        root = _make_dirs(destination, names)
        for sub in MAILDIR_SUBDIRS:
            _make_dirs(root, [sub])
        cur, tmp = root / "cur", root / "tmp"
        earlier = _maildir_existing(cur)
        for row in rows:
            data = archive.blobs.get(row.sha256)
            name = maildir_name(row)
            mtime = row.internal_date.timestamp() if row.internal_date is not None else None
            with _atomic_file(tmp, cur / name, mtime=mtime) as out:
                out.write(data)
            for old in earlier.pop(name.split(":", 1)[0], ()):
                if old != name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(cur / old)
            messages += 1
            written += len(data)
    return ExportResult(messages, messages, written, "maildir")


# --- internals ---------------------------------------------------------------------------------


def _parts(row: PlacementRow) -> list[str]:
    """User, mailbox (its tree folder: a second mailbox of an archive folder gets a
    suffix from its source, so two mailboxes never share files), folder levels."""
    return [row.user, row.tree_folder or row.archive_folder, *row.folder.split("/")]


def _by_folder(
    archive: Archive, user: str | None, folder: str | None
) -> Iterator[tuple[list[str], Iterator[PlacementRow]]]:
    """The selected placements folder by folder, with the folder's path parts."""
    yield from groupby(archive.index.iter_placements(user=user, folder=folder), key=_parts)


def _make_dirs(base: Path, names: Sequence[str]) -> Path:
    """Create ``base/names[0]/names[1]/...`` as needed (base too) and return it.

    Every level below ``base`` must be a real directory: a symbolic link (or a file) in
    the way is an ExportError, never followed.
    """
    base.mkdir(parents=True, exist_ok=True)
    path = base
    for name in names:
        path = path / name
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
                raise ExportError(f"cannot export into {path}: it is {kind}") from None
    return path


def _maildir_existing(cur: Path) -> dict[str, list[str]]:
    """The files in ``cur/`` by their name before the info part."""
    found: dict[str, list[str]] = {}
    with os.scandir(cur) as entries:
        for entry in entries:
            found.setdefault(entry.name.split(":", 1)[0], []).append(entry.name)
    return found


@contextlib.contextmanager
def _atomic_file(directory: Path, target: Path, mtime: float | None = None) -> Iterator[AtomicFile]:
    """An :class:`AtomicFile` whose rename failure over a directory is an :class:`ExportError`."""
    try:
        with AtomicFile(target, directory=directory, mtime=mtime) as out:
            yield out
    except (IsADirectoryError, NotADirectoryError):
        raise ExportError(f"cannot export to {target}: a directory is in the way") from None
