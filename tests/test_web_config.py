"""The Web document: its rules at file:line:col, and the settings it resolves to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.config.resolve import load_config
from imapsync_decl.config.schema import kind_schema
from imapsync_decl.config.web import DEFAULT_WEB, WebSettings, parse_duration, parse_listen
from imapsync_decl.errors import ExitCode

from helpers import USERS, write_config

ROOT = Path(__file__).resolve().parent.parent


def validate(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, list[str]]:
    code = main(["validate", "--config-dir", str(config)])
    _, err = capsys.readouterr()
    return code, [line.removeprefix(f"{config}/") for line in err.splitlines()]


def tls_files(directory: Path, key_mode: int = 0o600) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (directory / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (directory / "key.pem").chmod(key_mode)


def test_without_a_web_document_the_defaults_hold(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c", {"users.yaml": USERS}))
    assert config.ok
    assert config.web_document is None
    assert config.web == DEFAULT_WEB
    assert config.web == WebSettings(
        host="127.0.0.1",
        port=8462,
        certificate=None,
        key=None,
        behind_proxy=False,
        trusted_proxies=(),
        session_lifetime_seconds=8 * 3600,
        administrators=frozenset(),
        directory_sign_in=False,
    )
    assert config.web.listen == "127.0.0.1:8462"


def test_a_configuration_of_only_a_web_document_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "profiles.d", {"web.yaml": "kind: Web\n"})
    code = main(["validate", "--config-dir", str(config), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == ExitCode.OK, err
    assert json.loads(out)["valid"] is True
    code = main(["validate", "--config-dir", str(config)])
    out, _ = capsys.readouterr()
    assert code == ExitCode.OK
    assert "1 document" in out


def test_every_field_resolves(tmp_path: Path) -> None:
    tls_files(tmp_path / "tls")
    config = load_config(
        write_config(
            tmp_path / "c",
            {
                "users.yaml": USERS,
                "web.yaml": """
                    kind: Web
                    listen: "[2001:db8::5]:443"
                    tls: {certificate: ../tls/cert.pem, key: ../tls/key.pem}
                    behind_proxy: true
                    trusted_proxies: [192.0.2.0/24, "2001:db8::1"]
                    session_lifetime: 30m
                    administrators: [alice, bob]
                """,
            },
        )
    )
    assert config.ok, [str(p) for p in config.problems]
    assert config.web_document is not None
    assert config.web == WebSettings(
        host="2001:db8::5",
        port=443,
        certificate=tmp_path / "tls" / "cert.pem",
        key=tmp_path / "tls" / "key.pem",
        behind_proxy=True,
        trusted_proxies=("192.0.2.0/24", "2001:db8::1"),
        session_lifetime_seconds=1800,
        administrators=frozenset({"alice", "bob"}),
        directory_sign_in=False,
    )
    assert config.web.listen == "[2001:db8::5]:443"
    assert config.web.tls


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("8h", 28800), ("7d", 604800)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8462") == ("127.0.0.1", 8462)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_listen("localhost:1") == ("localhost", 1)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "listen: 0.0.0.0:8462\n",
            "web.yaml:2:9: listen: plain HTTP is served only on a loopback address",
        ),
        (
            "listen: '[2001:db8::1]:80'\n",
            "web.yaml:2:9: listen: plain HTTP is served only on a loopback address",
        ),
        ("listen: 127.0.0.1\n", "web.yaml:2:9: listen: expected HOST:PORT"),
        ("listen: '127.0.0.1:0'\n", "web.yaml:2:9: listen: expected HOST:PORT"),
        (
            "behind_proxy: true\n",
            "web.yaml:1:1: trusted_proxies: behind_proxy: true needs the addresses of the proxies",
        ),
        (
            "trusted_proxies: [10.0.0.1]\n",
            "web.yaml:2:18: trusted_proxies: only used with behind_proxy: true",
        ),
        (
            "behind_proxy: true\ntrusted_proxies: [10.0.0.300]\n",
            "web.yaml:3:19: trusted_proxies[0]: not an IP address or network",
        ),
        (
            "behind_proxy: true\ntrusted_proxies: [10.1.2.3/8]\n",
            "web.yaml:3:19: trusted_proxies[0]: host bits set in 10.1.2.3/8; the network is"
            " 10.0.0.0/8",
        ),
        ("session_lifetime: 8 hours\n", "web.yaml:2:19: session_lifetime: a duration is"),
        (
            "session_lifetime: 4m\n",
            "web.yaml:2:19: session_lifetime: a session lasts at least 5m and at most 30d",
        ),
        (
            "session_lifetime: 31d\n",
            "web.yaml:2:19: session_lifetime: a session lasts at least 5m and at most 30d",
        ),
        (
            "directory_sign_in: true\n",
            "web.yaml:2:20: directory_sign_in: no Users document has a directory to sign in with",
        ),
        (
            "admins: [alice]\n",
            "web.yaml:2:1: admins: unknown field; did you mean 'administrators'?",
        ),
        (
            "tls: {certificate: missing.pem, key: key.pem}\n",
            "web.yaml:2:20: tls.certificate: file not found:",
        ),
    ],
)
def test_rules_at_their_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, expected: str
) -> None:
    config = write_config(tmp_path / "profiles.d", {"web.yaml": "kind: Web\n" + body})
    tls_files(config)
    code, lines = validate(capsys, config)
    assert code == ExitCode.CONFIG
    assert any(line.startswith(expected) for line in lines), lines


def test_a_key_others_can_read_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "profiles.d",
        {
            "web.yaml": "kind: Web\nlisten: 0.0.0.0:443\ntls: {certificate: cert.pem, key: key.pem}\n"
        },
    )
    tls_files(config, key_mode=0o644)
    code, lines = validate(capsys, config)
    assert code == ExitCode.CONFIG
    assert any(
        line.startswith("web.yaml:3:35: tls.key: the private key") and "readable by others" in line
        for line in lines
    ), lines
    (config / "key.pem").chmod(0o640)  # a group such as ssl-cert may read it
    code, lines = validate(capsys, config)
    assert code == ExitCode.OK, lines


def test_only_one_web_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path / "profiles.d", {"a.yaml": "kind: Web\n", "b.yaml": "kind: Web\n"}
    )
    code, lines = validate(capsys, config)
    assert code == ExitCode.CONFIG
    assert any(
        line.startswith("b.yaml:1:7: kind: only one Web document is allowed") for line in lines
    ), lines


def test_administrators_that_are_no_users_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "profiles.d",
        {"users.yaml": USERS, "web.yaml": "kind: Web\nadministrators: [alice, zed]\n"},
    )
    code, lines = validate(capsys, config)
    assert code == ExitCode.OK
    assert [line for line in lines if "administrators" in line] == [
        "web.yaml:2:25: warning: administrators[1]: 'zed' is not a user of the archive's"
        " user list (yet): it cannot sign in until it is"
    ]


def test_directory_sign_in_with_a_directory(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path / "c",
            {
                "dir.yaml": """
                    kind: Users
                    directory: {url: "ldaps://dir.example.test", base_dn: "dc=example"}
                """,
                "web.yaml": "kind: Web\ndirectory_sign_in: true\n",
            },
        )
    )
    assert config.ok, [str(p) for p in config.problems]
    assert config.web.directory_sign_in


def test_schema_of_the_web_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--kind", "web"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == kind_schema("web")
    assert json.loads((ROOT / "schemas" / "web.schema.json").read_text()) == kind_schema("web")
    assert main(["schema"]) == 0
    assert '"Web"' in capsys.readouterr().out


def test_the_example_web_document_validates(tmp_path: Path) -> None:
    config_dir = tmp_path / "profiles.d"
    config_dir.mkdir()
    (config_dir / "web.yaml").write_bytes((ROOT / "examples" / "web.yaml").read_bytes())
    config = load_config(config_dir)
    assert config.ok, [str(p) for p in config.problems]
    assert config.warnings == ()
    assert config.web_document is not None
    assert config.web == DEFAULT_WEB


def test_the_readme_web_examples_validate(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The Web document", 1)[1].split("### ", 1)[0]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    for n, doc in enumerate(example.split("---\n")):
        config_dir = tmp_path / str(n)
        config_dir.mkdir()
        (config_dir / "web.yaml").write_text(doc)
        (config_dir / "users.yaml").write_text(
            "kind: Users\nusers: [{name: alice}]\n"
            "directory: {url: 'ldaps://dir.example.test', base_dn: 'dc=example'}\n"
        )
        config = load_config(config_dir)
        problems = [str(p) for p in config.problems if p.is_error]
        assert config.web_document is not None
        if config.web_document.doc.tls is not None:  # files of the server, not of this test
            assert problems
            assert all("tls." in p and "file not found" in p for p in problems), problems
        else:
            assert problems == []
