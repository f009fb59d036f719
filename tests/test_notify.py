"""Health pings against HTTP servers the tests run on 127.0.0.1: start and success,
failure, a server that hangs and one that is down (neither fails the run), and URLs
that never reach the logs."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.config.resolve import load_config
from imapsync_decl.run import notify
from imapsync_decl.secrets import Secret

from bed import Bed, seed
from helpers import write_config


class Recorder(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, str, str]] = []  # method, path, body
        self.authorization: list[str | None] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        self.server.requests.append(("POST", self.path, body))
        self.server.authorization.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short timeouts and backoff, so a hanging server costs the test little."""
    monkeypatch.setattr(notify, "TIMEOUT", 0.3)
    monkeypatch.setattr(notify, "BACKOFF", 0.01)
    monkeypatch.setattr(notify, "BUDGET", 2.0)


def profile_with(bed: Bed, users: list[str], *urls: str) -> None:
    lines = "".join(f"  - {u}\n" for u in urls)
    bed.master_profile("staff", users, folders="notify:\n" + lines)


@pytest.mark.dovecot
def test_start_then_success_with_the_summary(
    bed: Bed, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    # Kept as a secret, a URL may hold credentials: sent as Basic authentication.
    with_credentials = recorder.base.replace("http://", "http://hc:p%40ss-w0rd@")
    monkeypatch.setenv("HC_SECRET_URL", f"{with_credentials}/secret-uuid-1234")
    profile_with(bed, [user], f"{recorder.base}/ping/abc", "{env: HC_SECRET_URL}")
    code, _, err = bed.run("apply")
    assert code == 0
    paths = [path for _, path, _ in recorder.requests]
    assert paths == ["/ping/abc/start", "/secret-uuid-1234/start", "/ping/abc", "/secret-uuid-1234"]
    basic = "Basic " + base64.b64encode(b"hc:p@ss-w0rd").decode()
    assert recorder.authorization == [None, basic, None, basic]
    body = recorder.requests[2][2]
    assert "profile staff: ok (exit code 0)" in body
    assert "archived 2 messages" in body
    assert "mailboxes: 1 ok, 0 failed" in body
    assert bed.server.master_password not in body
    assert "secret-uuid" not in err
    assert "w0rd" not in err
    assert "/ping/abc" not in err


@pytest.mark.dovecot
def test_a_failed_run_pings_fail(bed: Bed, recorder: Recorder) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    profile_with(bed, [user, "ghost1"], f"{recorder.base}/p")
    assert bed.run("apply")[0] == 3
    assert [path for _, path, _ in recorder.requests] == ["/p/start", "/p/fail"]
    assert "mailboxes: 1 ok, 1 failed" in recorder.requests[1][2]


@pytest.mark.dovecot
def test_a_refused_run_pings_fail(bed: Bed, recorder: Recorder) -> None:
    user = bed.new_user()
    profile_with(bed, [user], f"{recorder.base}/p")
    plan_file = bed.root / "plan.json"
    assert bed.run("plan", "--out", str(plan_file))[0] == 0
    assert bed.run("apply")[0] == 0
    assert bed.run("apply", str(plan_file))[0] == 11, "applied already: stale"
    assert [path for _, path, _ in recorder.requests][-2:] == ["/p/start", "/p/fail"]
    assert "run `plan` again" in recorder.requests[-1][2]


def hanging_server() -> socket.socket:
    """Accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.dovecot
@pytest.mark.usefixtures("quick")
def test_a_hanging_or_down_server_never_fails_the_run(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    with hanging_server() as listener:
        hang = f"http://127.0.0.1:{listener.getsockname()[1]}/hang-path"
        down = f"http://127.0.0.1:{free_port()}/down-path"
        profile_with(bed, [user], hang, down)
        code, out, err = bed.run("apply", "--format", "json")
    assert code == 0
    assert '"status": "ok"' in out
    assert err.count("notify_failed") == 4, "start and success, for both"
    assert "hang-path" not in err
    assert "down-path" not in err
    assert "http://127.0.0.1/…" in err


def test_event_urls() -> None:
    assert notify.event_url("https://hc-ping.com/abc", "start") == "https://hc-ping.com/abc/start"
    assert notify.event_url("https://hc-ping.com/abc/", "fail") == "https://hc-ping.com/abc/fail"
    assert notify.event_url("https://h/x?rid=1", "start") == "https://h/x/start?rid=1"
    assert notify.event_url("https://h/x", "success") == "https://h/x"
    assert notify.shown_url("https://hc-ping.com/uuid?k=v") == "https://hc-ping.com/…"


def test_retries_with_backoff_then_gives_up(quick: None) -> None:
    slept: list[float] = []
    target = notify.Target(Secret(f"http://127.0.0.1:{free_port()}/x"), "http://127.0.0.1/…")
    assert notify.ping(target, "start", "b", profile="p", sleep=slept.append) is False
    assert slept == [0.01, 0.02], "three attempts, the backoff doubling"


def test_a_4xx_answer_is_not_retried(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Handler) -> None:
        self.server.requests.append(("POST", self.path, ""))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    monkeypatch.setattr(Handler, "do_POST", refuse)
    target = notify.Target(Secret(f"{recorder.base}/gone"), "x")
    assert notify.ping(target, "success", "b", profile="p", sleep=lambda s: None) is False
    assert len(recorder.requests) == 1


def test_the_readme_example_validates_and_bad_urls_do_not(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Health pings\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    write_config(tmp_path / "good", {"p.yaml": example})
    config = load_config(tmp_path / "good")
    assert config.ok, [str(p) for p in config.problems]
    bad = example.replace("https://hc-ping.com/", "https://user:secret@hc-ping.com/")
    bad = bad.replace("{env: STAFF_PING_URL}", "file:///etc/passwd")
    write_config(tmp_path / "bad", {"p.yaml": bad})
    problems = [str(p) for p in load_config(tmp_path / "bad").errors]
    assert any(
        "p.yaml:7:5: notify[0]: must not hold a user name or password" in p for p in problems
    )
    assert any("p.yaml:8:5: notify[1]: must start with http:// or https://" in p for p in problems)
    assert not any("secret@" in p for p in problems), "no credentials in the message"


def test_validate_checks_urls_kept_as_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("\n### Health pings\n", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    write_config(tmp_path, {"p.yaml": example})
    monkeypatch.setenv("IMAP_MASTER_PASSWORD", "x")
    monkeypatch.delenv("STAFF_PING_URL", raising=False)
    assert main(["validate", "--config-dir", str(tmp_path)]) == 0
    assert "p.yaml:8:5: warning: notify[1]: environment variable STAFF_PING_URL is not set" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("STAFF_PING_URL", "ftp://user:hunter2@example.test/x")
    assert main(["validate", "--config-dir", str(tmp_path)]) == 10
    err = capsys.readouterr().err
    assert (
        "p.yaml:8:5: notify[1]: the URL in environment variable STAFF_PING_URL must start with"
        " http:// or https://" in err
    )
    assert "hunter2" not in err
    monkeypatch.setenv("STAFF_PING_URL", "https://hc-ping.com/abc")
    assert main(["validate", "--config-dir", str(tmp_path)]) == 0
