"""Deterministic benchmark mail data, written straight into a private Dovecot's Maildirs.

Every mailbox gets the same six folders (two with non-ASCII or nested names). Message sizes
are log-uniform between 2 and 60 KB; about 3 % of the messages carry a base64 attachment and
are 0.5 to 5 MB long. Every message is valid RFC 5322 with CRLF line endings and a Message-ID
of its own, so no two messages have the same bytes.

The messages are written as files into the folders' ``cur/`` directories (owned by the
server's mail account), then every folder is opened once over IMAP so that Dovecot indexes
the new files and assigns UIDs. That is much faster than APPEND and gives the same server
state.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imapclient.imap_utf7 import encode as utf7_encode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers.dovecot import DovecotServer  # noqa: E402

FOLDERS: tuple[str, ...] = (
    "INBOX",
    "Sent",
    "Projekte/Übersicht",
    "Archive/2024",
    "Kunden",
    "Notizen",
)

SMALL_MIN = 2 * 1024
SMALL_MAX = 60 * 1024
LARGE_MIN = 512 * 1024
LARGE_MAX = 5 * 1024 * 1024
LARGE_SHARE = 0.03

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "this",
    "from",
    "at",
    "be",
    "are",
    "was",
    "it",
    "an",
    "or",
    "have",
    "not",
    "Angebot",
    "Rechnung",
    "Lieferung",
    "Besprechung",
    "Termin",
    "Übersicht",
    "Größe",
    "Grüße",
    "Projekt",
    "Kunde",
    "meeting",
    "invoice",
    "delivery",
    "schedule",
    "report",
    "budget",
    "quarter",
    "review",
    "contract",
    "proposal",
    "server",
    "backup",
    "release",
    "migration",
    "ticket",
    "customer",
    "support",
    "account",
    "mailbox",
    "archive",
    "müssen",
    "können",
    "über",
    "für",
    "während",
    "später",
    "natürlich",
    "Straße",
    "Änderung",
    "Prüfung",
]


@dataclass(frozen=True)
class Preset:
    name: str
    mailboxes: int
    folders: int
    messages_per_folder: int

    @property
    def folder_names(self) -> tuple[str, ...]:
        return FOLDERS[: self.folders]

    @property
    def total_messages(self) -> int:
        return self.mailboxes * self.folders * self.messages_per_folder


PRESETS: dict[str, Preset] = {
    # For checking the harness and the report itself (seconds), not for figures.
    "tiny": Preset("tiny", 2, 2, 20),
    "small": Preset("small", 4, 3, 50),
    "default": Preset("default", 20, 6, 100),
    "large": Preset("large", 100, 6, 100),
}


@dataclass(frozen=True)
class SeedResult:
    messages: int
    bytes: int
    large_messages: int
    largest_message: int
    generate_seconds: float
    index_seconds: float
    seconds: float


def user_name(index: int) -> str:
    return f"u{index:03d}"


def user_password(index: int) -> str:
    return f"pw-{index:03d}"


def users(preset: Preset) -> dict[str, str]:
    return {user_name(i): user_password(i) for i in range(preset.mailboxes)}


class _Corpus:
    """A block of pseudo-random prose; messages are slices of it."""

    def __init__(self, rng: random.Random, size: int = 1 << 21) -> None:
        lines: list[str] = []
        total = 0
        while total < size:
            words = rng.choices(_WORDS, k=rng.randint(6, 12))
            line = " ".join(words)
            line = line[0].upper() + line[1:] + "."
            lines.append(line)
            total += len(line.encode()) + 2
        self.lines = lines

    def text(self, rng: random.Random, size: int) -> bytes:
        """About ``size`` bytes of CRLF text lines, starting at a random line."""
        out: list[str] = []
        total = 0
        index = rng.randrange(len(self.lines))
        while total < size:
            line = self.lines[index % len(self.lines)]
            out.append(line)
            total += len(line.encode()) + 2
            index += 1
        return ("\r\n".join(out) + "\r\n").encode()


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


def _headers(rng: random.Random, mailbox: int, folder: int, number: int, subject: str) -> list[str]:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    date = base + dt.timedelta(seconds=rng.randrange(365 * 86400))
    peer = rng.randrange(500)
    me = f"{user_name(mailbox)}@bench.example.test"
    other = f"contact{peer}@partner{peer % 17}.example.test"
    sender, recipient = (me, other) if folder == 1 else (other, me)
    if subject.isascii():
        subject_field = subject
    else:
        subject_field = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?="
    return [
        f"Return-Path: <{sender}>",
        f"Received: from mx{peer % 3}.example.test by imap.bench.example.test; "
        + email.utils.format_datetime(date),
        f"From: Contact {peer} <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject_field}",
        f"Date: {email.utils.format_datetime(date)}",
        f"Message-ID: <bench.{mailbox}.{folder}.{number}.{rng.getrandbits(48):012x}"
        "@bench.example.test>",
        "MIME-Version: 1.0",
    ]


def make_message(corpus: _Corpus, seed: str, mailbox: int, folder: int, number: int) -> bytes:
    """One message, a pure function of its coordinates."""
    rng = random.Random(seed)
    large = rng.random() < LARGE_SHARE
    subject = " ".join(rng.choices(_WORDS, k=rng.randint(3, 7))).capitalize()
    headers = _headers(rng, mailbox, folder, number, subject)
    if not large:
        size = _log_uniform(rng, SMALL_MIN, SMALL_MAX)
        head = "\r\n".join(
            [
                *headers,
                "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 8bit",
            ]
        ).encode()
        body_size = max(size - len(head) - 4, 64)
        return head + b"\r\n\r\n" + corpus.text(rng, body_size)
    size = int(rng.uniform(LARGE_MIN, LARGE_MAX))
    boundary = f"=_bench_{rng.getrandbits(64):016x}"
    text = corpus.text(rng, rng.randint(500, 3000))
    # base64 is 4/3 of the raw size, plus CRLF every 76 characters.
    raw = rng.randbytes(max(int(size * 0.75 * 76 / 78) - len(text), 1024))
    encoded = base64.b64encode(raw)
    lines = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    name = f"anhang-{number}.pdf"
    parts = [
        "\r\n".join([*headers, f'Content-Type: multipart/mixed; boundary="{boundary}"']).encode(),
        b"",
        b"This is a multi-part message in MIME format.",
        f"--{boundary}".encode(),
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Transfer-Encoding: 8bit",
        b"",
        text,
        f"--{boundary}".encode(),
        f'Content-Type: application/pdf; name="{name}"'.encode(),
        b"Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{name}"'.encode(),
        b"",
        lines,
        f"--{boundary}--".encode(),
        b"",
    ]
    return b"\r\n".join(parts)


def iter_mailbox(corpus: _Corpus, preset: Preset, mailbox: int) -> Iterator[tuple[str, int, bytes]]:
    """(folder, number, message) for every message of one mailbox."""
    for f, folder in enumerate(preset.folder_names):
        for n in range(preset.messages_per_folder):
            yield folder, n, make_message(corpus, f"bench/{mailbox}/{f}/{n}", mailbox, f, n)


def _folder_dir(maildir: Path, folder: str) -> Path:
    if folder == "INBOX":
        return maildir
    encoded: bytes = utf7_encode(folder)
    return maildir / encoded.decode("ascii")


def _make_dirs(path: Path, uid: int, gid: int) -> None:
    """Create ``path`` (and parents below the Maildir) with cur/new/tmp, owned by the mail user."""
    for sub in ("cur", "new", "tmp"):
        target = path / sub
        missing = []
        probe = target
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
            if os.geteuid() == 0:
                os.chown(directory, uid, gid)


def seed(server: DovecotServer, preset: Preset) -> SeedResult:
    """Fill every mailbox of ``preset`` and have Dovecot index it; return what was written."""
    started = time.monotonic()
    owner = os.stat(server.mail_root)
    uid, gid = owner.st_uid, owner.st_gid
    corpus = _Corpus(random.Random("bench-corpus"))
    total_messages = total_bytes = large = largest = 0
    stamp = 1_700_000_000
    for mailbox in range(preset.mailboxes):
        user = user_name(mailbox)
        # One login creates the home directory and Maildir with the right owner.
        with server.client(user) as imap:
            imap.select_folder("INBOX", readonly=True)
        maildir = server.mail_root / user / "Maildir"
        for folder in preset.folder_names:
            _make_dirs(_folder_dir(maildir, folder), uid, gid)
        for folder, number, message in iter_mailbox(corpus, preset, mailbox):
            flags = "S" if number % 5 else ""
            name = f"{stamp + number}.M{number}P{mailbox}.bench,S={len(message)}:2,{flags}"
            path = _folder_dir(maildir, folder) / "cur" / name
            with open(path, "wb") as out:
                out.write(message)
            if os.geteuid() == 0:
                os.chown(path, uid, gid)
            total_messages += 1
            total_bytes += len(message)
            largest = max(largest, len(message))
            large += len(message) >= LARGE_MIN
    generated = time.monotonic()
    for mailbox in range(preset.mailboxes):
        with server.client(user_name(mailbox)) as imap:
            for folder in preset.folder_names:
                status = imap.folder_status(folder, [b"MESSAGES"])
                count = int(status[b"MESSAGES"])
                if count != preset.messages_per_folder:
                    raise RuntimeError(
                        f"{user_name(mailbox)}/{folder}: Dovecot sees {count} messages, "
                        f"expected {preset.messages_per_folder}"
                    )
    finished = time.monotonic()
    return SeedResult(
        messages=total_messages,
        bytes=total_bytes,
        large_messages=large,
        largest_message=largest,
        generate_seconds=generated - started,
        index_seconds=finished - generated,
        seconds=finished - started,
    )


def warm_up(server: DovecotServer, preset: Preset) -> float:
    """Read every message file once and fetch sizes and flags over IMAP.

    The first tool measured then finds the same warm page cache and Dovecot cache
    as the last one.
    """
    started = time.monotonic()
    for path in server.mail_root.rglob("*"):
        if path.is_file() and path.parent.name in ("cur", "new"):
            with open(path, "rb") as handle:
                while handle.read(1 << 20):
                    pass
    for mailbox in range(preset.mailboxes):
        with server.client(user_name(mailbox)) as imap:
            for folder in preset.folder_names:
                imap.select_folder(folder, readonly=True)
                imap.fetch(imap.search("ALL"), ["FLAGS", "RFC822.SIZE", "INTERNALDATE"])
    return time.monotonic() - started
