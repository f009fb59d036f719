"""Content-addressed message blobs on disk.

Every archived message is one file, ``blobs/ab/<sha256>``, named by the
SHA-256 of the exact bytes the server returned and holding those bytes
zstd-compressed (with zstd's own frame checksum and content size). A blob is
written once and not changed: a second ``put`` of the same content finds the
file, checks that it decompresses to exactly these bytes, and returns it. A
file that does not (truncated, flipped, emptied, a symbolic link) is replaced
by the new content, whose SHA-256 is its name: a damaged blob is never reused.

Archives made before this layout keep theirs, ``blobs/ab/cd/<sha256>``: a store finds
out which one it has from what is on disk (a ``cd`` directory inside an ``ab`` one is
the old layout, a blob file in an ``ab`` directory the new one, nothing yet the new
one) and goes on writing in it. The new layout has 256 directories where the old one
made up to 65,536, one per blob in a young archive, each a directory created and
synced on the first run.

Durability: a blob is written to a temporary file in its final directory,
flushed and fsynced, renamed to its name, and the directory is fsynced. The
first time this store touches a directory, the directories above it are
fsynced too, so a directory made by this run (or by a run that was killed
before it could sync it) has a durable entry before any blob in it is
reported as stored. A crash therefore leaves either no blob or a complete one
(plus, at worst, a ``.tmp-*`` file that ``remove_temp_files`` deletes).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import itertools
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.fs import create_exclusive, fsync_dir, open_nofollow, write_all

COMPRESSION_LEVEL = 1  # as small as 3 on mail (text and base64), and twice as fast
READ_CHUNK = 256 * 1024
DIR_MODE = 0o700
FILE_MODE = 0o600
TEMP_PREFIX = ".tmp-"
ABSENT = -1  # _intact_size: no file at all

_HASH = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"[0-9a-f]{2}")


class BlobError(ImapsyncError):
    """A blob cannot be read as stored: the archive's integrity is at stake."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, sha256: str, message: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


class BlobMissing(BlobError):
    """The blob file does not exist."""


class BlobDamaged(BlobError):
    """The blob file does not decompress, or its content does not match its name."""


class InvalidBlobName(ValueError):
    """A string that is not a blob name (64 lower-case hex digits)."""


@dataclass(frozen=True)
class BlobInfo:
    """A stored blob: its name, the raw message length and the bytes on disk."""

    sha256: str
    size: int
    stored_size: int


def check_hash(sha256: str) -> str:
    """Return ``sha256`` if it is a well-formed blob name, else raise InvalidBlobName."""
    if not isinstance(sha256, str) or _HASH.fullmatch(sha256) is None:
        raise InvalidBlobName(f"not a blob name (64 lower-case hex digits): {sha256!r}")
    return sha256


