"""The index's schema: its tables, and the migrations that create and upgrade them.

Tables:

* ``users``, ``mailboxes``, ``folders`` (one per IMAP folder of a mailbox, with
  its *checkpoint*: the UIDVALIDITY, UIDNEXT and message count up to which the
  folder is completely archived, NULL until the first complete pass).
* A mailbox is known by its user, its archive folder **and its source**: the
  server (``host:port``) and the login it is reached with. Two sources that
  resolve to the same user and archive folder (the same person on an old and a
  new server, two CSV rows with one e-mail address) are two mailboxes, which never
  share folders, checkpoints or placements; the tree shows the second one with a
  suffix (``tree_folder``). Schema version 4 brought this in: rows of older
  versions keep their ``login`` and get ``server`` NULL, since the server was never
  recorded. The first apply of a mailbox with that user, archive folder and login
  claims such a row and fills in its server (``ensure_mailbox``); any other source
  gets a mailbox of its own and is archived in full. Placements that two sources
  wrote into one row before the upgrade cannot be told apart any more; verified
  deletion therefore compares the server's copy with the archived blob before it
  deletes anything.
* ``messages``: one row per blob (per distinct content), with a few header
  values for listing.
* ``placements``: one row per copy of a message in a folder, keyed by
  (folder, UIDVALIDITY, UID). The same message in two folders is one
  ``messages`` row and two placements.
* ``runs``: one row per command run, with a JSON summary.
* ``jobs``: the mailboxes of a run that its runners claim, one at a time
  (``store/jobs.py``); not journaled: they coordinate a run, they are not content.
* ``meta``: key/value pairs: the ``archive_id`` (a UUID), and ``journal`` once the
  journal holds everything the index holds (an index made before the journal gets
  a snapshot of itself written to the journal when first opened).

Run summaries are stored as JSON objects; timestamps and flags as ``store/rows.py``
says. The schema is created and upgraded by ``MIGRATIONS``, applied in order and
tracked by ``PRAGMA user_version``; a database newer than this code is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence

from imapsync_decl.store.connection import ArchiveIndexError, IndexConnection, IndexTooNew

MIGRATIONS: list[str] = [
    # 1: the initial schema.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );

    CREATE TABLE users (
        id           INTEGER PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        email        TEXT,
        display_name TEXT,
        created_at   TEXT NOT NULL
    );

    CREATE TABLE mailboxes (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users (id),
        archive_folder TEXT NOT NULL,
        login          TEXT NOT NULL,
        profile        TEXT NOT NULL,
        UNIQUE (user_id, archive_folder)
    );

    CREATE TABLE folders (
        id            INTEGER PRIMARY KEY,
        mailbox_id    INTEGER NOT NULL REFERENCES mailboxes (id),
        path          TEXT NOT NULL,
        uidvalidity   INTEGER CHECK (uidvalidity BETWEEN 1 AND 4294967295),
        uidnext       INTEGER CHECK (uidnext BETWEEN 1 AND 4294967296),
        message_count INTEGER CHECK (message_count >= 0),
        checked_at    TEXT,
        UNIQUE (mailbox_id, path),
        CHECK ((uidvalidity IS NULL) = (uidnext IS NULL)
               AND (uidvalidity IS NULL) = (message_count IS NULL))
    );

    CREATE TABLE messages (
        sha256            TEXT PRIMARY KEY
                          CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
        size              INTEGER NOT NULL CHECK (size >= 0),
        stored_size       INTEGER NOT NULL CHECK (stored_size >= 0),
        message_id        TEXT,
        date              TEXT,
        from_addr         TEXT,
        to_addr           TEXT,
        subject           TEXT,
        first_archived_at TEXT NOT NULL
    );

    CREATE TABLE runs (
        id          TEXT PRIMARY KEY,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        status      TEXT NOT NULL,
        command     TEXT NOT NULL,
        summary     TEXT
    );

    CREATE TABLE placements (
        id            INTEGER PRIMARY KEY,
        folder_id     INTEGER NOT NULL REFERENCES folders (id),
        uidvalidity   INTEGER NOT NULL CHECK (uidvalidity BETWEEN 1 AND 4294967295),
        uid           INTEGER NOT NULL CHECK (uid BETWEEN 1 AND 4294967295),
        sha256        TEXT NOT NULL REFERENCES messages (sha256),
        internal_date TEXT,
        flags         TEXT NOT NULL DEFAULT '[]',
        archived_at   TEXT NOT NULL,
        run_id        TEXT,
        UNIQUE (folder_id, uidvalidity, uid)
    );

    CREATE INDEX placements_sha256 ON placements (sha256);
    CREATE INDEX mailboxes_user ON mailboxes (user_id);
    CREATE INDEX runs_started ON runs (started_at);
    """,
    # 2: the user list: where each user comes from, and whether it is still there.
    """
    ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'document'
        CHECK (source IN ('document', 'directory', 'csv', 'single'));
    ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'gone'));
    ALTER TABLE users ADD COLUMN aliases TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE users ADD COLUMN directory TEXT;
    ALTER TABLE users ADD COLUMN updated_at TEXT;
    """,
    # 3: the condition of a folder's checkpoint under message filters.
    """
    ALTER TABLE folders ADD COLUMN condition TEXT;
    """,
    # 4: a mailbox is known by its source too (server host:port and login), so two
    # mailboxes of one archive folder never share folders, checkpoints or placements.
    # Rows of older versions keep their login and get server NULL: see ensure_mailbox.
    """
    CREATE TABLE mailboxes_v4 (
        id             INTEGER PRIMARY KEY,
        user_id        INTEGER NOT NULL REFERENCES users (id),
        archive_folder TEXT NOT NULL,
        server         TEXT,
        login          TEXT NOT NULL,
        profile        TEXT NOT NULL,
        UNIQUE (user_id, archive_folder, server, login)
    );
    INSERT INTO mailboxes_v4 (id, user_id, archive_folder, server, login, profile)
        SELECT id, user_id, archive_folder, NULL, login, profile FROM mailboxes;
    DROP TABLE mailboxes;
    ALTER TABLE mailboxes_v4 RENAME TO mailboxes;
    CREATE INDEX mailboxes_user ON mailboxes (user_id);
    CREATE UNIQUE INDEX mailboxes_legacy ON mailboxes (user_id, archive_folder, login)
        WHERE server IS NULL;
    """,
    # 5: a folder's messages newest first, a page at a time (the web folder listing), by
    # an index in that order: no sort of the whole folder, however large.
    """
    CREATE INDEX placements_folder_newest
        ON placements (folder_id, coalesce(internal_date, ''), id);
    """,
    # 6: the mailboxes of a run as jobs that its runners claim (store/jobs.py).
    """
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL REFERENCES runs (id),
        profile     TEXT NOT NULL,
        position    INTEGER NOT NULL,
        mailbox     TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
        runner      TEXT,
        claimed_at  TEXT,
        finished_at TEXT,
        error       TEXT,
        UNIQUE (run_id, profile, position)
    );
    CREATE INDEX jobs_pending ON jobs (run_id, profile, state, position);
    """,
]


class Migrations(IndexConnection):
    """Bringing an index's schema up to date."""

    def _migrate(self, migrations: Sequence[str] = MIGRATIONS) -> None:
        """Apply the pending migrations, each in its own transaction.

        Foreign keys are off meanwhile (a migration may rebuild a table others refer
        to, the way SQLite documents it) and checked before each commit.
        """
        target = len(migrations)
        self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            while True:
                with self.atomic() as db:
                    version = int(db.execute("PRAGMA user_version").fetchone()[0])
                    if version > len(MIGRATIONS):
                        raise IndexTooNew(
                            f"the archive index {self.path} has schema version {version}, newer"
                            f" than this version of imapsync-decl knows ({target}); upgrade it"
                        )
                    if version >= target:
                        return
                    for statement in statements(migrations[version]):
                        db.execute(statement)
                    if db.execute("PRAGMA foreign_key_check").fetchone() is not None:
                        raise ArchiveIndexError(
                            f"migration {version + 1} of {self.path} would break a reference"
                        )
                    db.execute(f"PRAGMA user_version = {version + 1:d}")
        finally:
            self._db.execute("PRAGMA foreign_keys = ON")


def statements(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending.strip()
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending.strip()!r}")
