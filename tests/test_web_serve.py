"""``imapsync-decl serve`` as a process: plain HTTP on loopback, HTTPS from the Web
document's certificate and key, and the answers of a real socket."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import httpx2
import pytest

from servers.certificates import make_self_signed
from web_bed import PASSWORDS, WebArchive, serving, web_archive

pytestmark = pytest.mark.dovecot
__all__ = ["web_archive"]  # the fixture, used by name


def test_serve_answers_on_loopback(web_archive: WebArchive) -> None:
    with serving(web_archive) as url, httpx2.Client(base_url=url) as client:
        assert url.startswith("http://127.0.0.1:")
        page = client.get("/sign-in")
        assert page.status_code == 200
        assert "Sign in" in page.text
        assert "server" not in page.headers  # uvicorn does not name itself
        answer = client.post(
            "/api/session",
            json={"username": web_archive.names["alice"], "password": PASSWORDS["alice"]},
        )
        assert answer.status_code == 200
        hits = client.get("/api/search", params={"q": "from:mallory"}).json()
        assert [h["subject"] for h in hits] == ["Quarterly newsletter"]


def test_serve_speaks_https_with_the_web_documents_certificate(
    web_archive: WebArchive, tmp_path: Path
) -> None:
    config = tmp_path / "profiles.d"
    shutil.copytree(web_archive.config_dir, config)
    cert, key = make_self_signed(tmp_path)
    (config / "web.yaml").write_text(
        f"kind: Web\nlisten: 127.0.0.1:8462\ntls: {{certificate: {cert}, key: {key}}}\n"
    )
    trust = ssl.create_default_context(cafile=str(cert))
    with serving(web_archive, config) as url, httpx2.Client(base_url=url, verify=trust) as client:
        assert url.startswith("https://127.0.0.1:")
        answer = client.post(
            "/api/session",
            json={"username": web_archive.names["bob"], "password": PASSWORDS["bob"]},
        )
        assert answer.status_code == 200
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("__Host-imapsync_session=")
        assert "Secure" in cookie
        assert answer.headers["strict-transport-security"].startswith("max-age=")
        assert client.get("/archive").status_code == 200
    with serving(web_archive, config) as url, pytest.raises(httpx2.ConnectError):
        httpx2.get(url + "/sign-in")  # the system store does not trust the certificate
