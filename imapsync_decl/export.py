"""Read the archive back: export messages as files, exactly the archived bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imapsync_decl.store import Archive

# Characters that cannot stand in a path component, and '%' so the escape is reversible.
_UNSAFE = {"/": "%2F", "\\": "%5C", "\0": "%00", "%": "%25"}


def safe_component(name: str) -> str:
    """A name that is one harmless path component: no separators, no NUL, never '.' or '..'.

    Unsafe characters become %XX; '.' and '..' (and the empty name) get escaped dots,
    so an export can never write outside its destination.
    """
    escaped = "".join(_UNSAFE.get(c, c) for c in name)
    if escaped in ("", ".", ".."):
        escaped = escaped.replace(".", "%2E") or "%00"
    return escaped


@dataclass(frozen=True)
class ExportResult:
    files: int
    bytes: int


def export_eml(
    archive: Archive,
    destination: Path,
    *,
    user: str | None = None,
    folder: str | None = None,
) -> ExportResult:
    """Write ``DEST/<user>/<archive folder>/<folder path>/<uidvalidity>-<uid>.eml``."""
    files = written = 0
    destination.mkdir(parents=True, exist_ok=True)
    for row in archive.index.iter_placements(user=user, folder=folder):
        parts = [row.user, row.archive_folder, *row.folder.split("/")]
        directory = destination.joinpath(*(safe_component(p) for p in parts))
        directory.mkdir(parents=True, exist_ok=True)
        data = archive.blobs.get(row.sha256)
        target = directory / f"{row.uidvalidity}-{row.uid}.eml"
        # O_NOFOLLOW: a planted symlink at the target is refused, never followed.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        files += 1
        written += len(data)
    return ExportResult(files, written)
