"""The search index fed by `apply`, caught up after a crash, rebuilt by `rebuild-search`.

Against the test Dovecot: what apply archives is found in the same run; messages
left unindexed (a crash between the index commit and the search document, an
archive from before the search index) are indexed by the next apply; a damaged
``search.sqlite`` never stops archiving, and ``rebuild-search --force`` repairs
it; ``rebuild-search`` gives exactly the results indexing during apply gave.
"""

from __future__ import annotations

import email.policy
import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from test_resilience import MESSAGES, big_bed, wait_for_placements

from imapsync_decl.run import indexing, search_documents
from imapsync_decl.store import ArchiveLock
from imapsync_decl.store.search.database import SearchIndex

from bed import Bed, placement_count, seed, start_apply
from servers.dovecot import make_message

pytestmark = pytest.mark.dovecot
__all__ = ["big_bed"]  # the fixture, used by name

MAIL = Path(__file__).parent / "fixtures" / "mail"
QUERIES = [
    ["smaller:1G", "--limit", "10000"],
    ["Müller"],
    ["from:carol@example.com"],
    ["has:attachment", "--sort", "date"],
    ["after:2024-10-10", "before:2024-10-20", "--sort", "-date"],
    ["会議", "OR", "Москвы"],
    ["m*", "--limit", "10000"],
]


def search(bed: Bed, *args: str) -> list[dict[str, Any]]:
    code, out, err = bed.run("archive", "search", "--format", "json", *args)
    assert code == 0, err
    hits = json.loads(out)
    assert isinstance(hits, list)
    return hits


def stats(bed: Bed) -> dict[str, Any]:
    code, out, _ = bed.run("archive", "stats", "--format", "json")
    assert code == 0
    search_counts = json.loads(out)["search"]
    assert isinstance(search_counts, dict)
    return search_counts


def all_results(bed: Bed) -> list[list[dict[str, Any]]]:
    return [search(bed, *query) for query in QUERIES]


def fixture_archive(bed: Bed) -> str:
    user = bed.new_user("s")
    for path in sorted(MAIL.glob("*.eml")):
        bed.server.append(user, "INBOX", path.read_bytes())
    bed.server.create_folder(user, "Archiv")
    bed.server.append(user, "Archiv", (MAIL / "nested.eml").read_bytes())
    seed(bed, user, "Archiv", 5, tag="m")
    bed.master_profile("p", [user])
    return user


def caught_up(log: str) -> list[int]:
    """The counts of the ``search_indexed`` events (the catch-up at the end of apply)."""
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [int(e["count"]) for e in events if e.get("event") == "search_indexed"]


def forget_documents(bed: Bed, count: int) -> None:
    """What a crash between the index commit and the search document leaves."""
    with SearchIndex.open(bed.archive) as search:
        query = "SELECT sha256 FROM search.docs ORDER BY id DESC LIMIT ?"
        shas = [str(r[0]) for r in search.connection.execute(query, (count,))]
        assert search.forget(shas) == count


def test_apply_indexes_what_it_archives_in_the_same_run(bed: Bed) -> None:
    fixture_archive(bed)
    code, out, err = bed.run("--log-format", "json", "apply", "--format", "json")
    result = json.loads(out)
    assert code == 0, result
    # indexed by the run's search indexer, which reports once, at the end
    assert caught_up(err) == [26]
    assert result["totals"]["archived"] == 26  # 21 fixtures and 5 made, nested.eml twice
    assert result["search"]["indexed"] == 26
    assert result["search"]["error"] is None
    assert result["search"]["seconds"] >= 0
    counts = stats(bed)
    assert (counts["indexed"], counts["unindexed"], counts["error"]) == (26, 0, None)
    assert isinstance(counts["headers_only"], int)
    assert len(search(bed, "smaller:1G", "--limit", "10000")) == 27  # one per placement
    # the protocol of the run keeps it too
    code, out, _ = bed.run("runs", "--last", "--format", "json")
    assert json.loads(out)["search"]["indexed"] == 26
    # nothing new: nothing indexed, the key is there
    code, again = bed.apply_json()
    assert (code, again["search"]["indexed"]) == (0, 0)


