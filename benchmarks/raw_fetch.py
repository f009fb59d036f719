"""Raw baseline: fetch every message of many mailboxes as fast as plain imaplib allows.

N worker processes (N = connections) take mailboxes from a shared queue. Per mailbox a
worker logs in with SASL PLAIN as the master user with the mailbox's user as authorization
identity, lists the folders, and for every selectable folder sends one
``UID FETCH 1:* BODY.PEEK[]`` under EXAMINE, writing each message to
``OUT/<user>/<folder number>/<uid>.eml`` (no fsync, no hashing, no compression, no index).

    python benchmarks/raw_fetch.py --host 127.0.0.1 --port 143 --master archiver \\
        --password-env BENCH_MASTER_PASSWORD --workers 4 --out DIR user1 user2 ...

Prints one JSON line: messages, bytes, failures.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import json
import multiprocessing
import os
import re
import sys
from pathlib import Path

_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$')
_UID_RE = re.compile(rb"UID (\d+)")


def _folder_names(imap: imaplib.IMAP4) -> list[bytes]:
    typ, lines = imap.list()
    if typ != "OK":
        raise RuntimeError(f"LIST failed: {lines!r}")
    names = []
    for line in lines:
        if not isinstance(line, bytes):
            continue
        match = _LIST_RE.match(line)
        if match is None:
            raise RuntimeError(f"unexpected LIST line {line!r}")
        if b"\\noselect" in match.group("flags").lower():
            continue
        names.append(match.group("name"))
    return names


def fetch_mailbox(
    host: str, port: int, master: str, password: str, user: str, out: Path
) -> tuple[int, int]:
    """Fetch every message of ``user``; return (messages, bytes)."""
    imap = imaplib.IMAP4(host, port, timeout=120)
    messages = total = 0
    try:
        token = f"{user}\0{master}\0{password}".encode()
        imap.authenticate("PLAIN", lambda _challenge: token)
        for number, name in enumerate(_folder_names(imap)):
            typ, data = imap.select(name.decode("ascii"), readonly=True)
            if typ != "OK":
                raise RuntimeError(f"EXAMINE {name!r} failed: {data!r}")
            if int(data[0] or 0) == 0:
                continue
            typ, fetched = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
            if typ != "OK":
                raise RuntimeError(f"FETCH in {name!r} failed: {fetched!r}")
            target = out / user / str(number)
            target.mkdir(parents=True, exist_ok=True)
            for item in fetched:
                if not isinstance(item, tuple):
                    continue
                envelope, body = item
                match = _UID_RE.search(envelope)
                if match is None:
                    raise RuntimeError(f"no UID in {envelope!r}")
                with open(target / f"{match.group(1).decode()}.eml", "wb") as handle:
                    handle.write(body)
                messages += 1
                total += len(body)
            imap.close()
        imap.logout()
    finally:
        with contextlib.suppress(OSError):
            imap.shutdown()
    return messages, total


def _work(arguments: tuple[str, int, str, str, str, str]) -> tuple[str, int, int, str | None]:
    host, port, master, password, user, out = arguments
    try:
        messages, total = fetch_mailbox(host, port, master, password, user, Path(out))
    except Exception as error:  # a failed mailbox is counted, the others go on
        return user, 0, 0, f"{type(error).__name__}: {error}"
    return user, messages, total, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--password-env", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("users", nargs="+")
    options = parser.parse_args(argv)
    password = os.environ[options.password_env]
    options.out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (options.host, options.port, options.master, password, user, str(options.out))
        for user in options.users
    ]
    messages = total = 0
    failures: list[str] = []
    context = multiprocessing.get_context("fork")
    with context.Pool(options.workers) as pool:
        for user, count, size, error in pool.imap_unordered(_work, jobs):
            messages += count
            total += size
            if error is not None:
                failures.append(f"{user}: {error}")
    print(json.dumps({"messages": messages, "bytes": total, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
