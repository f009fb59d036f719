"""A whole configuration: the documents of a directory, checked together and resolved to mailboxes.

``load_config`` never raises on bad input. It returns a :class:`Config` whose
``problems`` hold every error and warning: those of each document (``loader``),
those across documents (duplicate names, several Archive documents), and those
found while resolving each profile to its mailboxes (CSV files, user selection,
identity templates, secrets). No server is contacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import structlog

from imapsync_decl.config.documents import (
    WIRE_SAFE,
    WIRE_UNSAFE,
    CredentialSecret,
    CsvSource,
    EnvSecret,
    FileSecret,
    IdentityTemplate,
    MasterSource,
    Profile,
    SingleSource,
    User,
    Users,
)
from imapsync_decl.config.loader import (
    Loaded,
    LoadResult,
    Loc,
    Origin,
    field_path,
    load_config_dir,
    validation_messages,
)
from imapsync_decl.errors import Problem, Severity
from imapsync_decl.secrets import Secret, read_credential
from imapsync_decl.secrets import SecretError as SecretError
from imapsync_decl.sources.csv import CsvResult, load_csv
from imapsync_decl.store.archive import archive_path_problem

WARNING = Severity.WARNING

log = structlog.get_logger(__name__)


class UnsendableSecret(SecretError):
    """A referenced password holds a line break or NUL, which no server can be sent."""


SecretSource = Secret | EnvSecret | FileSecret | CredentialSecret


@dataclass(frozen=True)
class Credentials:
    """How to log in to one mailbox. The password is a value or a reference, resolved late."""

    mechanism: Literal["sasl_plain", "login_separator", "user_password"]
    username: str  # the authentication identity sent to the server
    authzid: str | None  # with sasl_plain: whose mailbox to open
    password: SecretSource = field(repr=False)
    base_dir: Path  # a {file: ...} password resolves against this

    def resolve_password(self) -> Secret:
        """The password itself: read from the environment or the file now.

        Raises SecretError when it cannot be read, or when it holds a line break or NUL
        (which no server could be sent); the message names where it is, never the value.
        """
        ref = self.password
        if isinstance(ref, Secret):
            return ref
        if isinstance(ref, EnvSecret):
            value = os.environ.get(ref.env)
            if value is None:
                raise SecretError(f"environment variable {ref.env} is not set")
            where = f"environment variable {ref.env}"
        elif isinstance(ref, CredentialSecret):
            value = read_credential(ref.credential).reveal()
            where = f"credential {ref.credential}"
        else:
            path = _secret_path(ref, self.base_dir)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretError(f"cannot read password file {path}: {exc}") from None
            value = text.removesuffix("\n").removesuffix("\r")
            where = f"password file {path}"
        if WIRE_UNSAFE.search(value):
            raise UnsendableSecret(f"the password in {where} {WIRE_SAFE.message}")
        return Secret(value)


def _secret_path(ref: FileSecret, base_dir: Path) -> Path:
    path = Path(ref.file).expanduser()
    return path if path.is_absolute() else base_dir / path


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


def directory_users(records: Sequence[Any], skipped: list[str] | None = None) -> list[ListedUser]:
    """Users of the index (source directory) as members of the user list, validated like
    the users of a Users document. A record the model refuses (kept by an older version;
    the next `users sync` marks it gone) is left out and described in ``skipped``, or
    logged as a warning without it."""
    listed = []
    for record in records:
        try:
            user = User.model_validate(
                {
                    "name": record.name,
                    "email": record.email,
                    "aliases": list(record.aliases),
                    "display_name": record.display_name,
                }
            )
        except pydantic.ValidationError as exc:
            reasons = validation_messages(User, exc)
            if skipped is None:
                log.warning("directory_user_skipped", user=repr(record.name), problems=reasons)
            else:
                skipped.append(f"directory user {record.name!r} left out: {'; '.join(reasons)}")
            continue
        listed.append(ListedUser(user, "directory", record.status))
    return listed


def load_config(
    config_dir: Path,
    display_dir: str | None = None,
    directory: Sequence[ListedUser] = (),
) -> Config:
    """Load, check and resolve a configuration directory. ``directory``: the users that
    the directories gave (as the index keeps them, or as a fresh read says)."""
    loaded = load_config_dir(config_dir, display_dir)
    problems = list(loaded.problems)
    users = _merge_users(loaded, problems)
    listed = [ListedUser(user, "document") for user, _ in users]
    known = {u.user.name.casefold() for u in listed}
    listed += [u for u in directory if u.user.name.casefold() not in known]
    archive_path = _archive_path(config_dir, loaded, problems)
    _check_profile_names(loaded.profiles, problems)
    with_directory = tuple(item for item in loaded.users if item.doc.directory is not None)
    for users_doc in with_directory:
        _check_directory(users_doc, problems)
    mailboxes: dict[str, tuple[Mailbox, ...]] = {}
    choices: dict[str, tuple[UserChoice, ...]] = {}
    for item in loaded.profiles:
        _check_server(item, problems)
        _check_schedule(item, problems)
        master = item.doc.source.master
        if master is not None:
            if master.sync_directory and not with_directory:
                problems.append(
                    item.origin.problem(
                        ("source", "master", "sync_directory"),
                        "no Users document has a directory to synchronise with",
                    )
                )
            choices[item.doc.name] = tuple(_resolve_master(item, master, listed, problems))
            mailboxes[item.doc.name] = tuple(
                c.mailbox for c in choices[item.doc.name] if c.mailbox is not None
            )
        else:
            mailboxes[item.doc.name] = tuple(_resolve(item, listed, problems))
    for csv_file, origin in loaded.orphan_csv_files:
        _load_csv_rows(csv_file, origin, problems)
    problems += shared_archive_folders([m for found in mailboxes.values() for m in found])
    document_count = len(loaded.profiles) + len(loaded.users) + len(loaded.archives)
    return Config(
        config_dir=config_dir,
        profiles=loaded.profiles,
        users=tuple(u.user for u in listed),
        archive_path=archive_path,
        mailboxes=mailboxes,
        problems=tuple(sorted(set(problems), key=lambda p: (p.path, p.line or 0, p.col or 0))),
        document_count=document_count,
        listed=tuple(listed),
        choices=choices,
        directories=with_directory,
    )


def _check_directory(item: Loaded[Users], problems: list[Problem]) -> None:
    directory, origin = item.doc.directory, item.origin
    assert directory is not None
    if directory.password is not None:
        _check_secret(directory.password, ("directory", "password"), origin, problems)
    if directory.ca_file is not None:
        ca = _resolve_path(directory.ca_file, origin)
        if not ca.is_file():
            problems.append(
                origin.problem(("directory", "ca_file"), f"file not found: {ca}", WARNING)
            )
    if directory.url.startswith("ldap://") and not directory.starttls:
        problems.append(
            origin.problem(
                ("directory", "url"),
                "unencrypted LDAP: the bind password and the user list travel in clear; "
                "use starttls: true or ldaps://",
                WARNING,
            )
        )
    problem = _filter_problem(directory.effective_filter)
    if problem is not None:
        problems.append(origin.problem(("directory", "filter"), problem))


def _filter_problem(text: str) -> str | None:
    """A quick RFC 4515 shape check: one parenthesised filter, balanced, nothing after."""
    if not text.startswith("("):
        return "an LDAP filter starts with '(' (RFC 4515), e.g. (objectClass=person)"
    depth = 0
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and i != len(text) - 1):
                return "unbalanced parentheses in the LDAP filter"
    return None if depth == 0 else "unbalanced parentheses in the LDAP filter"


# --- across documents ------------------------------------------------------------------------


def _merge_users(loaded: LoadResult, problems: list[Problem]) -> list[tuple[User, Origin]]:
    seen: dict[str, Origin] = {}
    emails: dict[str, str] = {}
    out: list[tuple[User, Origin]] = []
    for item in loaded.users:
        for i, user in enumerate(item.doc.users):
            key = user.name.casefold()
            if key in seen:
                first = seen[key]
                problems.append(
                    item.origin.problem(
                        ("users", i, "name"),
                        f"duplicate user name {user.name!r} "
                        f"(first in {first.display}:{first.start[0]})",
                    )
                )
                continue
            seen[key] = item.origin
            if user.email is not None:
                mail = user.email.casefold()
                if mail in emails:
                    problems.append(
                        item.origin.problem(
                            ("users", i, "email"),
                            f"users {emails[mail]!r} and {user.name!r} have the same e-mail address",
                            WARNING,
                        )
                    )
                else:
                    emails[mail] = user.name
            out.append((user, item.origin))
    return out


def _archive_path(config_dir: Path, loaded: LoadResult, problems: list[Problem]) -> Path:
    if not loaded.archives:
        default = Path(os.path.normpath(config_dir.absolute())).parent / "archive"
        if (message := archive_path_problem(default)) is not None:
            problems.append(Problem(str(config_dir), None, None, None, message))
        return default
    first = loaded.archives[0]
    for extra in loaded.archives[1:]:
        problems.append(
            extra.origin.problem(
                ("kind",),
                f"only one Archive document is allowed (first in {first.origin.display})",
            )
        )
    path = Path(first.doc.path).expanduser()
    root = Path(
        os.path.normpath(path if path.is_absolute() else first.origin.base_dir.absolute() / path)
    )
    if (message := archive_path_problem(root)) is not None:
        problems.append(first.origin.problem(("path",), message))
    return root


def _check_profile_names(profiles: Sequence[Loaded[Profile]], problems: list[Problem]) -> None:
    seen: dict[str, Origin] = {}
    for item in profiles:
        name = item.doc.name
        if name in seen:
            problems.append(
                item.origin.problem(
                    ("name",), f"duplicate profile name {name!r} (first in {seen[name].display})"
                )
            )
        else:
            seen[name] = item.origin


# --- one profile -----------------------------------------------------------------------------


def _check_server(item: Loaded[Profile], problems: list[Problem]) -> None:
    server, origin = item.doc.server, item.origin
    if server.accept_all_certificates:
        problems.append(
            origin.problem(
                ("server", "accept_all_certificates"),
                "insecure: every server certificate is accepted, so a man in the middle can read "
                "the passwords and the mail",
                WARNING,
            )
        )
    if server.security == "plain":
        problems.append(
            origin.problem(
                ("server", "security"),
                "insecure: passwords and mail travel unencrypted; use starttls or tls",
                WARNING,
            )
        )
    if server.ca_file is not None:
        ca = _resolve_path(server.ca_file, origin)
        if not ca.is_file():
            problems.append(origin.problem(("server", "ca_file"), f"file not found: {ca}", WARNING))


def _check_schedule(item: Loaded[Profile], problems: list[Problem]) -> None:
    """The schema checks the shape of a cron expression; this checks its values."""
    if item.doc.schedule is None:
        return
    from imapsync_decl.config.cron import CronError, parse

    try:
        parse(item.doc.schedule)
    except CronError as exc:
        problems.append(item.origin.problem(("schedule",), str(exc)))


def _resolve_path(value: str, origin: Origin) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else origin.base_dir / path


def _check_secret(
    ref: str | EnvSecret | FileSecret | CredentialSecret,
    loc: Loc,
    origin: Origin,
    problems: list[Problem],
) -> SecretSource:
    if isinstance(ref, str):
        problems.append(
            origin.problem(
                loc,
                "inline password in a document that may be committed; "
                "use {env: NAME} or {file: PATH}",
                WARNING,
            )
        )
        return Secret(ref)
    if isinstance(ref, EnvSecret):
        if ref.env not in os.environ:
            problems.append(
                origin.problem(loc, f"environment variable {ref.env} is not set", WARNING)
            )
        else:
            _check_secret_value(ref, loc, origin, problems)
        return ref
    if isinstance(ref, CredentialSecret):
        return ref  # only there when systemd runs the service: nothing to check here
    path = _resolve_path(ref.file, origin)
    try:
        mode = path.stat().st_mode
    except OSError:
        problems.append(origin.problem(loc, f"password file not found: {path}", WARNING))
        return ref
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        problems.append(
            origin.problem(
                loc, f"password file {path} is readable by group/others; chmod 600 it", WARNING
            )
        )
    _check_secret_value(ref, loc, origin, problems)
    return ref


def _check_secret_value(
    ref: EnvSecret | FileSecret, loc: Loc, origin: Origin, problems: list[Problem]
) -> None:
    """The referenced password as it will be read: an error if it cannot be sent."""
    try:
        Credentials("user_password", "", None, ref, origin.base_dir).resolve_password()
    except UnsendableSecret as exc:
        problems.append(origin.problem(loc, exc.message))
    except SecretError:
        pass  # unset or unreadable: warned about by the caller


def _resolve(
    item: Loaded[Profile], users: list[ListedUser], problems: list[Problem]
) -> list[Mailbox]:
    source = item.doc.source
    if source.csv is not None:
        return _resolve_csv(item, source.csv, problems)
    assert source.single is not None
    return _resolve_single(item, source.single, problems)


def _resolve_single(
    item: Loaded[Profile], single: SingleSource, problems: list[Problem]
) -> list[Mailbox]:
    origin = item.origin
    password = _check_secret(single.password, ("source", "single", "password"), origin, problems)
    return [
        Mailbox(
            profile=item.doc.name,
            source="single",
            archive_user=single.archive_user or single.username,
            login=single.username,
            email=single.email,
            archive_folder=single.email or single.username,
            credentials=Credentials(
                "user_password", single.username, None, password, origin.base_dir
            ),
            server=_server_key(item.doc),
            place=_document_place(origin, ("source", "single")),
        )
    ]


def _csv_display(file: str, origin: Origin) -> str:
    return file if Path(file).is_absolute() else _join_display(origin, file)


def _load_csv_rows(file: str, origin: Origin, problems: list[Problem]) -> CsvResult | None:
    path = _resolve_path(file, origin)
    display = _csv_display(file, origin)
    result = load_csv(path, display)
    problems.extend(result.problems)
    if not result.ok:
        # Point the profile at the broken file too, so its line explains the CSV errors.
        problems.append(origin.problem(("source", "csv", "file"), f"CSV file {display} has errors"))
        return None
    return result


def _resolve_csv(item: Loaded[Profile], csv: CsvSource, problems: list[Problem]) -> list[Mailbox]:
    origin = item.origin
    result = _load_csv_rows(csv.file, origin, problems)
    if result is None:
        return []
    return [
        Mailbox(
            profile=item.doc.name,
            source="csv",
            archive_user=row.archive_user or row.login,
            login=row.login,
            email=row.email,
            archive_folder=row.email or row.login,
            credentials=Credentials(
                "user_password", row.login, None, row.password, origin.base_dir
            ),
            server=_server_key(item.doc),
            place=Place(_csv_display(csv.file, origin), row.line),
        )
        for row in result.accounts
    ]


def _server_key(profile: Profile) -> str:
    """The profile's server as mailboxes are told apart: host (case and a trailing dot do
    not matter) and port."""
    host = profile.server.host.rstrip(".").casefold()
    return (
        f"[{host}]:{profile.server.effective_port}"
        if ":" in host
        else f"{host}:{profile.server.effective_port}"
    )


def _document_place(origin: Origin, loc: Loc) -> Place:
    line, col = origin.position(loc)
    return Place(origin.display, line, col, field_path(loc))


def shared_archive_folders(mailboxes: Sequence[Mailbox]) -> list[Problem]:
    """Mailboxes that land in the same archive folder (same archive user, same archive
    folder name), across all profiles and rows.

    The same server and login twice is the same mailbox twice: an error. Otherwise (another
    server, or another login) the index keeps the two apart, but they share one folder name
    in the archive tree: a warning. Each problem is at the later mailbox and names the first.
    """
    first: dict[tuple[str, str], Mailbox] = {}
    problems: list[Problem] = []
    for mailbox in mailboxes:
        key = (mailbox.archive_user, mailbox.archive_folder)
        seen = first.setdefault(key, mailbox)
        if seen is mailbox:
            continue
        lands = (
            f"mailbox {mailbox.login} lands in the archive folder {mailbox.archive_folder} of "
            f"user {mailbox.archive_user}, as {seen.place}"
        )
        same_login = seen.login.casefold() == mailbox.login.casefold()
        if seen.server == mailbox.server and same_login:
            problems.append(
                mailbox.place.problem(
                    f"{lands} does, with the same server and login: it is the same mailbox "
                    "twice; remove one"
                )
            )
            continue
        differ = "login" if seen.server == mailbox.server else "server"
        problems.append(
            mailbox.place.problem(
                f"{lands} ({seen.login} on {seen.server}) does; their {differ} differs, so "
                "the archive keeps them apart, but both show as this one folder; give one "
                "another e-mail address or archive user",
                WARNING,
            )
        )
    return problems


def _join_display(origin: Origin, relative: str) -> str:
    parent = origin.display.rpartition("/")[0]
    return f"{parent}/{relative}" if parent else relative


def _resolve_master(
    item: Loaded[Profile],
    master: MasterSource,
    users: list[ListedUser],
    problems: list[Problem],
) -> list[UserChoice]:
    origin = item.origin
    base: Loc = ("source", "master")
    password = _check_secret(master.password, (*base, "password"), origin, problems)
    selection = master.users
    by_key: dict[str, User] = {}
    for listed in users:
        user = listed.user
        for key in (user.name, user.email, *user.aliases):
            if key is not None:
                by_key.setdefault(key.casefold(), user)
    named: set[str] = set()
    for i, name in enumerate(selection.names):
        found = by_key.get(name.casefold())
        if found is None:
            problems.append(
                origin.problem(
                    (*base, "users", "names", i), f"no user {name!r} in the user list", WARNING
                )
            )
        else:
            named.add(found.name)

    choices: list[UserChoice] = []
    identities: dict[str, str] = {}

    def skip(listed: ListedUser, reason: str) -> None:
        choices.append(UserChoice(item.doc.name, listed, None, reason))

    for listed in users:
        user = listed.user
        if listed.status != "active":
            skip(listed, "gone from the directory")
            continue
        if selection.select == "only" and user.name not in named:
            skip(listed, "not in only")
            continue
        if selection.select == "all_except" and user.name in named:
            skip(listed, "excluded")
            continue
        if selection.select != "only" and user.email is None:
            skip(listed, "no e-mail address")
            continue
        identity = _identity(master.identity, user, (*base, "identity"), origin, problems)
        if identity is None:
            skip(listed, f"no identity ({_identity_name(master.identity)} needs what it lacks)")
            continue
        if identity.casefold() in identities:
            problems.append(
                origin.problem(
                    (*base, "identity"),
                    f"users {identities[identity.casefold()]!r} and {user.name!r} "
                    f"have the same identity {identity!r}",
                )
            )
            skip(listed, f"same identity as {identities[identity.casefold()]!r}")
            continue
        identities[identity.casefold()] = user.name
        if master.mechanism == "sasl_plain":
            credentials = Credentials(
                "sasl_plain", master.username, identity, password, origin.base_dir
            )
        else:
            credentials = Credentials(
                "login_separator",
                f"{identity}{master.separator}{master.username}",
                None,
                password,
                origin.base_dir,
            )
        mailbox = Mailbox(
            profile=item.doc.name,
            source="master",
            archive_user=user.name,
            login=identity,
            email=user.email,
            archive_folder=user.email or user.name,
            credentials=credentials,
            server=_server_key(item.doc),
            place=_document_place(origin, base),
        )
        choices.append(UserChoice(item.doc.name, listed, mailbox))
    quiet = master.sync_directory or any(p.is_error and p.path == origin.display for p in problems)
    if not any(c.selected for c in choices) and not quiet:
        problems.append(origin.problem(base, "selects no mailboxes", WARNING))
    return choices


def _identity_name(identity: str | IdentityTemplate) -> str:
    return "the template" if isinstance(identity, IdentityTemplate) else f"identity {identity}"


def _identity(
    identity: str | IdentityTemplate,
    user: User,
    loc: Loc,
    origin: Origin,
    problems: list[Problem],
) -> str | None:
    if isinstance(identity, IdentityTemplate):
        from imapsync_decl.config.templates import TemplateError, TemplateUser, render_identity

        try:
            rendered = render_identity(
                identity.template, TemplateUser(user.name, user.email, user.display_name)
            )
        except TemplateError as exc:
            problems.append(origin.problem(loc, str(exc)))
            return None
        if WIRE_UNSAFE.search(rendered):
            problems.append(
                origin.problem(loc, f"the identity of user {user.name!r} {WIRE_SAFE.message}")
            )
            return None
        return rendered
    if identity == "username":
        return user.name
    if user.email is None:
        problems.append(
            origin.problem(
                loc,
                f"user {user.name!r} has no e-mail address, so identity {identity} cannot be "
                "formed; not archived",
                WARNING,
            )
        )
        return None
    if identity == "email":
        return user.email
    return user.email.rpartition("@")[0]