def test_search_during_apply_off_leaves_indexing_to_rebuild_search(bed: Bed) -> None:
    fixture_archive(bed)
    (bed.config_dir / "archive.yaml").write_text(
        "kind: Archive\npath: ../archive\nsearch_during_apply: false\n", encoding="utf-8"
    )
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["totals"]["archived"] == 26
    assert (result["search"]["enabled"], result["search"]["indexed"]) == (False, 0)
    code, out, _ = bed.run("archive", "stats", "--format", "json")
    assert json.loads(out)["search"] is None  # no search index made
    code, out, err = bed.run("archive", "rebuild-search", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["indexed"] == 26
    assert len(search(bed, "smaller:1G", "--limit", "10000")) == 27


def test_the_next_apply_catches_up_what_is_not_indexed(bed: Bed) -> None:
    fixture_archive(bed)
    assert bed.apply_json()[0] == 0
    forget_documents(bed, 4)
    assert stats(bed)["unindexed"] == 4
    code, out, err = bed.run("--log-format", "json", "apply", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["search"]["indexed"] == 4
    assert caught_up(err) == [4]
    assert stats(bed)["unindexed"] == 0


def test_rebuild_search_gives_the_results_of_indexing_during_apply(bed: Bed) -> None:
    fixture_archive(bed)
    assert bed.apply_json()[0] == 0
    during_apply = all_results(bed)
    assert all(during_apply), "every query finds something"
    (bed.archive / "search.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (bed.archive / f"search.sqlite{suffix}").unlink(missing_ok=True)
    code, out, err = bed.run("archive", "rebuild-search", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["indexed_now"] == 26
    assert (report["indexed"], report["unindexed"], report["skipped"]) == (26, 0, [])
    assert all_results(bed) == during_apply
    assert (bed.archive / "search.sqlite").stat().st_mode & 0o777 == 0o600


def test_rebuild_search_is_resumable_and_force_starts_over(bed: Bed) -> None:
    fixture_archive(bed)
    assert bed.apply_json()[0] == 0
    forget_documents(bed, 10)
    code, out, err = bed.run("archive", "rebuild-search", "--progress")
    assert code == 0
    assert "10/10" in err  # the bar, on stderr
    assert out.startswith("indexed 10 messages; the search index holds 26 messages")
    code, out, _ = bed.run("archive", "rebuild-search", "--format", "json")
    assert json.loads(out)["indexed_now"] == 0
    code, out, _ = bed.run("archive", "rebuild-search", "--force", "--format", "json")
    assert json.loads(out)["indexed_now"] == 26


def test_rebuild_search_skips_and_counts_damaged_blobs_and_respects_the_lock(bed: Bed) -> None:
    fixture_archive(bed)
    assert bed.apply_json()[0] == 0
    (hit,) = search(bed, "from:carol@example.com", "--folder", "INBOX")
    blob = next((bed.archive / "blobs").rglob(f"{hit['sha256']}*"))
    blob.unlink()
    code, out, err = bed.run("archive", "rebuild-search", "--force")
    assert code == 12
    assert f"not indexed: damaged or missing blob {hit['sha256']}" in err
    assert "indexed 25 messages" in out
    assert out.rstrip().endswith("1 not indexed")
    with ArchiveLock(bed.archive, "test"):
        code, _, err = bed.run("archive", "rebuild-search")
    assert code == 13, err


def test_a_damaged_search_index_never_stops_archiving(bed: Bed) -> None:
    user = fixture_archive(bed)
    assert bed.apply_json()[0] == 0
    (bed.archive / "search.sqlite").write_bytes(b"\x13garbage, not SQLite " * 500)
    for suffix in ("-wal", "-shm"):
        (bed.archive / f"search.sqlite{suffix}").unlink(missing_ok=True)
    bed.server.append(user, "INBOX", make_message("after the damage", "latecomer\n"))
    code, out, err = bed.run("apply", "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    assert result["totals"]["archived"] == 1
    assert result["search"]["indexed"] == 0
    assert result["search"]["error"]
    assert "search_index_failed" in err
    assert len(bed.placements()) == 28
    code, out, _ = bed.run("apply")
    assert code == 0
    assert "! search index: " in out
    code, _, err = bed.run("archive", "search", "latecomer")
    assert code == 12
    assert "rebuild-search --force" in err
    code, out, _ = bed.run("archive", "stats")
    assert "search       damaged" in out
    assert bed.run("archive", "rebuild-search")[0] == 12
    code, out, err = bed.run("archive", "rebuild-search", "--force", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["indexed"] == 27
    assert [h["subject"] for h in search(bed, "latecomer")] == ["after the damage"]


def test_kill_9_during_apply_then_apply_every_archived_message_is_found(
    big_bed: tuple[Bed, list[str]],
) -> None:
    bed, users = big_bed
    process = start_apply(bed, "--batch-messages", "3")
    reached = wait_for_placements(bed, process, 60)
    process.kill()
    process.wait()
    assert reached < MESSAGES, "apply finished before the kill; the test proves nothing"
    code, result = bed.apply_json()
    assert code == 0, result
    assert placement_count(bed.archive) == MESSAGES
    hits = search(bed, "crash*", "--limit", "10000")
    assert len(hits) == MESSAGES
    assert {(h["user"], h["subject"]) for h in hits} == {
        (user, f"crash {i} {user}") for user in users for i in range(MESSAGES // len(users))
    }
    assert stats(bed)["unindexed"] == 0


def large_message(name: str, word: str) -> bytes:
    """A message of about 400 KB: a line of text and a PDF attachment named ``name``."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Carol Auditor <carol@example.com>"
    message["To"] = "Bob <bob@example.com>"
    message["Subject"] = "Der Abschluss"
    message["Date"] = "Tue, 15 Oct 2024 10:00:00 +0000"
    message["Message-ID"] = f"<{word}@example.com>"
    message.set_content(f"Anbei der {word}.\n")
    attachment = bytes(range(256)) * 1200  # 300 KB, 400 KB in base64
    message.add_attachment(attachment, maintype="application", subtype="pdf", filename=name)
    raw = message.as_bytes()
    assert len(raw) >= search_documents.MIN_BYTES
    return raw


def large_archive(bed: Bed, *, worker_processes: bool = True) -> str:
    user = bed.new_user("lg")
    bed.server.append(user, "INBOX", large_message("bilanz-2024.pdf", "Jahresabschlussbericht"))
    seed(bed, user, "INBOX", 2, tag="small")
    bed.master_profile("p", [user])
    if not worker_processes:
        profile = bed.config_dir / "p.yaml"
        profile.write_text(profile.read_text() + "worker_processes: false\n")
    return user


LARGE_QUERIES = [["attachment:bilanz-2024.pdf"], ["Jahresabschlussbericht"], ["small"]]


@pytest.mark.parametrize("worker_processes", [True, False], ids=["workers", "threads"])
def test_a_large_message_is_indexed_from_the_document_its_worker_made(
    bed: Bed, worker_processes: bool
) -> None:
    """The worker that fetched a large message makes its search document; archived in
    apply's threads, it is read back from its blob at the end. Both find the same."""
    large_archive(bed, worker_processes=worker_processes)
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["search"]["indexed"] == 3
    assert result["search"]["documents"] == (1 if worker_processes else 0)
    assert result["search"]["dropped_batches"] == 0
    hits = [search(bed, *query) for query in LARGE_QUERIES]
    assert [len(h) for h in hits] == [1, 1, 2]
    assert hits[0][0]["attachments"] == ["bilanz-2024.pdf"]
    assert hits[0][0]["size"] >= search_documents.MIN_BYTES
    assert hits[1][0]["id"] == hits[0][0]["id"]
    assert hits[0][0]["from"] == "Carol Auditor <carol@example.com>"
    # the same as the indexer makes from the blob
    code, _out, err = bed.run("archive", "rebuild-search", "--force", "--format", "json")
    assert code == 0, err
    assert [search(bed, *query) for query in LARGE_QUERIES] == hits


def test_documents_the_indexer_is_too_far_behind_for_are_read_from_their_blobs(
    bed: Bed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexing, "MAX_QUEUED", 0)  # every document is one too many
    large_archive(bed)
    code, result = bed.apply_json()
    assert code == 0, result
    assert result["search"]["dropped_batches"] >= 1
    assert (result["search"]["documents"], result["search"]["indexed"]) == (0, 3)
    assert len(search(bed, "attachment:bilanz-2024.pdf")) == 1
    assert stats(bed)["unindexed"] == 0
