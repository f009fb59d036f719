"""TLS for IMAP connections, and what to tell the user when connecting fails.

:func:`ssl_context` builds the client context of an :class:`Endpoint` (TLS 1.2 at
least; the system store, a CA file, or no verification at all when the endpoint says
so). :func:`connect_detail` says in words why a connection attempt failed, for the
:class:`~imapsync_decl.imap.errors.ConnectFailed` message.
"""

from __future__ import annotations

import imaplib
import socket
import ssl

from imapsync_decl.imap.errors import ConnectFailed, NoProgress, Oversized, Tampered
from imapsync_decl.imap.settings import Endpoint

__all__ = ["connect_detail", "ssl_context"]


def ssl_context(endpoint: Endpoint) -> ssl.SSLContext:
    """The client TLS context of ``endpoint``; raises ConnectFailed if its CA file fails."""
    try:
        if not endpoint.verify:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif (ca := endpoint.ca_path()) is not None:
            context = ssl.create_default_context(cafile=str(ca))
        else:
            context = ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConnectFailed(
            f"cannot connect to {endpoint.where}: cannot load server.ca_file "
            f"{endpoint.ca_file}: {reason}"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def connect_detail(exc: BaseException, endpoint: Endpoint) -> str | None:
    """What went wrong while connecting, or None for an exception that is a bug."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {reason}; set server.ca_file or accept_all_certificates"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        return f"TLS handshake failed: {reason}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {endpoint.host!r}: {exc.strerror or exc}"
    if isinstance(exc, NoProgress):
        return f"timed out: no progress within {endpoint.timeout:g} s"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out after {endpoint.timeout:g} s"
    if isinstance(exc, Oversized | Tampered):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"connection closed by the server: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, imaplib.IMAP4.error):
        return f"the server refused the session: {exc}"
    return None
