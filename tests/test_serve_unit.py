"""`schedule export --systemd` with a Web document: the hardened unit that runs `serve`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imapsync_decl.cli.main import main
from imapsync_decl.config.cron import serve_unit

from helpers import write_config

PROFILE = """
    kind: Profile
    name: nightly
    server: {host: imap.example.com}
    source: {single: {username: u, password: {credential: imap-u}}}
    schedule: "0 2 * * *"
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def units_of(out: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in out.split("# --- ")[1:]:
        name, _, text = chunk.partition("\n")
        found[name] = text.rstrip("\n") + "\n"
    return found


def verify(tmp_path: Path, units: dict[str, str]) -> None:
    """systemd's own check of the units, where systemd is installed."""
    if shutil.which("systemd-analyze") is None:
        return
    target = tmp_path / "units"
    target.mkdir()
    for name, text in units.items():
        (target / name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *(str(target / name) for name in units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_only_a_web_document_is_enough(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path / "profiles.d",
        {"web.yaml": "kind: Web\n", "archive.yaml": f"kind: Archive\npath: {tmp_path / 'a'}\n"},
    )
    code, out, err = run(capsys, "schedule", "export", "--systemd", "--config-dir", str(config_dir))
    assert code == 0, err
    units = units_of(out)
    assert list(units) == ["imapsync-decl-serve.service"]
    service = units["imapsync-decl-serve.service"]
    exe = str(Path(sys.executable).parent / "imapsync-decl")
    assert f"\nExecStart={exe} serve --config-dir {config_dir}\n" in service
    assert f"\nWorkingDirectory={tmp_path}\n" in service
    for line in (
        "Type=simple",
        "Restart=on-failure",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={tmp_path / 'a'}",
        "CapabilityBoundingSet=",
        "WantedBy=multi-user.target",
    ):
        assert f"\n{line}\n" in service, line
    assert "AmbientCapabilities" not in service
    verify(tmp_path, units)
    # cron cannot keep a server running: without a schedule there is nothing for it.
    code, out, err = run(capsys, "schedule", "export", "--cron", "--config-dir", str(config_dir))
    assert (code, out) == (10, "")
    assert "no profile has a schedule" in err


def test_beside_the_scheduled_profiles(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "cert.pem").write_text("cert\n")
    (tls / "key.pem").write_text("key\n")
    (tls / "key.pem").chmod(0o600)
    config_dir = write_config(
        tmp_path / "profiles.d",
        {
            "p.yaml": PROFILE,
            "web.yaml": """
                kind: Web
                listen: 0.0.0.0:443
                tls: {certificate: ../tls/cert.pem, key: ../tls/key.pem}
            """,
            "dir.yaml": """
                kind: Users
                directory:
                  url: ldaps://dir.example.test
                  base_dn: dc=example
                  bind_dn: cn=reader
                  password: {env: LDAP_PW}
            """,
        },
    )
    log_file = tmp_path / "log" / "id.jsonl"
    code, out, err = run(
        capsys,
        "--log-file",
        str(log_file),
        "schedule",
        "export",
        "--systemd",
        "--config-dir",
        str(config_dir),
    )
    assert code == 0, err
    units = units_of(out)
    assert sorted(units) == [
        "imapsync-decl-nightly.service",
        "imapsync-decl-nightly.timer",
        "imapsync-decl-serve.service",
    ]
    service = units["imapsync-decl-serve.service"]
    assert f" --log-file {log_file} serve --config-dir {config_dir}\n" in service
    assert f"\nReadWritePaths={tmp_path / 'archive'} {log_file.parent}\n" in service
    # Port 443: binding it is the one capability kept.
    assert "\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in service
    assert "\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n" in service
    # serve restores through the profiles and signs in through the directory: their secrets.
    assert "\nLoadCredential=imap-u:/etc/imapsync-decl/credentials/imap-u\n" in service
    assert "\nEnvironmentFile=/etc/imapsync-decl/imapsync-decl-serve.env\n" in service
    assert "# Sets LDAP_PW " in service
    assert "\nEnvironment=" not in service
    verify(tmp_path, units)
    # Only one profile asked for: no serve unit.
    code, out, _ = run(
        capsys,
        "schedule",
        "export",
        "--systemd",
        "--profile",
        "nightly",
        "--config-dir",
        str(config_dir),
    )
    assert code == 0
    assert "imapsync-decl-serve.service" not in out


def test_without_a_web_document_no_serve_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_dir = write_config(tmp_path / "profiles.d", {"p.yaml": PROFILE})
    code, out, _ = run(capsys, "schedule", "export", "--systemd", "--config-dir", str(config_dir))
    assert code == 0
    assert "serve" not in out


@pytest.mark.parametrize(("port", "kept"), [(1023, True), (1024, False), (8462, False)])
def test_the_capability_only_below_1024(port: int, kept: bool) -> None:
    (text,) = serve_unit(["/bin/id", "serve"], Path("/srv"), port).values()
    assert ("AmbientCapabilities=CAP_NET_BIND_SERVICE" in text) is kept
    assert ("\nCapabilityBoundingSet=\n" in text) is not kept
