"""Archive users' web accounts: password hashes, sessions, failed sign-ins.

They live in ``accounts.sqlite`` in the archive directory (mode 0600), a file of its
own and not a table of ``index.sqlite``: the index is a cache that ``archive
rebuild-index`` makes again from the journal, and the journal must not carry
credentials; a rebuilt index must not lose them either. Nothing here is journaled.

* Passwords are stored only as Argon2id hashes (argon2-cffi, its default parameters,
  RFC 9106's second recommendation); a hash made with other parameters is replaced at
  the next successful sign-in. Verifying a name that has no password (unknown,
  disabled) costs the same Argon2 work, against a dummy hash, so that the time of an
  answer does not say whether a name exists.
* A session is a random token (``secrets.token_urlsafe(32)``) handed to the client;
  only its SHA-256 is stored, so a copy of the file does not let anyone in. Setting a
  password or disabling an account ends that user's sessions.
* Failed sign-ins are counted per name (case-folded) and per client address; after
  :data:`MAX_FAILURES` within :data:`FAILURE_WINDOW_SECONDS` further attempts are
  throttled.
* Growth is bounded: expired sessions and failures older than the window are pruned
  as new ones are written, a user keeps at most :data:`MAX_SESSIONS_PER_USER`
  sessions, and the failure table at most :data:`MAX_FAILURE_ROWS` rows.

Threads: one SQLite connection per ``Accounts``, shared between threads under a lock
(``check_same_thread=False``); the Argon2 work runs outside the lock, so sign-ins do
not queue behind each other's hashing. Other processes (``users passwd`` while
``serve`` runs) meet through SQLite's own locking with a busy timeout.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from imapsync_decl.errors import ExitCode, ImapsyncError
from imapsync_decl.fs import (
    UnsafePath,
    check_private_file,
    ensure_private_file,
    make_private_dir,
    unwritable_reason,
)

ACCOUNTS_NAME = "accounts.sqlite"
SCHEMA_VERSION = 1
MAX_FAILURES = 5
FAILURE_WINDOW_SECONDS = 900
MAX_PASSWORD_LENGTH = 1024
MAX_SESSIONS_PER_USER = 50
MAX_FAILURE_ROWS = 100_000
MAX_NAME_LENGTH = 256  # of a name tried at a failed sign-in, as stored
BUSY_TIMEOUT_SECONDS = 30.0

PasswordState = Literal["set", "disabled", "none"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    password_hash TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    changed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    address TEXT
);
CREATE INDEX IF NOT EXISTS sessions_name ON sessions (name);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    name TEXT,
    address TEXT,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_name ON failures (name, time);
CREATE INDEX IF NOT EXISTS failures_address ON failures (address, time);
CREATE INDEX IF NOT EXISTS failures_time ON failures (time);
"""


class AccountsError(ImapsyncError):
    """The accounts file cannot be used: by default it cannot be written (exit 14)."""

    exit_code = ExitCode.NOT_WRITABLE


class AccountsCorrupt(AccountsError):
    """The accounts file is damaged (not a database, malformed, truncated)."""

    exit_code = ExitCode.INTEGRITY

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"the accounts file {path} is damaged ({detail}); move it away and set the"
            " web passwords again with `imapsync-decl users passwd NAME`"
        )


class AccountsTooNew(AccountsError):
    """The accounts file was written by a newer version of imapsync-decl."""

    exit_code = ExitCode.CONFIG


class InvalidPassword(AccountsError):
    """A password that cannot be set (empty, too long); the message never contains it."""

    exit_code = ExitCode.CONFIG


def check_password(password: str) -> None:
    """Refuse an empty password or one over :data:`MAX_PASSWORD_LENGTH` characters."""
    if not password:
        raise InvalidPassword("the password is empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidPassword(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")


