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
of at most 255 bytes (``safe_component``, ``fit_component``); the components of a folder are
derived in one place (``folder_names``). DEST and every directory below it must be a real
directory of the running user that group and others cannot write (``fs.check_private_dir``),
so nothing below DEST is followed if it is a symbolic link and nobody else can swap a level:
an export never writes outside its destination. Every file is written under a temporary name
and renamed (``fs.AtomicFile``). A message whose blob is damaged or missing is left out and
reported in ``ExportResult.failed``; the others are exported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path

from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.fs import DIR_MODE, AtomicFile, UnsafePath, check_private_dir
from imapsync_decl.store.blobs import BlobError
from imapsync_decl.store.interfaces import ArchiveStorage
from imapsync_decl.store.rows import PlacementRow

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
MBOX_SUFFIX = ".mbox"
NAME_MAX = 255  # bytes in one path component (Linux, macOS, the BSDs)
SHORTENED_MARK = "%~"  # never in an escaped name: ends the prefix of a shortened one

_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


class ExportError(ImapsyncError):
    """An export cannot write where it should: a symbolic link or a file in the way, a
    directory of another user or writable by others, or the file system refuses."""

    exit_code = ExitCode.CONFIG


def safe_component(name: str) -> str:
    """A name that is one harmless path component: no separators, no NUL, never '.' or '..',
    at most 255 bytes of UTF-8.

    Unsafe characters become %XX; '.' and '..' (and the empty name) get escaped dots,
    so an export can never write outside its destination. A longer name is shortened
    (:func:`fit_component`).
    """
    return fit_component(_escape(name))


def mbox_directory_component(name: str) -> str:
    """A folder level that holds subfolders, in the mbox layout.

    A directory ``X.mbox`` would clash with the file of a folder ``X``, so the dot of a
    ``.mbox`` ending is escaped (``X%2Embox``).
    """
    escaped = _escape(name)
    if escaped.endswith(MBOX_SUFFIX):
        escaped = escaped[: -len(MBOX_SUFFIX)] + "%2Embox"
    return fit_component(escaped)


def mbox_file_component(name: str) -> str:
    """The file of a folder in the mbox layout: ``<name>.mbox``, at most 255 bytes."""
    return fit_component(_escape(name), reserve=len(MBOX_SUFFIX)) + MBOX_SUFFIX


def maildir_component(name: str) -> str:
    """A folder level in the maildir layout: ``cur``, ``new`` and ``tmp`` are the maildir's
    own directories, so such a folder name gets its first letter escaped (``%63ur``)."""
    escaped = _escape(name)
    if escaped in MAILDIR_SUBDIRS:
        escaped = f"%{ord(escaped[0]):02X}{escaped[1:]}"
    return fit_component(escaped)


def fit_component(component: str, reserve: int = 0) -> str:
    """``component`` if it fits in ``NAME_MAX - reserve`` bytes of UTF-8; else its longest
    prefix that fits with ``%~`` and the first 16 hex digits of the SHA-256 of the whole
    component, cut at a character boundary (never inside a ``%XX`` escape).

    ``%~`` never occurs in an escaped name (``%`` itself is escaped), so a shortened name
    cannot equal another folder's name, and two long names differ by their hash: the full
    name is found again by hashing the candidates.
    """
    limit = NAME_MAX - reserve
    encoded = component.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return component
    suffix = f"{SHORTENED_MARK}{hashlib.sha256(encoded).hexdigest()[:16]}"
    budget, end = limit - len(suffix), 0
    for character in component:
        budget -= len(character.encode("utf-8", "surrogateescape"))
        if budget < 0:
            break
        end += 1
    prefix = component[:end]
    if "%" in prefix[-2:]:  # an escape cut short goes too
        prefix = prefix[: prefix.rindex("%")]
    return prefix + suffix


def _escape(name: str) -> str:
    escaped = "".join(_UNSAFE.get(c, c) for c in name)
    if escaped in ("", ".", ".."):
        escaped = escaped.replace(".", "%2E") or "%00"
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
class FailedMessage:
    """A placement that was not exported: its blob is damaged or missing."""

    row: PlacementRow
    error: str

    def __str__(self) -> str:
        row = self.row
        return (
            f"{row.user}/{row.archive_folder}/{row.folder} UIDVALIDITY {row.uidvalidity}"
            f" UID {row.uid}: {self.error}"
        )


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: ``messages`` exported, ``files`` written, ``bytes`` written,
    and the placements ``failed`` (damaged or missing blobs), which were left out."""

    messages: int
    files: int
    bytes: int
    format: str = "eml"
    failed: tuple[FailedMessage, ...] = ()


def export_archive(
    archive: ArchiveStorage,
    destination: Path,
    export_format: str,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Export the selected placements in ``export_format`` (one of ``FORMATS``).

    Every message whose blob is intact is written; the others are listed in the
    result's ``failed``. A destination that cannot be written safely (a symbolic link,
    another owner, writable by group or others, a file in the way) or at all is an
    ExportError naming the path.
    """
    writers: dict[str, Callable[[_Export, Iterator[_Folder]], None]] = {
        "eml": _write_eml,
        "mbox": _write_mbox,
        "maildir": _write_maildir,
    }
    if export_format not in writers:
        raise ValueError(f"unknown export format {export_format!r}")
    export = _Export(archive, destination)
    try:
        writers[export_format](export, _by_folder(archive, user, folder))
    except UnsafePath as exc:
        raise ExportError(f"cannot export into {exc.path}: {exc.reason}") from None
    except OSError as exc:
        where = exc.filename if exc.filename is not None else destination
        raise ExportError(f"cannot export to {where}: {exc.strerror or exc}") from None
    return ExportResult(
        export.messages, export.files, export.bytes, export_format, tuple(export.failed)
    )