class BlobStore:
    """The blob files under ``root/blobs``."""

    def __init__(
        self, root: Path, *, parallel: bool = True, stale_before: float | None = None
    ) -> None:
        self.root = Path(root)
        self.directory = self.root / "blobs"
        # Directories whose entry in their parent this store has synced.
        self._durable: set[Path] = set()
        # Leaf directories this store has synced at least once.
        self._synced: set[Path] = set()
        # Leaf directories known to exist (no mkdir attempts for them).
        self._existing: set[Path] = set()
        # Directories this store made (so no earlier run left anything in them).
        self._fresh: set[Path] = set()
        # Temporary files older than this were left by a run that was killed.
        # (Stores working together, such as the mailbox workers of one apply, share the
        # time their run began, so that none takes another's temporary file for stale.)
        self.stale_before = time.time() if stale_before is None else stale_before
        # Damaged files that put_many replaced with the right content.
        self.replaced = 0
        self._nested: bool | None = None  # the layout, found out on first use
        # Temporary names: unique to this store (random part), then counted.
        self._temp_prefix = f"{secrets.token_hex(6)}-"
        self._temp_numbers = itertools.count()
        # Compress and write two blobs at a time on threads (False: in the calling thread,
        # for callers that already run several stores at once, such as mailbox workers).
        self.parallel = parallel

    # -- names -------------------------------------------------------------

    @property
    def nested(self) -> bool:
        """Whether this archive has the old layout, ``ab/cd/<sha256>`` (see the module)."""
        if self._nested is None:
            self._nested = _has_nested_layout(self.directory)
        return self._nested

    def path(self, sha256: str) -> Path:
        """Where the blob named ``sha256`` lives (validated: never outside the store)."""
        check_hash(sha256)
        if self.nested:
            return self.directory / sha256[:2] / sha256[2:4] / sha256
        return self.directory / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    # -- writing -----------------------------------------------------------

    def put(self, data: bytes) -> BlobInfo:
        """Store ``data`` durably and return its blob (an intact existing blob is kept)."""
        return self.put_many([data])[0]

    def put_many(
        self, items: Sequence[bytes], hashes: Sequence[str] | None = None
    ) -> list[BlobInfo]:
        """Store several messages; one BlobInfo per item, in order.

        Each new blob is written and fsynced to a temporary file, then all are
        renamed, then every directory touched is fsynced once. Nothing is
        returned before all of that is done. ``hashes``: the SHA-256 of each item,
        when the caller has them already (trusted, except before a damaged file is
        replaced: then the item is hashed again, and a wrong hash is a ValueError).

        A file already at a blob's name is kept only if it decompresses to exactly
        the item's bytes (zstd's frame checksum included); otherwise it is replaced.
        ``replaced`` counts those replacements over the store's life. The check is
        one streaming decompression compared with bytes in hand, no second hash:
        about 40 us for a 4 KB message and 1.6 ms per MB, against 0.7 to 4 ms to
        write a blob anew and more to fetch it; it is paid only for content that was
        fetched and is stored already (duplicates, a lost index).
        """
        if hashes is not None and len(hashes) != len(items):
            raise ValueError("one hash per item")
        # With syncfs, one flush of the file system makes a whole batch durable, where
        # one fsync per file would cost a journal commit each.
        grouped = len(items) > 1 and _syncfs_available()
        infos: dict[str, BlobInfo] = {}
        temps: list[tuple[Path, Path]] = []  # (temporary file, final name)
        order: list[str] = []
        renamed: set[Path] = set()
        new: list[tuple[str, bytes, Path]] = []
        queued: set[str] = set()
        try:
            for n, data in enumerate(items):
                raw = bytes(data)
                sha256 = hashes[n] if hashes is not None else hashlib.sha256(raw).hexdigest()
                order.append(sha256)
                if sha256 in infos or sha256 in queued:
                    continue
                final = self.path(sha256)
                stored = _intact_size(final, raw)
                if stored is not None and stored >= 0:
                    infos[sha256] = BlobInfo(sha256, len(raw), stored)
                    continue
                if stored is None:  # a file is there, and it is not this content
                    if hashes is not None and hashlib.sha256(raw).hexdigest() != sha256:
                        raise ValueError(f"item {n} does not hash to {sha256}")
                    self.replaced += 1
                    import structlog  # here: readers of the store need no logging set-up

                    structlog.get_logger(__name__).warning(
                        "blob_replaced", blob=sha256, reason="damaged file"
                    )
                self._make_dirs(final.parent)
                new.append((sha256, raw, final))
                queued.add(sha256)

            def write(raw: bytes, final: Path) -> tuple[Path, int]:
                compressed = _compress(raw)
                return self._write_temp(final.parent, compressed, sync=not grouped), len(compressed)

            # Compression and writing release the GIL: two at a time overlap each other.
            if len(new) > 1 and self.parallel:
                futures = [_writers().submit(write, raw, final) for _, raw, final in new]
            else:
                futures = []
            failure: BaseException | None = None
            for position, (sha256, raw, final) in enumerate(new):
                try:
                    temp, size = futures[position].result() if futures else write(raw, final)
                except BaseException as exc:  # collect every temp file first, then raise
                    failure = failure or exc
                    continue
                temps.append((temp, final))
                infos[sha256] = BlobInfo(sha256, len(raw), size)
            if failure is not None:
                raise failure
            if grouped and temps:
                _syncfs(self.directory)  # every temporary file's content is durable
            while temps:
                temp, final = temps[-1]
                os.replace(temp, final)
                temps.pop()
                renamed.add(final.parent)
            if grouped and (renamed or infos):
                # One more flush makes the renames and any new directory durable.
                _syncfs(self.directory)
                touched = {self.path(sha256).parent for sha256 in infos}
                for directory in touched - self._synced:
                    self._remove_stale_temps(directory)
                    self._synced.add(directory)
                    for child in (directory, directory.parent, self.directory, self.root):
                        self._durable.add(child)
                return [infos[sha256] for sha256 in order]
            # New entries need their directory synced; a blob found on disk may
            # have been renamed by a run killed before it synced the directory,
            # so every directory involved is synced at least once per store.
            touched = {self.path(sha256).parent for sha256 in infos}
            for directory in sorted(renamed | (touched - self._synced)):
                if directory not in self._synced:
                    self._remove_stale_temps(directory)
                fsync_dir(directory)
                self._synced.add(directory)
            for directory in sorted(touched):
                self._make_durable(directory)
        finally:
            for temp, _final in temps:
                with contextlib.suppress(OSError):
                    temp.unlink()
        return [infos[sha256] for sha256 in order]

    def remove(self, sha256: str) -> None:
        """Delete a blob file (one no index row names: a damaged orphan), durably."""
        path = self.path(sha256)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            fsync_dir(path.parent)

    def _remove_stale_temps(self, directory: Path) -> None:
        """Temporary files in ``directory`` left by a killed run (older than this store)."""
        if directory in self._fresh:
            return  # made by this store: nothing of an earlier run is in it
        for entry in _scandir(directory):
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < self.stale_before:
                        os.unlink(entry.path)

    def remove_temp_files(self) -> int:
        """Delete temporary files left by a killed run; return how many.

        Call it at the start of a write session, while holding the archive lock.
        """
        removed = 0
        for directory in self._leaf_dirs(include_parents=True):
            for entry in _scandir(directory):
                if entry.name.startswith(TEMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        return removed

    # -- reading -----------------------------------------------------------

    def get(self, sha256: str) -> bytes:
        """The raw message bytes of a blob, checked against its name.

        Decompressed by streaming, so a damaged frame header cannot make it reserve
        more memory than the message really has. Raises BlobMissing or BlobDamaged.
        """
        chunks: list[bytes] = []
        self._read(sha256, chunks.append)
        return b"".join(chunks)

    def check(self, sha256: str) -> int:
        """Re-hash a blob by streaming decompression; return its raw size.

        Memory is bounded by ``READ_CHUNK``, not by the message. Raises
        BlobMissing or BlobDamaged.
        """
        return self._read(sha256, None)

    def _read(self, sha256: str, sink: Callable[[bytes], object] | None) -> int:
        """Decompress a blob chunk by chunk (each to ``sink``), hash it against its name,
        and return its raw size."""
        digest = hashlib.sha256()
        size = 0
        try:
            with (
                self._open(sha256) as stored,
                _decompressor().stream_reader(stored) as reader,
            ):
                while chunk := reader.read(READ_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    if sink is not None:
                        sink(chunk)
        except zstandard.ZstdError as exc:
            raise BlobDamaged(sha256, f"blob {sha256} does not decompress: {exc}") from exc
        except OSError as exc:  # a read error in the middle of the file
            raise BlobDamaged(sha256, f"blob {sha256} cannot be read: {exc.strerror}") from exc
        if digest.hexdigest() != sha256:
            raise BlobDamaged(sha256, f"blob {sha256} does not match its name")
        return size

    def iter_hashes(self) -> Iterator[str]:
        """Every well-formed blob name on disk, in sorted order (temporary files skipped)."""
        for directory in self._leaf_dirs(include_parents=False):
            prefix = (directory.parent.name if self.nested else "") + directory.name
            names = sorted(e.name for e in _scandir(directory) if e.is_file(follow_symlinks=False))
            for name in names:
                if _HASH.fullmatch(name) and name.startswith(prefix):
                    yield name

    # -- internals ---------------------------------------------------------

    def _open(self, sha256: str) -> BinaryIO:
        """The blob file for reading, never through a symbolic link.

        Raises BlobMissing, or BlobDamaged when it cannot be read as a file.
        """
        path = self.path(sha256)
        try:
            return _open_regular(path)
        except FileNotFoundError:
            raise BlobMissing(sha256, f"blob {sha256} is missing ({path})") from None
        except OSError as exc:
            reason = "is a symbolic link" if exc.errno == errno.ELOOP else "cannot be read"
            detail = f": {exc.strerror}" if exc.strerror and exc.errno != errno.ELOOP else ""
            raise BlobDamaged(sha256, f"blob {sha256} {reason} ({path}){detail}") from None

    def _leaf_dirs(self, include_parents: bool) -> Iterator[Path]:
        """The directories that hold blobs, in sorted order: ``ab`` (or, in the old layout,
        ``ab/cd``, and the ``ab`` ones too if asked)."""
        for first in sorted(_scandir(self.directory), key=lambda e: e.name):
            if not (_PREFIX.fullmatch(first.name) and first.is_dir(follow_symlinks=False)):
                continue
            parent = Path(first.path)
            if include_parents or not self.nested:
                yield parent
            if not self.nested:
                continue
            for second in sorted(_scandir(parent), key=lambda e: e.name):
                if _PREFIX.fullmatch(second.name) and second.is_dir(follow_symlinks=False):
                    yield Path(second.path)

    def _make_dirs(self, leaf: Path) -> None:
        """Create ``blobs/ab`` (``blobs/ab/cd``) as needed, mode 0700 whatever the umask."""
        if leaf in self._existing:
            return
        for directory in (self.root, self.directory, leaf.parent, leaf):
            if directory in self._existing:
                continue
            try:
                os.mkdir(directory, DIR_MODE)
            except FileExistsError:
                self._existing.add(directory)
                continue
            os.chmod(directory, DIR_MODE)
            # A new entry in the parent: it must be synced before anything below counts.
            self._durable.discard(directory)
            self._synced.discard(directory)
            self._existing.add(directory)
            self._fresh.add(directory)

    def _make_durable(self, leaf: Path) -> None:
        """Sync the entries of ``leaf`` and the directories above it, up to and
        including the root's entry, once per directory per store."""
        for child in (leaf, leaf.parent, self.directory, self.root):
            if child not in self._durable:
                fsync_dir(child.parent)
                self._durable.add(child)

    def _write_temp(self, directory: Path, content: bytes, *, sync: bool = True) -> Path:
        """Write ``content`` to a new temporary file in ``directory``, fsynced unless the
        caller makes it durable another way (``sync=False``: syncfs of the batch)."""
        while True:
            temp = directory / f"{TEMP_PREFIX}{self._temp_prefix}{next(self._temp_numbers)}"
            try:
                fd = create_exclusive(temp, FILE_MODE)
            except FileExistsError:
                continue
            break
        try:
            os.fchmod(fd, FILE_MODE)
            write_all(fd, content)
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        os.close(fd)
        return temp


_compressors = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _writers() -> ThreadPoolExecutor:
    """Two threads that compress and write blobs, shared by every store of the process."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="blob-writer")
        return _pool


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_compressors, "unzstd", None)
    if decompressor is None:  # one per thread, like the compressors
        decompressor = zstandard.ZstdDecompressor()
        _compressors.unzstd = decompressor
    return decompressor


def _compress(data: bytes) -> bytes:
    compressor = getattr(_compressors, "zstd", None)
    if compressor is None:  # one per thread: a compressor is not thread-safe
        compressor = zstandard.ZstdCompressor(
            level=COMPRESSION_LEVEL, write_checksum=True, write_content_size=True
        )
        _compressors.zstd = compressor
    return compressor.compress(data)


def _open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading: a regular file, not a symbolic link (ELOOP) or anything else
    (EISDIR, or EINVAL for a device or FIFO, which is not even opened for reading)."""
    fd = open_nofollow(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL, "not a file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _intact_size(path: Path, raw: bytes) -> int | None:
    """The size on disk of the blob file at ``path`` if it decompresses to exactly ``raw``;
    ``ABSENT`` if there is nothing at ``path``; None if something is there that does not
    (unreadable, not zstd, truncated, other content, not a regular file).

    Streaming, compared chunk by chunk: no second hash, memory bounded by a chunk.
    """
    try:
        file = _open_regular(path)
    except FileNotFoundError:
        return ABSENT
    except OSError:
        return None
    with file:
        offset = 0
        try:
            with _decompressor().stream_reader(file, closefd=False) as reader:
                while chunk := reader.read(READ_CHUNK):
                    if raw[offset : offset + len(chunk)] != chunk:
                        return None
                    offset += len(chunk)
        except (zstandard.ZstdError, OSError):
            return None
        if offset != len(raw):
            return None
        return os.fstat(file.fileno()).st_size


def _has_nested_layout(directory: Path) -> bool:
    """Whether the blobs under ``directory`` are in the old layout, ``ab/cd/<sha256>``:
    decided by the first ``ab`` directory that holds a ``cd`` directory (old) or a blob
    file (new); False when none does (no blob stored yet)."""
    for first in sorted(_scandir(directory), key=lambda e: e.name):
        if not (_PREFIX.fullmatch(first.name) and first.is_dir(follow_symlinks=False)):
            continue
        with contextlib.suppress(OSError), os.scandir(first.path) as entries:
            for entry in entries:
                if _PREFIX.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    return True
                if _HASH.fullmatch(entry.name):
                    return False
    return False


def _scandir(directory: Path | str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


_libc: Any = None


def _syncfs_available() -> bool:
    """Whether syncfs(2) can be called (Linux with glibc or musl)."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc = lib if hasattr(lib, "syncfs") else False
        except OSError:
            _libc = False
    return bool(_libc)


def _syncfs(path: Path) -> None:
    """Flush the whole file system holding ``path`` to stable storage (data and metadata)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs failed: {os.strerror(code)}", str(path))
    finally:
        os.close(fd)