def token_hash(token: str) -> str:
    """What is stored of a session token: its SHA-256, hexadecimal."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return type(exc) is sqlite3.DatabaseError


def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise AccountsTooNew(
            f"the accounts file {path} was written by a newer imapsync-decl"
            f" (schema {version}, this one knows {SCHEMA_VERSION}); upgrade imapsync-decl"
        )
    return version


def _failure_name(name: str) -> str:
    return name.casefold()[:MAX_NAME_LENGTH]


class Accounts:
    """The web accounts of one archive. Use :meth:`open`; close it (or use ``with``)."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        *,
        read_only: bool,
        hasher: PasswordHasher,
        clock: Callable[[], float],
    ) -> None:
        """Use ``Accounts.open``."""
        self.path = path
        self.read_only = read_only
        self._db = connection
        self._lock = threading.Lock()
        self._hasher = hasher
        self._clock = clock
        self._dummy_hash: str | None = None

    @classmethod
    def open(
        cls,
        archive_root: Path,
        *,
        read_only: bool = False,
        hasher: PasswordHasher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Accounts:
        """The accounts of the archive at ``archive_root``.

        For writing, the file is created (0600) when missing, and the archive directory
        too (0700); a file or directory of another user, or one writable by others, is
        refused (exit 14). ``read_only``: nothing is created or changed, a file of any
        owner is read (never through a symbolic link); without a file every user's state
        is ``none``. ``hasher`` (tests: cheaper parameters) and
        ``clock`` (seconds since the epoch) default to Argon2id's defaults and the time.
        """
        path = Path(archive_root) / ACCOUNTS_NAME
        hasher = hasher if hasher is not None else PasswordHasher()
        with cls._errors(path):
            if read_only:
                db = cls._connect_read_only(path)
            else:
                make_private_dir(Path(archive_root), what="archive directory")
                ensure_private_file(path)
                check_private_file(path, what="accounts file")
                db = sqlite3.connect(path, check_same_thread=False, timeout=BUSY_TIMEOUT_SECONDS)
                try:
                    cls._prepare(db, path)
                except BaseException:
                    db.close()
                    raise
        return cls(db, path, read_only=read_only, hasher=hasher, clock=clock)

    @staticmethod
    def _connect_read_only(path: Path) -> sqlite3.Connection:
        """The file opened read-only; an empty schema in memory when there is none yet."""
        if os.path.lexists(path):
            info = os.lstat(path)  # read-only: any owner (like the archive), never a link
            if stat.S_ISLNK(info.st_mode):
                raise UnsafePath(path, "the accounts file is a symbolic link")
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePath(path, "the accounts file is not a regular file")
            db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_SECONDS,
            )
            db.isolation_level = None
            try:
                version = _schema_version(db, path)
            except BaseException:
                db.close()
                raise
            if version == SCHEMA_VERSION:
                return db
            db.close()
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.isolation_level = None
        db.executescript(_SCHEMA)
        return db

    @staticmethod
    def _prepare(db: sqlite3.Connection, path: Path) -> None:
        db.isolation_level = None  # transactions are explicit (BEGIN IMMEDIATE)
        db.execute("PRAGMA secure_delete = ON")  # ended sessions and old hashes are overwritten
        if _schema_version(db, path) < SCHEMA_VERSION:
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )

    @staticmethod
    @contextmanager
    def _errors(path: Path) -> Iterator[None]:
        try:
            yield
        except AccountsError:
            raise
        except UnsafePath as exc:
            raise AccountsError(f"the accounts file cannot be used: {exc}") from None
        except PermissionError:
            raise AccountsError(
                f"the accounts file {path} cannot be written: permission denied"
            ) from None
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                raise AccountsCorrupt(path, str(exc)) from None
            reason = unwritable_reason(exc)
            raise AccountsError(
                f"the accounts file {path} cannot be written: {reason or exc}"
            ) from None
        except OSError as exc:
            reason = unwritable_reason(exc) or exc.strerror or str(exc)
            raise AccountsError(f"the accounts file {path} cannot be written: {reason}") from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise AccountsError(f"the accounts file {self.path} is open read-only")
        with self._errors(self.path), self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._errors(self.path), self._lock:
            return list(self._db.execute(sql, args).fetchall())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- passwords -------------------------------------------------------------------------

    def set_password(self, name: str, password: str) -> None:
        """Store ``password``'s Argon2id hash for ``name``: re-enables a disabled account,
        ends that user's sessions and forgets the failed sign-ins of that name."""
        check_password(password)
        hashed = self._hasher.hash(password)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO accounts (name, password_hash, disabled, changed) VALUES (?, ?, 0, ?)"
                " ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash,"
                " disabled = 0, changed = excluded.changed",
                (name, hashed, self._clock()),
            )
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))
            # The name's failures stop counting; those of their addresses still do.
            db.execute("UPDATE failures SET name = NULL WHERE name = ?", (_failure_name(name),))

    def disable(self, name: str) -> None:
        """No sign-in for ``name`` any more (the hash is dropped); ends that user's sessions."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO accounts (name, password_hash, disabled, changed) VALUES (?, NULL, 1, ?)"
                " ON CONFLICT (name) DO UPDATE SET password_hash = NULL, disabled = 1,"
                " changed = excluded.changed",
                (name, self._clock()),
            )
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))

    def password_state(self, name: str) -> PasswordState:
        """``set`` (may sign in with a password), ``disabled``, or ``none`` (never set)."""
        rows = self._query("SELECT password_hash, disabled FROM accounts WHERE name = ?", (name,))
        if not rows:
            return "none"
        hashed, disabled = rows[0]
        if disabled:
            return "disabled"
        return "set" if hashed else "none"

    def password_states(self) -> dict[str, PasswordState]:
        """Every name that has a row, with its state (names without one are ``none``)."""
        rows = self._query("SELECT name, password_hash, disabled FROM accounts")
        return {
            str(name): ("disabled" if disabled else "set" if hashed else "none")
            for name, hashed, disabled in rows
        }

    def is_disabled(self, name: str) -> bool:
        rows = self._query("SELECT disabled FROM accounts WHERE name = ?", (name,))
        return bool(rows and rows[0][0])

    def verify_password(self, name: str, password: str) -> bool:
        """Whether ``password`` is ``name``'s: False for an unknown name, a disabled
        account, a wrong password. Every answer costs one Argon2 verification. A hash of
        other parameters than the current ones is replaced after a success."""
        rows = self._query(
            "SELECT password_hash FROM accounts WHERE name = ? AND disabled = 0", (name,)
        )
        stored = rows[0][0] if rows and rows[0][0] else None
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            return False
        dummy = self._dummy()  # made at the first call, whichever the name: same cost for all
        try:
            self._hasher.verify(stored if stored is not None else dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        if stored is None:
            return False  # the dummy hash matched: no account all the same
        if not self.read_only and self._hasher.check_needs_rehash(stored):
            rehashed = self._hasher.hash(password)
            with self._transaction() as db:
                db.execute(
                    "UPDATE accounts SET password_hash = ? WHERE name = ? AND password_hash = ?",
                    (rehashed, name, stored),
                )
        return True

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        return self._dummy_hash

    # --- sessions --------------------------------------------------------------------------

    def create_session(self, name: str, lifetime_seconds: int, address: str | None) -> str:
        """A new session of ``name`` for ``lifetime_seconds``: the token to hand to the
        client (only its SHA-256 is stored). Expired sessions are pruned; beyond
        :data:`MAX_SESSIONS_PER_USER` the user's oldest sessions end."""
        if lifetime_seconds <= 0:
            raise ValueError("a session lifetime must be positive")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            db.execute(
                "INSERT INTO sessions (token_hash, name, created, expires, address)"
                " VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), name, now, now + lifetime_seconds, address),
            )
            db.execute(
                "DELETE FROM sessions WHERE name = ? AND token_hash NOT IN (SELECT token_hash"
                " FROM sessions WHERE name = ? ORDER BY created DESC, rowid DESC LIMIT ?)",
                (name, name, MAX_SESSIONS_PER_USER),
            )
        return token

    def session_user(self, token: str) -> str | None:
        """The user of the session ``token``, or None: unknown, expired, ended, or the
        user's account is disabled."""
        if not token or len(token) > 256:
            return None
        rows = self._query(
            "SELECT s.name FROM sessions AS s LEFT JOIN accounts AS a ON a.name = s.name"
            " WHERE s.token_hash = ? AND s.expires > ? AND coalesce(a.disabled, 0) = 0",
            (token_hash(token), self._clock()),
        )
        return str(rows[0][0]) if rows else None

    def end_session(self, token: str) -> None:
        """End the session ``token`` (nothing happens for an unknown one)."""
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash(token),))

    def end_all_sessions(self, name: str) -> int:
        """End every session of ``name``; how many were still running."""
        now = self._clock()
        with self._transaction() as db:
            live = db.execute(
                "SELECT count(*) FROM sessions WHERE name = ? AND expires > ?", (name, now)
            ).fetchone()[0]
            db.execute("DELETE FROM sessions WHERE name = ?", (name,))
        return int(live)

    # --- throttling ------------------------------------------------------------------------

    def record_failure(self, name: str, address: str | None, now: float | None = None) -> None:
        """Count a failed sign-in of ``name`` (as tried) from ``address``; failures older
        than the window are pruned."""
        now = self._clock() if now is None else now
        with self._transaction() as db:
            db.execute("DELETE FROM failures WHERE time <= ?", (now - FAILURE_WINDOW_SECONDS,))
            db.execute(
                "INSERT INTO failures (name, address, time) VALUES (?, ?, ?)",
                (_failure_name(name), address, now),
            )
            db.execute(
                "DELETE FROM failures WHERE id <= (SELECT max(id) FROM failures) - ?",
                (MAX_FAILURE_ROWS,),
            )

    def throttled(self, name: str, address: str | None, now: float | None = None) -> bool:
        """True after :data:`MAX_FAILURES` failed sign-ins within
        :data:`FAILURE_WINDOW_SECONDS` of that name, or from that address."""
        now = self._clock() if now is None else now
        since = now - FAILURE_WINDOW_SECONDS
        by_name = self._query(
            "SELECT count(*) FROM failures WHERE name = ? AND time > ? AND time <= ?",
            (_failure_name(name), since, now),
        )[0][0]
        if by_name >= MAX_FAILURES:
            return True
        if address is None:
            return False
        by_address = self._query(
            "SELECT count(*) FROM failures WHERE address = ? AND time > ? AND time <= ?",
            (address, since, now),
        )[0][0]
        return bool(by_address >= MAX_FAILURES)
