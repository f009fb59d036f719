"""The resolved configuration: the values that loading a configuration directory gives.

:class:`Config` holds the documents, the user list, the archive's place, every
problem found, and per profile the :class:`Mailbox` values to archive, each with
the :class:`Credentials` to log in with. A password stays a reference until a
login needs it: :func:`read_secret` reads it then (through ``imapsync_decl.secrets``)
and refuses a value that no server could be sent.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imapsync_decl.config.documents.profile import Profile
from imapsync_decl.config.documents.rules import WIRE_SAFE, WIRE_UNSAFE
from imapsync_decl.config.documents.secret_refs import CredentialSecret, EnvSecret, FileSecret
from imapsync_decl.config.documents.users import User, Users
from imapsync_decl.config.documents.web import WebDocument
from imapsync_decl.config.loader import Loaded
from imapsync_decl.config.web import DEFAULT_WEB, WebSettings
from imapsync_decl.errors import Problem, Severity
from imapsync_decl.secrets import (
    Secret,
    UnsendableSecret,
    read_credential,
    read_environment,
    read_file,
)

SecretSource = Secret | EnvSecret | FileSecret | CredentialSecret


def read_secret(ref: SecretSource, base_dir: Path) -> Secret:
    """The password itself: read from the environment, the file or the credential now
    (a relative file path resolves against ``base_dir``).

    Raises SecretError when it cannot be read, or when it holds a line break or NUL
    (which no server could be sent); the message names where it is, never the value.
    """
    if isinstance(ref, Secret):
        return ref
    if isinstance(ref, EnvSecret):
        value = read_environment(ref.env)
        where = f"environment variable {ref.env}"
    elif isinstance(ref, CredentialSecret):
        value = read_credential(ref.credential)
        where = f"credential {ref.credential}"
    else:
        path = secret_path(ref, base_dir)
        value = read_file(path)
        where = f"password file {path}"
    if WIRE_UNSAFE.search(value.reveal()):
        raise UnsendableSecret(f"the password in {where} {WIRE_SAFE.message}")
    return value


def secret_path(ref: FileSecret, base_dir: Path) -> Path:
    path = Path(ref.file).expanduser()
    return path if path.is_absolute() else base_dir / path


@dataclass(frozen=True)
class Credentials:
    """How to log in to one mailbox. The password is a value or a reference, resolved late."""

    mechanism: Literal["sasl_plain", "login_separator", "user_password"]
    username: str  # the authentication identity sent to the server
    authzid: str | None  # with sasl_plain: whose mailbox to open
    password: SecretSource = field(repr=False)
    base_dir: Path  # a {file: ...} password resolves against this

    def resolve_password(self) -> Secret:
        """The password itself, read now; see :func:`read_secret`."""
        return read_secret(self.password, self.base_dir)


@dataclass(frozen=True)
class Place:
    """Where a mailbox comes from: a CSV row (path:line), or a document's field."""

    path: str
    line: int | None = None
    col: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        return ":".join(str(part) for part in (self.path, self.line, self.col) if part is not None)

    def problem(self, message: str, severity: Severity = Severity.ERROR) -> Problem:
        return Problem(self.path, self.line, self.col, self.field, message, severity)


@dataclass(frozen=True)
class Mailbox:
    """One mailbox on the server that a profile archives."""

    profile: str
    source: Literal["master", "csv", "single"]
    archive_user: str
    login: str  # the identity of the mailbox at login: the authzid, or the mailbox's own login
    email: str | None
    archive_folder: str  # the mailbox's folder in the archive tree: e-mail address, else login
    credentials: Credentials = field(repr=False, compare=False)
    server: str = field(default="", compare=False)  # host:port of the profile's server
    place: Place = field(default=Place(""), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "source": self.source,
            "archive_user": self.archive_user,
            "login": self.login,
            "email": self.email,
            "archive_folder": self.archive_folder,
            "mechanism": self.credentials.mechanism,
        }


@dataclass(frozen=True)
class Config:
    config_dir: Path
    profiles: tuple[Loaded[Profile], ...]
    users: tuple[User, ...]
    archive_path: Path
    mailboxes: dict[str, tuple[Mailbox, ...]]
    problems: tuple[Problem, ...]
    document_count: int
    listed: tuple[ListedUser, ...] = ()
    choices: dict[str, tuple[UserChoice, ...]] = field(default_factory=dict)
    directories: tuple[Loaded[Users], ...] = ()  # Users documents with a directory
    web: WebSettings = DEFAULT_WEB  # the Web document's settings, or the defaults
    web_document: Loaded[WebDocument] | None = None
    search_during_apply: bool = True  # the Archive document's setting

    def needs_directory(self, profile: str) -> bool:
        item = self.profile(profile)
        master = item.doc.source.master if item is not None else None
        return master is not None and master.sync_directory

    @property
    def ok(self) -> bool:
        return not any(p.is_error for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.is_error)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if not p.is_error)

    def profile(self, name: str) -> Loaded[Profile] | None:
        return next((p for p in self.profiles if p.doc.name == name), None)


def config_digest(config: Config) -> str:
    """A digest of everything that decides what a plan contains: the profiles (inline
    passwords left out), the user list, the archive and the resolved mailboxes.

    A saved plan records it; when the configuration changes, the plan is stale.
    """
    profiles = []
    for item in config.profiles:
        body = item.doc.model_dump(mode="json", by_alias=True)
        for source in body["source"].values():
            if isinstance(source, dict) and isinstance(source.get("password"), str):
                source["password"] = "inline"
        profiles.append(body)
    document = {
        "profiles": profiles,
        "users": [u.user.model_dump(mode="json") for u in config.listed if u.status == "active"],
        "archive": str(config.archive_path),
        "mailboxes": {
            name: [m.to_json() for m in found] for name, found in config.mailboxes.items()
        },
    }
    text = json.dumps(document, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ListedUser:
    """A user of the archive's user list: from a Users document or from a directory."""

    user: User
    source: str  # document | directory
    status: str = "active"  # active | gone (no longer in the directory)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.user.name,
            "email": self.user.email,
            "aliases": list(self.user.aliases),
            "display_name": self.user.display_name,
            "source": self.source,
            "status": self.status,
        }


@dataclass(frozen=True)
class UserChoice:
    """Whether a master-password profile archives a user of the list, and why not."""

    profile: str
    listed: ListedUser
    mailbox: Mailbox | None  # None: not selected
    reason: str | None = None

    @property
    def selected(self) -> bool:
        return self.mailbox is not None

    def to_json(self) -> dict[str, Any]:
        if self.mailbox is not None:
            return {**self.mailbox.to_json(), "selected": True, "reason": None}
        user = self.listed.user
        return {
            "profile": self.profile,
            "source": "master",
            "archive_user": user.name,
            "login": None,
            "email": user.email,
            "archive_folder": None,
            "mechanism": None,
            "selected": False,
            "reason": self.reason,
        }
