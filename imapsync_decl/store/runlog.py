"""The ``runs`` table of the index: one row per command run, with its protocol.

A run's row is made when it begins (status ``running``) and completed when it ends,
with its status and its protocol (the document ``apply --format json`` prints) as a
JSON summary. ``store/runs.py`` finds runs and reads their protocols back for the
``runs`` command. The number of runs is the archive's state token: a saved plan
records it, and is stale once another apply has begun.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from imapsync_decl.store.connection import ArchiveIndexError, IndexConnection
from imapsync_decl.store.rows import RUN_COLUMNS, RUN_KEYS, now_text, run_dict


class RunLog(IndexConnection):
    """The runs of the index: begun, finished, listed."""

    def begin_run(self, run_id: str, command: str) -> None:
        with self.atomic() as db:
            db.execute(
                "INSERT INTO runs (id, started_at, status, command) VALUES (?, ?, 'running', ?)",
                (run_id, now_text(), command),
            )
            self._log_run(db, run_id)

    def _log_run(self, db: sqlite3.Connection, run_id: str) -> None:
        row = db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()  # noqa: S608
        if row is not None:
            self._log({"t": "run", **dict(zip(RUN_KEYS, row, strict=True))})

    def state_token(self) -> str:
        """Changes whenever an apply begins on this archive: a saved plan records it, and
        a plan whose token is no longer the archive's is stale."""
        row = self._one("SELECT count(*) FROM runs", ())
        return f"runs:{row[0] if row is not None else 0}"

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, sort_keys=True, default=str, ensure_ascii=False)
        with self.atomic() as db:
            cursor = db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (now_text(), status, text, run_id),
            )
            if cursor.rowcount != 1:
                raise ArchiveIndexError(f"no run {run_id!r} in the index")
            self._log_run(db, run_id)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run as a dict (id, started_at, finished_at, status, command, summary)."""
        row = self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))  # noqa: S608
        return None if row is None else run_dict(row)

    def last_runs(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` most recently started runs, newest first."""
        rows = self._all(
            f"SELECT {RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?",  # noqa: S608
            (n,),
        )
        return [run_dict(r) for r in rows]

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, command, started_at, finished_at, status and the
        ``totals`` object of its protocol (None without one). Protocols are not read whole."""
        rows = self._all(
            "SELECT id, command, started_at, finished_at, status,"
            " CASE WHEN json_valid(summary) THEN json_extract(summary, '$.totals') END"
            " FROM runs ORDER BY started_at DESC, rowid DESC"
        )
        listed = []
        for run_id, command, started_at, finished_at, status, totals in rows:
            parsed = json.loads(totals) if isinstance(totals, str) else None
            listed.append(
                {
                    "id": run_id,
                    "command": command,
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "status": status,
                    "totals": parsed if isinstance(parsed, dict) else None,
                }
            )
        return listed

    def last_profile_run(self, profile: str, *, ok: bool = False) -> dict[str, Any] | None:
        """The newest finished apply whose protocol covers ``profile`` (with ``ok``: where
        the profile succeeded): ``started_at``, ``finished_at`` and the profile's totals."""
        path = f'$.profiles."{profile}"'
        row = self._one(
            "SELECT started_at, finished_at, json_extract(summary, ?1) FROM runs"
            " WHERE command = 'apply' AND finished_at IS NOT NULL AND json_valid(summary)"
            " AND json_type(summary, ?1) = 'object'"
            " AND (?2 = 0 OR json_extract(summary, ?1 || '.status') = 'ok')"
            # Newest first by rowid (runs are added in order): the scan stops at the first
            # match instead of reading every protocol.
            " ORDER BY rowid DESC LIMIT 1",
            (path, int(ok)),
        )
        if row is None:
            return None
        totals = json.loads(row[2])
        return {"started_at": row[0], "finished_at": row[1], "totals": totals}

    def run_ids_starting_with(self, prefix: str) -> list[str]:
        """The ids of the runs whose id starts with ``prefix``, newest first."""
        rows = self._all(
            "SELECT id FROM runs WHERE substr(id, 1, length(?1)) = ?1"
            " ORDER BY started_at DESC, rowid DESC",
            (prefix,),
        )
        return [str(r[0]) for r in rows]
