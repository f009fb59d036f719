"""Mailbox workers: apply archives each mailbox in a worker process of its own."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imapsync_decl.imap.errors import ImapError
from imapsync_decl.imap.settings import Endpoint
from imapsync_decl.run import mailbox_worker, workers
from imapsync_decl.run.storing import StoredMessage
from imapsync_decl.run.worker_wire import (
    MAX_FRAME,
    Batch,
    FrameError,
    FrameReader,
    MailboxJob,
    write_frame,
)
from imapsync_decl.store.blobs import TEMP_PREFIX, BlobStore
from imapsync_decl.store.message import MessageHeaders

from bed import Bed, placement_count, seed, sha, start_apply


def events(err: str, name: str) -> list[dict[str, object]]:
    found = []
    for line in err.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            record = json.loads(line)
            if record.get("event") == name:
                found.append(record)
    return found


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def mailbox_workers(pid: int) -> set[int]:
    """The mailbox workers among the children of ``pid`` (not the search indexer)."""
    found = set()
    for child in children(pid):
        try:
            if b"imapsync_decl.run.worker_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------------- frames


def test_frames_round_trip_and_refuse_what_is_not_a_frame() -> None:
    message = Batch(
        3,
        [StoredMessage(7, "a" * 64, 10, 12, None, ("\\Seen",), MessageHeaders(subject="s"))],
    )
    read_fd, write_fd = os.pipe()
    try:
        write_frame(write_fd, message)
        write_frame(write_fd, message)
        reader = FrameReader(read_fd)
        assert reader.read(1) == message
        assert reader.read(1) == message
        assert reader.read(0.01) is None  # nothing more yet
        os.write(write_fd, (MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(FrameError, match="larger than"):
            reader.read(1)
    finally:
        os.close(read_fd)
        os.close(write_fd)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, (100).to_bytes(4, "big") + b"cut short")
    os.close(write_fd)
    with pytest.raises(FrameError, match="inside a frame"):
        FrameReader(read_fd).read(1)
    os.close(read_fd)
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    with pytest.raises(EOFError):
        FrameReader(read_fd).read(1)
    os.close(read_fd)


# ---------------------------------------------------------------------- real Dovecot


@pytest.mark.dovecot
def test_mailboxes_are_archived_in_reused_worker_processes_byte_for_byte(bed: Bed) -> None:
    users = [bed.new_user("w") for _ in range(3)]
    for n, user in enumerate(users):
        seed(bed, user, "INBOX", 12 + n, size=3000)
        seed(bed, user, "Projekte", 5, tag="p")
    bed.master_profile("p", users)
    profile = bed.config_dir / "p.yaml"
    profile.write_text(profile.read_text() + "max_concurrent_jobs: 2\n")
    code, out, err = bed.run("apply", "--format", "json", "--batch-messages", "4")
    assert code == 0, err
    fetched = events(err, "mailbox_fetched")
    assert len(fetched) == 3
    pids = {record["worker_pid"] for record in fetched}
    assert os.getpid() not in pids  # not archived by apply's own process
    assert 1 <= len(pids) <= 2  # two jobs at once, the workers reused
    in_workers = bed.placements()
    assert len(in_workers) == 3 * 5 + 12 + 13 + 14
    by_key = {(u, f, uid): digest for u, f, _, uid, digest in in_workers}
    for user in users:  # the archived bytes are the server's
        for folder in ("INBOX", "Projekte"):
            for uid, body in bed.server_messages(user, folder).items():
                assert by_key[(user, folder, uid)] == sha(body)
    code, out, _ = bed.run("archive", "verify", "--format", "json")
    assert code == 0, out
    # The same run in threads of apply stores exactly the same.
    blobs_in_workers = sorted(p.name for p in (bed.archive / "blobs").rglob("*") if p.is_file())
    for path in list(bed.archive.rglob("*"))[::-1]:
        path.unlink() if not path.is_dir() else path.rmdir()
    bed.archive.rmdir()
    profile.write_text(profile.read_text() + "worker_processes: false\n")
    code, out, err = bed.run("apply", "--format", "json", "--batch-messages", "4")
    assert code == 0, err
    assert {record.get("worker_pid") for record in events(err, "mailbox_fetched")} == {None}
    assert bed.placements() == in_workers
    assert sorted(p.name for p in (bed.archive / "blobs").rglob("*") if p.is_file()) == (
        blobs_in_workers
    )


def wait_until(condition: object, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def four_mailboxes(bed: Bed) -> list[str]:
    users = [bed.new_user("k") for _ in range(4)]
    for user in users:
        seed(bed, user, "INBOX", 60, tag="w", size=6000)
    bed.master_profile("p", users)
    return users


@pytest.mark.dovecot
def test_kill_9_of_apply_leaves_no_worker_behind(bed: Bed, four_mailboxes: list[str]) -> None:
    process = start_apply(bed, "--batch-messages", "3")
    wait_until(lambda: placement_count(bed.archive) >= 20, "the first placements")
    started = mailbox_workers(process.pid)
    process.kill()
    process.wait()
    assert placement_count(bed.archive) < 240, "apply finished before the kill"
    assert started, "apply had no worker processes"
    # The workers notice that apply is gone and stop after the batch at hand.
    wait_until(lambda: not any(alive(pid) for pid in started), "the workers to stop", 30)
    code, result = bed.apply_json()
    assert code == 0, result
    rows = bed.placements()
    assert len(rows) == 240
    assert len({(r[0], r[1], r[2], r[3]) for r in rows}) == 240


@pytest.mark.dovecot
def test_a_worker_that_dies_fails_its_mailbox_only(
    bed: Bed, four_mailboxes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of one worker mid-job: its mailbox fails with a clear error, the others are
    archived, what it reported stays, and the next apply archives the rest once."""
    profile = bed.config_dir / "p.yaml"
    profile.write_text(profile.read_text() + "max_concurrent_jobs: 1\n")
    process = start_apply(bed, "--batch-messages", "3", "--format", "json")
    wait_until(lambda: placement_count(bed.archive) >= 10, "the first placements")
    (worker,) = mailbox_workers(process.pid)
    os.kill(worker, signal.SIGKILL)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err
    result = json.loads(out)
    failed = [m for m in result["mailboxes"] if m["error"]]
    assert len(failed) == 1
    assert "worker process of this mailbox ended" in failed[0]["error"]
    assert "killed by signal 9" in failed[0]["error"]
    assert sum(1 for m in result["mailboxes"] if not m["error"]) == 3
    assert "Traceback" not in err
    code, again = bed.apply_json()
    assert code == 0, again
    rows = bed.placements()
    assert len(rows) == 240
    assert len({(r[0], r[1], r[2], r[3]) for r in rows}) == 240