def export_eml(
    archive: ArchiveStorage,
    destination: Path,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Write ``DEST/<user>/<archive folder>/<folder path>/<uidvalidity>-<uid>.eml``.

    Each file is written to a temporary name beside it, synced, then renamed over the
    target: an existing file (or a planted one) is replaced, never written into.
    """
    return export_archive(archive, destination, "eml", user=user, folder=folder)


def export_mbox(
    archive: ArchiveStorage,
    destination: Path,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Write one mboxrd file per folder: ``DEST/<user>/<archive folder>/<folder path>.mbox``.

    Each file is written to a temporary name beside it, synced, then renamed over the
    target, so a reader sees the old file or the whole new one.
    """
    return export_archive(archive, destination, "mbox", user=user, folder=folder)


def export_maildir(
    archive: ArchiveStorage,
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
    return export_archive(archive, destination, "maildir", user=user, folder=folder)


def folder_names(parts: Sequence[str], export_format: str) -> list[str]:
    """The path components below DEST of one folder, ``parts`` being
    ``[user, archive folder, *folder levels]``: its directory (eml, maildir) or its
    file and the directories above it (mbox). The one place export paths are derived."""
    top = [safe_component(p) for p in parts[:2]]
    levels = parts[2:]
    if export_format == "mbox":
        return [
            *top,
            *(mbox_directory_component(p) for p in levels[:-1]),
            mbox_file_component(levels[-1]),
        ]
    if export_format == "maildir":
        return [*top, *(maildir_component(p) for p in levels)]
    return [*top, *(safe_component(p) for p in levels)]


# --- internals ---------------------------------------------------------------------------------


_Folder = tuple[list[str], Iterator[PlacementRow]]


def _parts(row: PlacementRow) -> list[str]:
    """What a placement's folder is called in an export: user, mailbox (its tree folder: a
    second mailbox of an archive folder gets a suffix from its source, so two mailboxes
    never share files), folder levels."""
    return [row.user, row.tree_folder or row.archive_folder, *row.folder.split("/")]


def _by_folder(archive: ArchiveStorage, user: str | None, folder: str | None) -> Iterator[_Folder]:
    """The selected placements folder by folder, with the folder's path parts."""
    yield from groupby(archive.index.iter_placements(user=user, folder=folder), key=_parts)


class _Export:
    """One export run: the destination's directories (checked once each), the message
    reads (a damaged or missing blob is recorded, not raised) and the counts."""

    def __init__(self, archive: ArchiveStorage, destination: Path) -> None:
        self.archive = archive
        self.destination = destination
        self.messages = self.files = self.bytes = 0
        self.failed: list[FailedMessage] = []
        self._checked: set[Path] = set()

    def read(self, row: PlacementRow) -> bytes | None:
        """The message of a placement, or None (recorded in ``failed``) if its blob is bad."""
        try:
            return self.archive.blobs.get(row.sha256)
        except BlobError as exc:
            self.failed.append(FailedMessage(row, exc.message))
            return None

    def directory(self, names: Sequence[str]) -> Path:
        """``DEST/names[0]/names[1]/...``, each level made (0700) or checked: a real
        directory (not a symbolic link), of the running user, not writable by group or
        others. DEST itself is made only now, when something is written."""
        path = self.destination
        if path not in self._checked:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._make(path, "destination")
        for name in names:
            path = path / name
            if path not in self._checked:
                self._make(path, "directory")
        return path

    def _make(self, path: Path, what: str) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)  # whatever the umask
        # Made just now or found: checked either way (DEST's parent may be anyone's).
        check_private_dir(path, what=what)
        self._checked.add(path)


def _write_eml(export: _Export, folders: Iterator[_Folder]) -> None:
    for parts, rows in folders:
        directory: Path | None = None
        for row in rows:
            data = export.read(row)
            if data is None:
                continue
            directory = directory or export.directory(folder_names(parts, "eml"))
            with _atomic_file(directory, directory / f"{row.uidvalidity}-{row.uid}.eml") as out:
                out.write(data)
            export.messages += 1
            export.files += 1
            export.bytes += len(data)


def _write_mbox(export: _Export, folders: Iterator[_Folder]) -> None:
    for parts, rows in folders:
        *names, file_name = folder_names(parts, "mbox")
        directory = export.directory(names)
        with _atomic_file(directory, directory / file_name) as out:
            for row in rows:
                data = export.read(row)
                if data is None:
                    continue
                entry = mboxrd_entry(data, row.internal_date)
                out.write(entry)
                export.messages += 1
                export.bytes += len(entry)
        export.files += 1


def _write_maildir(export: _Export, folders: Iterator[_Folder]) -> None:
    for parts, rows in folders:
        names = folder_names(parts, "maildir")
        root = export.directory(names)
        for sub in MAILDIR_SUBDIRS:
            export.directory([*names, sub])
        cur, tmp = root / "cur", root / "tmp"
        earlier = _maildir_existing(cur)
        for row in rows:
            data = export.read(row)
            if data is None:
                continue
            name = maildir_name(row)
            mtime = row.internal_date.timestamp() if row.internal_date is not None else None
            with _atomic_file(tmp, cur / name, mtime=mtime) as out:
                out.write(data)
            for old in earlier.pop(name.split(":", 1)[0], ()):
                if old != name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(cur / old)
            export.messages += 1
            export.files += 1
            export.bytes += len(data)


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
