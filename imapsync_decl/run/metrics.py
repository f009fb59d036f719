"""Prometheus metrics of every profile and of the archive, for the node exporter's textfile collector.

Written once per run (never per message), all from the index: per profile the newest
apply that covered it (start, end, duration, success, messages and bytes archived and
deleted, mailboxes ok and failed) and the newest one in which it succeeded, so a
failed run keeps the last success time; then the archive's totals. The file is
replaced atomically (temporary file in the same directory, fsync, rename; mode 0644,
never through a symbolic link), so the collector never reads half a file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imapsync_decl.fs import AtomicFile
from imapsync_decl.store.index import Index

PREFIX = "imapsync_decl"
METRICS_MODE = 0o644

# name -> (help, key of the profile's totals or None for a timestamp)
_PROFILE_GAUGES: tuple[tuple[str, str, str], ...] = (
    (
        "last_run_archived_messages",
        "Messages (contents new to the archive) the last run archived.",
        "archived",
    ),
    (
        "last_run_archived_bytes",
        "Raw size of the messages the last run archived.",
        "archived_bytes",
    ),
    ("last_run_deleted_messages", "Messages the last run deleted from the server.", "deleted"),
    (
        "last_run_deleted_bytes",
        "Raw size of the messages the last run deleted from the server.",
        "deleted_bytes",
    ),
)


def escape_label(value: str) -> str:
    """A label value as the text format needs it: backslash, double quote, line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = f"{PREFIX}_{name}"
        self.lines = [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {kind}"]
        self.samples = 0

    def add(self, value: float, **labels: str) -> None:
        text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        self.lines.append(
            f"{self.name}{{{text}}} {_number(value)}" if text else f"{self.name} {_number(value)}"
        )
        self.samples += 1


def render_metrics(index: Index, profiles: Sequence[str]) -> str:
    """The metrics text of ``profiles`` (in this order) and of the archive ``index`` holds."""
    families: dict[str, _Family] = {}

    def family(name: str, help_text: str, kind: str = "gauge") -> _Family:
        if name not in families:
            families[name] = _Family(name, kind, help_text)
        return families[name]

    for name in profiles:
        last = index.last_profile_run(name)
        success = index.last_profile_run(name, ok=True)
        if last is not None:
            totals: dict[str, Any] = last["totals"] if isinstance(last["totals"], dict) else {}
            start, end = _seconds(last["started_at"]), _seconds(last["finished_at"])
            if start is not None:
                family(
                    "last_run_start_timestamp_seconds",
                    "When the last run of the profile began (Unix time).",
                ).add(start, profile=name)
            if end is not None:
                family(
                    "last_run_end_timestamp_seconds",
                    "When the last run of the profile ended (Unix time).",
                ).add(end, profile=name)
            if start is not None and end is not None:
                family(
                    "last_run_duration_seconds", "How long the last run of the profile took."
                ).add(max(0.0, end - start), profile=name)
            family("last_run_success", "1 when the last run of the profile succeeded, else 0.").add(
                1 if totals.get("status") == "ok" else 0, profile=name
            )
            for metric, help_text, key in _PROFILE_GAUGES:
                family(metric, help_text).add(_int(totals.get(key)), profile=name)
            mailboxes = family(
                "last_run_mailboxes", "Mailboxes of the last run, by result (ok, failed)."
            )
            failed = _int(totals.get("failed_mailboxes"))
            mailboxes.add(max(0, _int(totals.get("mailboxes")) - failed), profile=name, result="ok")
            mailboxes.add(failed, profile=name, result="failed")
        when = _seconds(success["finished_at"]) if success is not None else None
        if when is not None:
            family(
                "last_success_timestamp_seconds",
                "When the last successful run of the profile ended (Unix time).",
            ).add(when, profile=name)
    totals = index.metric_totals()
    archive = (
        ("archive_users", "Archive users.", "users"),
        ("archive_mailboxes", "Mailboxes in the archive.", "mailboxes"),
        ("archive_messages", "Distinct messages (contents) in the archive.", "messages"),
        ("archive_placements", "Placements: copies of messages in archived folders.", "placements"),
        (
            "archive_original_bytes",
            "Raw size of the distinct messages in the archive.",
            "bytes_original",
        ),
        (
            "archive_stored_bytes",
            "Size of the archive's blobs on disk (compressed).",
            "bytes_stored",
        ),
    )
    for metric, help_text, key in archive:
        family(metric, help_text).add(totals[key])
    return "".join(line + "\n" for f in families.values() if f.samples for line in f.lines)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def write_metrics(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a temporary file in the same directory
    (created exclusively, never through a symbolic link), fsync, rename, mode 0644."""
    with AtomicFile(path, mode=METRICS_MODE, sync_dir=True) as out:
        out.write(text.encode("utf-8"))
