"""What a session needs to know before it talks to a server: where, how, and as whom.

Plain frozen values. :class:`Endpoint` says where the server is and how to reach it;
:class:`Login` says how to log in to one mailbox. The password of a :class:`Login` is
either a :class:`~imapsync_decl.secrets.Secret` or a function that reads it, so that
it is read only at login and never kept longer than the login needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from imapsync_decl.secrets import Secret

__all__ = ["Endpoint", "Login", "Mechanism", "Security"]

Security = Literal["plain", "starttls", "tls"]
Mechanism = Literal["sasl_plain", "login_separator", "user_password"]


@dataclass(frozen=True)
class Endpoint:
    """An IMAP server and how to reach it.

    ``security``: ``plain`` (unencrypted), ``starttls`` (upgraded, never falling back)
    or ``tls`` (implicit TLS). ``verify``: check the server's certificate (against
    ``ca_file`` when given, else the system store). ``ca_file`` is as configured; a
    relative one is found in ``ca_dir``. ``timeout``: seconds a connection attempt or
    a read may go without progress. ``max_message_size``: the largest message fetched.
    """

    host: str
    port: int
    security: Security = "tls"
    verify: bool = True
    ca_file: str | None = None
    ca_dir: Path = field(default_factory=Path)
    timeout: float = 60.0
    max_message_size: int = 256 * 1024 * 1024

    @property
    def where(self) -> str:
        """``host:port``, as messages name the server."""
        return f"{self.host}:{self.port}"

    def ca_path(self) -> Path | None:
        """The CA file to verify the server with, None for the system store."""
        if self.ca_file is None:
            return None
        path = Path(self.ca_file).expanduser()
        return path if path.is_absolute() else self.ca_dir / path


@dataclass(frozen=True)
class Login:
    """How to log in to one mailbox.

    ``sasl_plain``: AUTHENTICATE PLAIN as ``username`` on behalf of ``authzid``;
    ``login_separator``: LOGIN with a combined user name; ``user_password``: the
    mailbox's own user name and password. ``password`` is the secret itself or a
    function that reads it when the session logs in.
    """

    mechanism: Mechanism
    username: str
    authzid: str | None
    password: Secret | Callable[[], Secret] = field(repr=False)

    def resolve_password(self) -> Secret:
        """The password, read now if it is a reference."""
        if isinstance(self.password, Secret):
            return self.password
        return self.password()
