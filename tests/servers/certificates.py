"""A self-signed certificate for the test servers (Dovecot, slapd) on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class CertificateError(RuntimeError):
    pass


def make_self_signed(directory: Path, *, days: int = 7) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (0600) into ``directory``; return their paths.

    The certificate is its own CA, for 127.0.0.1 and localhost, so a client can trust
    exactly it with ``cafile=cert.pem`` while the system store refuses it.
    """
    if shutil.which("openssl") is None:
        raise CertificateError("openssl not found (needed for the test certificate)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [
        "openssl", "req", "-x509",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", str(days),
        "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
        "-addext", "extendedKeyUsage=serverAuth",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CertificateError(f"openssl failed: {result.stderr}")
    key.chmod(0o600)
    cert.chmod(0o644)
    return cert, key