@pytest.mark.dovecot
def test_no_password_reaches_a_worker_s_command_line(bed: Bed, four_mailboxes: list[str]) -> None:
    process = start_apply(bed, "--batch-messages", "3")
    wait_until(lambda: placement_count(bed.archive) >= 10, "the first placements")
    lines = []
    for pid in mailbox_workers(process.pid):
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
    process.communicate(timeout=120)
    assert lines, "no worker seen"
    for line in lines:
        assert b"worker_main" in line
        assert bed.server.master_password.encode() not in line


def test_the_worker_command_is_this_interpreter() -> None:
    assert workers.worker_command()[0] == sys.executable


def test_a_worker_starts_without_the_console_library() -> None:
    """A worker ends at once on an empty stdin; its imports leave out rich, which only
    draws on a terminal, and asyncio, while the package's own modules are there."""
    import subprocess

    done = subprocess.run(
        [*workers.worker_command()[:1], "-X", "importtime", *workers.worker_command()[1:]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.decode().splitlines()}
    assert "imapsync_decl.run.mailbox_worker" in imported
    assert "structlog" in imported
    # (a blocked import attempt of "rich" itself is listed too, but none of its modules)
    assert not {name for name in imported if name.startswith("rich.")}
    assert not {name for name in imported if name.split(".")[0] == "asyncio"}


# ---------------------------------------------------------------------- the pipeline


def test_the_pipeline_reports_in_the_order_submitted_and_raises_failures() -> None:
    import threading

    from imapsync_decl.run.storing import Pipeline

    release = threading.Event()
    reported: list[int] = []

    def work(n: int) -> int:
        if n == 0:
            release.wait(5)  # the first item finishes last
        if n == 2:
            release.set()
        return n * 10

    with Pipeline(work, reported.append, lanes=3, depth=2) as pipeline:
        for n in range(6):
            pipeline.submit(n)
        pipeline.wait()
        assert reported == [0, 10, 20, 30, 40, 50]

    def failing(n: int) -> int:
        if n == 1:
            raise OSError(28, "No space left on device")
        return n

    later: list[int] = []
    with (  # noqa: PT012
        pytest.raises(OSError, match="No space"),
        Pipeline(failing, later.append, lanes=2) as pipeline,
    ):
        for n in range(20):
            pipeline.submit(n)
    assert later == [0]  # nothing after the failure is reported


def test_a_worker_waiting_on_a_silent_server_stops_when_apply_is_gone(tmp_path: Path) -> None:
    """The worker is blocked on the server, not on its pipes, so only its look at its
    parent (``_Stop``) tells it that apply died: it must not wait out the read timeout."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never greets
    port = silent.getsockname()[1]
    script = f"""
import sys, time
from pathlib import Path
from imapsync_decl.imap.settings import Endpoint
from imapsync_decl.run.worker_wire import MailboxJob
from imapsync_decl.run.workers import Worker

worker = Worker()
job = MailboxJob(
    endpoint=Endpoint("127.0.0.1", {port}, security="plain", timeout=600.0),
    mailbox="a@example.org", mechanism="sasl_plain", username="a@example.org", authzid=None,
    password="pw", archive=Path({str(tmp_path / "archive")!r}), stale_before=0.0,
    parallel_writes=False, folders=(), max_count=10, max_bytes=1 << 20, retries=0,
    backoff_seconds=0.0,
)
print(worker.process.pid, flush=True)
for _ in worker.run(job, lambda: False):  # sends the job, then waits for its events
    pass
time.sleep(600)
"""
    (tmp_path / "archive").mkdir()
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        connection, _ = silent.accept()  # the worker is connected and waits for a greeting
        parent.kill()
        parent.wait()
        try:
            wait_until(lambda: not alive(pid), "the worker to stop", 30)
        finally:
            connection.close()
    finally:
        parent.kill()
        silent.close()


def test_the_stores_of_one_run_share_the_moment_before_which_temporary_files_are_stale(
    tmp_path: Path,
) -> None:
    """apply's store and each worker's store begin at different moments. A worker's store
    takes the run's start, not its own, as the line between a killed run's temporary
    file (removed) and one that another store of this run is writing (kept)."""
    root = tmp_path / "archive"
    apply_store = BlobStore(root)  # at the start of the run
    blob = hashlib.sha256(b"the message\r\n").hexdigest()
    directory = apply_store.path(blob).parent
    directory.mkdir(parents=True)
    killed = directory / f"{TEMP_PREFIX}killed-1"
    in_flight = directory / f"{TEMP_PREFIX}writing-1"
    for path, moment in (
        (killed, apply_store.stale_before - 3600),
        (in_flight, apply_store.stale_before + 0.001),
    ):
        path.write_bytes(b"partial")
        os.utime(path, (moment, moment))
    time.sleep(0.01)  # a worker starting later: its own start is after in_flight's

    # The worker's store, as a worker makes it from its job.
    job = MailboxJob(
        endpoint=Endpoint("127.0.0.1", _closed_port(), security="plain", timeout=5.0),
        mailbox="a@example.org",
        mechanism="sasl_plain",
        username="a@example.org",
        authzid=None,
        password="pw",
        archive=root,
        stale_before=apply_store.stale_before,
        parallel_writes=False,
        folders=(),
        max_count=10,
        max_bytes=1 << 20,
        retries=0,
        backoff_seconds=0.0,
    )
    read, write = os.pipe()
    try:
        worker = mailbox_worker.MailboxWorker(mailbox_worker._Channel(write), lambda: False)
        with pytest.raises(ImapError):
            worker._archive(job)  # nothing listens: the store is made, the login fails
        worker_store = worker._stores[root]
    finally:
        os.close(read)
        os.close(write)
    assert worker_store.stale_before == apply_store.stale_before
    worker_store.put(b"the message\r\n")  # its first write in that directory
    assert not killed.exists()
    assert in_flight.read_bytes() == b"partial"
    # A store that went by its own start would have taken the file being written.
    BlobStore(root).put(b"the message\r\n")
    assert not in_flight.exists()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])
