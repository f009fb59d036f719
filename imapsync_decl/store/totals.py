"""The counts and sums of the index that ``archive stats`` reports.

Row counts, the archive's sizes (raw and stored, per distinct message and per
placement) and the same per user, read with a few queries; ``store/stats.py`` makes
the report (``ArchiveStats``) of them.
"""

from __future__ import annotations

from typing import Any

from imapsync_decl.store.connection import IndexConnection


class ArchiveTotals(IndexConnection):
    """The counts and sums of the index that ``archive stats`` shows."""

    def counts(self) -> dict[str, int]:
        """Row counts of users, mailboxes, folders, messages and placements."""
        tables = ("users", "mailboxes", "folders", "messages", "placements")
        return {t: int(self._one(f"SELECT count(*) FROM {t}")[0]) for t in tables}  # noqa: S608

    def storage_totals(self) -> dict[str, int]:
        """The archive's sizes: ``messages`` (distinct blobs), ``bytes_original`` (their raw
        sizes), ``bytes_stored`` (their compressed sizes on disk), ``placements`` and
        ``bytes_placed`` (the raw size of every placement: what the folders hold)."""
        messages, original, stored = self._one(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0) FROM messages"
        )
        placements, placed = self._one(
            "SELECT count(*), coalesce(sum(m.size), 0)"
            " FROM placements p JOIN messages m ON m.sha256 = p.sha256"
        )
        return {
            "messages": int(messages),
            "bytes_original": int(original),
            "bytes_stored": int(stored),
            "placements": int(placements),
            "bytes_placed": int(placed),
        }

    def metric_totals(self) -> dict[str, int]:
        """What the metrics report of the whole archive, in a few cheap queries: users,
        mailboxes, ``messages`` (distinct), ``bytes_original``, ``bytes_stored`` and
        ``placements``."""
        messages, original, stored = self._one(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0) FROM messages"
        )
        tables = ("users", "mailboxes", "placements")
        counts = {t: int(self._one(f"SELECT count(*) FROM {t}")[0]) for t in tables}  # noqa: S608
        return {
            **counts,
            "messages": int(messages),
            "bytes_original": int(original),
            "bytes_stored": int(stored),
        }

    def run_archived_bytes(self, run_id: str) -> dict[str, int]:
        """Per profile, the raw size of the messages (contents) that run ``run_id`` stored
        new: placed by the run and first archived since it began."""
        rows = self._all(
            "SELECT profile, coalesce(sum(size), 0) FROM ("
            " SELECT DISTINCT mb.profile AS profile, m.sha256, m.size AS size"
            " FROM placements p JOIN messages m ON m.sha256 = p.sha256"
            " JOIN folders f ON f.id = p.folder_id JOIN mailboxes mb ON mb.id = f.mailbox_id"
            " WHERE p.run_id = ?1"
            " AND m.first_archived_at >= (SELECT started_at FROM runs WHERE id = ?1))"
            " GROUP BY profile",
            (run_id,),
        )
        return {str(profile): int(size) for profile, size in rows}

    def size_of(self, shas: set[str]) -> int:
        """The raw size of the messages ``shas`` (those the archive holds)."""
        total = 0
        ordered = sorted(shas)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            row = self._one(
                f"SELECT coalesce(sum(size), 0) FROM messages WHERE sha256 IN ({marks})",  # noqa: S608
                tuple(chunk),
            )
            total += int(row[0])
        return total

    def user_totals(self) -> list[dict[str, Any]]:
        """Per user, by name: ``mailboxes``, ``folders``, ``messages`` (distinct blobs in the
        user's folders), ``placements``, ``bytes_original`` and ``bytes_stored`` (of those
        distinct messages) and ``bytes_placed`` (of every placement). A message two users
        hold counts for each of them."""
        rows = self._all(
            "WITH up AS ("
            "  SELECT m.user_id AS user_id, p.sha256 AS sha256 FROM placements p"
            "  JOIN folders f ON f.id = p.folder_id JOIN mailboxes m ON m.id = f.mailbox_id),"
            " placed AS ("
            "  SELECT up.user_id AS user_id, count(*) AS n, sum(msg.size) AS bytes"
            "  FROM up JOIN messages msg ON msg.sha256 = up.sha256 GROUP BY up.user_id),"
            " uniq AS ("
            "  SELECT d.user_id AS user_id, count(*) AS n, sum(msg.size) AS bytes,"
            "  sum(msg.stored_size) AS stored"
            "  FROM (SELECT DISTINCT user_id, sha256 FROM up) d"
            "  JOIN messages msg ON msg.sha256 = d.sha256 GROUP BY d.user_id)"
            " SELECT u.name,"
            " (SELECT count(*) FROM mailboxes m WHERE m.user_id = u.id),"
            " (SELECT count(*) FROM folders f JOIN mailboxes m ON m.id = f.mailbox_id"
            "  WHERE m.user_id = u.id),"
            " coalesce(uniq.n, 0), coalesce(placed.n, 0), coalesce(uniq.bytes, 0),"
            " coalesce(uniq.stored, 0), coalesce(placed.bytes, 0)"
            " FROM users u LEFT JOIN placed ON placed.user_id = u.id"
            " LEFT JOIN uniq ON uniq.user_id = u.id ORDER BY u.name"
        )
        keys = (
            "user",
            "mailboxes",
            "folders",
            "messages",
            "placements",
            "bytes_original",
            "bytes_stored",
            "bytes_placed",
        )
        return [
            {k: (v if k == "user" else int(v)) for k, v in zip(keys, row, strict=True)}
            for row in rows
        ]
