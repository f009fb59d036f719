"""Secret values that never show themselves, and reading them from where they are kept.

:class:`Secret` masks itself in repr, str, logs and JSON. A password is read late,
when it is needed, from one of three places: an environment variable
(:func:`read_environment`), a file (:func:`read_file`), or a systemd credential
(:func:`read_credential`: ``$CREDENTIALS_DIRECTORY/NAME``, where systemd puts what a
unit's ``LoadCredential=`` names, a private directory readable only by the service,
unlike ``Environment=``, which any local user can read through ``systemctl show``).
Every failure is a :class:`SecretError` that names the place, never the value.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from imapsync_decl.errors import ExitCode, ImapsyncError

_MASK: Final = "********"
CREDENTIALS_VARIABLE: Final = "CREDENTIALS_DIRECTORY"
MAX_CREDENTIAL_BYTES: Final = 64 * 1024


class SecretError(ImapsyncError):
    """A referenced password cannot be read (variable not set, file missing). The message
    names the reference, never the value."""

    exit_code = ExitCode.CONFIG


class UnsendableSecret(SecretError):
    """A referenced password holds a line break or NUL, which no server can be sent."""


class Secret:
    """Holds a password. Only :meth:`reveal` gives the value back.

    ``repr`` and ``str`` show a mask, so a Secret that ends up in a log line, an
    exception message or a plan file gives nothing away.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def read_environment(name: str) -> Secret:
    """The value of the environment variable ``name``; SecretError when it is not set."""
    value = os.environ.get(name)
    if value is None:
        raise SecretError(f"environment variable {name} is not set")
    return Secret(value)


def read_file(path: Path) -> Secret:
    """The content of the file ``path`` (UTF-8) without its trailing newline; SecretError
    (naming the file) when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read password file {path}: {exc}") from None
    return Secret(text.removesuffix("\n").removesuffix("\r"))


def read_credential(name: str) -> Secret:
    """The systemd credential ``name``: the content of ``$CREDENTIALS_DIRECTORY/name``
    without its trailing newline. SecretError (naming the credential) when the directory
    is not set or the credential is not there."""
    directory = os.environ.get(CREDENTIALS_VARIABLE)
    if not directory:
        raise SecretError(
            f"credential {name}: ${CREDENTIALS_VARIABLE} is not set; run under systemd with"
            f" LoadCredential={name}:PATH in the service"
        )
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SecretError(
            f"credential {name} is not in ${CREDENTIALS_VARIABLE} ({directory}); add"
            f" LoadCredential={name}:PATH to the service"
        ) from None
    except OSError as exc:
        reason = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise SecretError(f"cannot read credential {name} from {path}: {reason}") from None
    try:
        data = os.read(fd, MAX_CREDENTIAL_BYTES + 1)
    except OSError as exc:
        raise SecretError(f"cannot read credential {name} from {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise SecretError(f"credential {name} is larger than {MAX_CREDENTIAL_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"credential {name} is not UTF-8 text") from None
    return Secret(text.removesuffix("\n").removesuffix("\r"))
