"""Prometheus metrics after real applies against the test Dovecot, read back with
prometheus_client's own parser: a success, a partial failure that keeps the last
success time, the Archive document's setting, the daemon, and the atomic write."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from imapsync_decl.config.resolve import load_config
from imapsync_decl.run.daemon import Daemon
from imapsync_decl.run.metrics import escape_label, write_metrics

from bed import Bed, seed
from helpers import write_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def read_metrics(path: Path) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels), and the TYPE of each family."""
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def of(samples: Samples, name: str, **labels: str) -> float:
    return samples[(f"imapsync_decl_{name}", tuple(sorted(labels.items())))]


README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def readme_section(title: str) -> str:
    return README.split(f"\n### {title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def readme_metric_names() -> set[str]:
    block = readme_section("Metrics").split("\n```\nimapsync_decl_", 1)[1].split("```", 1)[0]
    block = "imapsync_decl_" + block
    return {line.split("{")[0].split()[0] for line in block.splitlines() if line}


def test_the_readme_archive_example_validates(tmp_path: Path) -> None:
    example = readme_section("Metrics").split("```yaml\n", 1)[1].split("```", 1)[0]
    write_config(tmp_path, {"archive.yaml": example})
    config = load_config(tmp_path)
    assert config.ok, [str(p) for p in config.problems]
    assert config.metrics_file == Path("/var/lib/prometheus/node-exporter/imapsync-decl.prom")


@pytest.mark.dovecot
def test_apply_writes_the_metrics_of_a_run(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    seed(bed, user, "Projekte", 2)
    bed.master_profile("staff", [user])
    bed.master_profile("other", [bed.new_user()])
    metrics = bed.root / "node" / "imapsync.prom"
    metrics.parent.mkdir()
    old = os.umask(0o077)  # the service's UMask=0077 must not make it 0600
    try:
        code, result = bed.apply_json("--profile", "staff", "--metrics-file", str(metrics))
    finally:
        os.umask(old)
    assert code == 0
    samples, types = read_metrics(metrics)
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert [p.name for p in metrics.parent.iterdir()] == ["imapsync.prom"], "no temporary left"
    assert of(samples, "last_run_archived_messages", profile="staff") == 5
    sizes = sum(
        len(b) for f in ("INBOX", "Projekte") for b in bed.server_messages(user, f).values()
    )
    assert of(samples, "last_run_archived_bytes", profile="staff") == sizes
    assert result["profiles"]["staff"]["archived_bytes"] == sizes
    assert of(samples, "last_run_mailboxes", profile="staff", result="ok") == 1
    assert of(samples, "last_run_mailboxes", profile="staff", result="failed") == 0
    assert of(samples, "last_run_success", profile="staff") == 1
    start = of(samples, "last_run_start_timestamp_seconds", profile="staff")
    end = of(samples, "last_run_end_timestamp_seconds", profile="staff")
    assert end >= start > 1.7e9
    assert of(samples, "last_run_duration_seconds", profile="staff") == end - start
    assert of(samples, "last_success_timestamp_seconds", profile="staff") == end
    assert of(samples, "archive_messages") == 5
    assert of(samples, "archive_original_bytes") == sizes
    assert of(samples, "archive_stored_bytes") > 0
    assert of(samples, "last_run_deleted_messages", profile="staff") == 0
    # A profile that never ran has no run samples (no zero pretending a run).
    assert not any(dict(labels).get("profile") == "other" for _, labels in samples)
    assert types["imapsync_decl_last_success_timestamp_seconds"] == "gauge"
    text = metrics.read_text()
    assert "# HELP imapsync_decl_last_success_timestamp_seconds " in text
    assert {name for name, _ in samples} == readme_metric_names(), "the README shows them all"
    assert user not in text, "no label per mailbox"


@pytest.mark.dovecot
def test_a_partial_failure_keeps_the_last_success(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("staff", [user])
    metrics = bed.root / "imapsync.prom"
    assert bed.run("apply", "--metrics-file", str(metrics))[0] == 0
    first, _ = read_metrics(metrics)
    success = of(first, "last_success_timestamp_seconds", profile="staff")

    bed.master_profile("staff", [user, "ghost0"])  # not on the server: its login fails
    seed(bed, user, "INBOX", 1, tag="later")
    assert bed.run("apply", "--metrics-file", str(metrics))[0] == 3
    samples, _ = read_metrics(metrics)
    assert of(samples, "last_run_success", profile="staff") == 0
    assert of(samples, "last_run_mailboxes", profile="staff", result="failed") == 1
    assert of(samples, "last_run_mailboxes", profile="staff", result="ok") == 1
    assert of(samples, "last_run_archived_messages", profile="staff") == 1
    assert of(samples, "last_success_timestamp_seconds", profile="staff") == success
    assert of(samples, "last_run_start_timestamp_seconds", profile="staff") >= success


@pytest.mark.dovecot
def test_the_archive_documents_setting_and_the_daemon(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("nightly", [user], folders='schedule: "0 2 * * *"\n')
    write_config(
        bed.config_dir,
        {"archive.yaml": "kind: Archive\npath: ../archive\nmetrics_file: ../metrics/a.prom\n"},
    )
    (bed.root / "metrics").mkdir()
    now = [1_900_000_000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    daemon = Daemon(bed.config_dir, clock=lambda: now[0], sleep=sleep, reload_every=86400)
    assert daemon.run(once=True) == 0
    samples, _ = read_metrics(bed.root / "metrics" / "a.prom")
    assert of(samples, "last_run_archived_messages", profile="nightly") == 2
    assert of(samples, "last_run_success", profile="nightly") == 1

    # The command line wins over the document.
    given = bed.root / "given.prom"
    assert bed.run("apply", "--metrics-file", str(given))[0] == 0
    assert of(read_metrics(given)[0], "last_run_archived_messages", profile="nightly") == 0


def test_the_write_replaces_a_symbolic_link_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    link = tmp_path / "m.prom"
    link.symlink_to(victim)
    write_metrics(link, "imapsync_decl_archive_messages 1\n")
    assert victim.read_text() == "keep"
    assert not link.is_symlink()
    assert link.read_text() == "imapsync_decl_archive_messages 1\n"


def test_label_values_are_escaped() -> None:
    text = f'm{{profile="{escape_label(chr(34) + "a" + chr(92) + chr(10))}"}} 1\n'
    [family] = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"profile": '"a\\\n'}
