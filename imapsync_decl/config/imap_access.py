"""The IMAP values of a profile: its server document as an endpoint, credentials as a login.

The imap package knows nothing of profiles; planning and archiving hand it these
values, built here from the configuration.
"""

from __future__ import annotations

from pathlib import Path

from imapsync_decl.config.documents import Server
from imapsync_decl.config.resolve import Credentials
from imapsync_decl.imap.settings import Endpoint, Login

__all__ = ["imap_endpoint", "imap_login"]


def imap_endpoint(server: Server, base_dir: Path) -> Endpoint:
    """The endpoint of ``server``; a relative ``ca_file`` is found in ``base_dir``."""
    return Endpoint(
        host=server.host,
        port=server.effective_port,
        security=server.security,
        verify=not server.accept_all_certificates,
        ca_file=server.ca_file,
        ca_dir=base_dir,
        timeout=server.timeout,
        max_message_size=server.max_message_size,
    )


def imap_login(credentials: Credentials) -> Login:
    """The login of ``credentials``; the password is read only when the session logs in."""
    return Login(
        mechanism=credentials.mechanism,
        username=credentials.username,
        authzid=credentials.authzid,
        password=credentials.resolve_password,
    )
