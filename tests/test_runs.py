"""imapsync-decl runs: the protocols of past applies, listed and shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.store import Archive

from bed import Bed, seed

WRONG = "wrong-password-123"


@pytest.mark.dovecot
def test_runs_lists_and_shows_the_protocols(bed: Bed) -> None:
    good, bad = bed.new_user("g"), bed.new_user("b")
    seed(bed, good, "INBOX", 2)
    seed(bed, good, "Projekte/Übersicht", 1)
    seed(bed, bad, "INBOX", 2)
    bed.master_profile("staff", [good])
    code, first = bed.apply_json()
    assert code == 0, first
    bed.csv_profile("c", [(bad, WRONG)])
    seed(bed, good, "INBOX", 1, tag="late")
    code, second = bed.apply_json()
    assert code == 3, second

    # The list: newest first, with totals.
    code, out, err = bed.run("runs", "--format", "json")
    assert code == 0, err
    listed = json.loads(out)
    assert [r["id"] for r in listed] == [second["run_id"], first["run_id"]]
    assert [r["status"] for r in listed] == ["partial", "ok"]
    assert listed[0]["totals"]["failed_mailboxes"] == 1
    assert listed[0]["totals"]["archived"] == 1
    assert listed[1]["totals"] == first["totals"]
    assert all(r["command"] == "apply" and r["finished_at"] for r in listed)

    code, out, _ = bed.run("runs")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["RUN", "ID", "COMMAND", "STARTED", "FINISHED"]
    assert lines[1].startswith(second["run_id"])
    assert lines[2].startswith(first["run_id"])
    assert lines[1].split()[4:] == ["partial", "1", "0", "1"]
    assert lines[2].split()[4:] == ["ok", "3", "0", "0"]
    assert lines[-1] == "2 runs"

    # --last: the whole protocol of the second run, as stored.
    code, out, _ = bed.run("runs", "--last", "--format", "json")
    assert code == 0
    protocol = json.loads(out)
    assert protocol == json.loads(json.dumps(second))
    (failed,) = [m for m in protocol["mailboxes"] if m["error"]]
    assert failed["login"] == bad
    assert bad in failed["error"]

    code, out, _ = bed.run("runs", "--last")
    assert code == 0
    assert out.startswith(f"Run {second['run_id']} (apply): partial\n")
    assert f"login {bad})" in out
    assert f"    ! error: {failed['error']}" in out
    assert "Total: 2 mailboxes (1 failed), archived 1, already present 0, vanished 0." in out

    # A RUN_ID (or a unique prefix of one): the first run.
    code, out, _ = bed.run("runs", first["run_id"], "--format", "json")
    assert code == 0
    assert json.loads(out) == json.loads(json.dumps(first))
    code, out, _ = bed.run("runs", first["run_id"][:13])
    assert code == 0
    assert out.startswith(f"Run {first['run_id']} (apply): ok\n")
    assert f"  started   {first['started_at']}" in out
    assert f"  finished  {first['finished_at']}" in out
    assert "INBOX" in out
    assert "Projekte/Übersicht" in out
    assert "archived 2, already present 0, vanished 0" in out
    # The second run found the nested folder up to date: skipped.
    code, out, _ = bed.run("runs", second["run_id"])
    assert code == 0
    assert any("Projekte/Übersicht" in line and "skipped" in line for line in out.splitlines())

    # An unknown run id: exit 10 with a clear message.
    code, out, err = bed.run("runs", "no-such-run")
    assert code == 10
    assert out == ""
    assert "no run with id 'no-such-run'" in err
    code, _, err = bed.run("runs", "--last", first["run_id"])
    assert code == 10
    assert "either --last or a RUN_ID" in err

    # Passwords never appear (the bed checks every output for them, too).
    for output in bed.outputs:
        assert WRONG not in output


def test_runs_without_an_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "archive"
    assert main(["runs", "--archive", str(missing)]) == 0
    assert capsys.readouterr().out == f"no runs yet (no archive at {missing})\n"
    assert main(["runs", "--archive", str(missing), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["runs", "--archive", str(missing), "--last"]) == 10
    assert "no runs" in capsys.readouterr().err
    assert not missing.exists(), "runs must not create the archive"


def test_unfinished_runs_and_ambiguous_prefixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "archive"
    with Archive.open(root) as archive:
        archive.index.begin_run("abc-1", "apply")
        archive.index.begin_run("abc-2", "apply")
        archive.index.finish_run("abc-2", "ok", {"run_id": "abc-2", "status": "ok"})
    assert main(["runs", "--archive", str(root), "--last"]) == 0
    assert capsys.readouterr().out.startswith("Run abc-2 (apply): ok\n")

    assert main(["runs", "--archive", str(root), "abc"]) == 10
    assert "ambiguous" in capsys.readouterr().err

    assert main(["runs", "--archive", str(root), "abc-1", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_id"] == "abc-1"
    assert doc["status"] == "running"
    assert doc["finished_at"] is None
    assert main(["runs", "--archive", str(root), "abc-1"]) == 0
    assert "finished  - (not finished" in capsys.readouterr().out

    assert main(["runs", "--archive", str(root)]) == 0
    out = capsys.readouterr().out
    assert "running" in out
    assert out.splitlines()[-1] == "2 runs"
