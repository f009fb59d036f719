"""Checks of a configuration that the document models cannot make on their own.

Across documents: duplicate user and profile names, at most one Archive document,
mailboxes that land in one archive folder. Per document: whether files it names
exist, whether referenced passwords can be read and sent, insecure server and
directory settings, schedule values, the shape of an LDAP filter. Each check adds
its problems (errors and warnings, at their place) to a list; none contacts a server.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imapsync_decl.config.documents.profile import Profile
from imapsync_decl.config.documents.secret_refs import CredentialSecret, EnvSecret, FileSecret
from imapsync_decl.config.documents.server import Server
from imapsync_decl.config.documents.users import User, Users
from imapsync_decl.config.loader import Loaded, LoadResult, Loc, Origin
from imapsync_decl.config.model import Mailbox, SecretSource, read_secret
from imapsync_decl.errors import Problem, Severity
from imapsync_decl.secrets import Secret, SecretError, UnsendableSecret
from imapsync_decl.store.archive import archive_path_problem

WARNING = Severity.WARNING


def check_directory(item: Loaded[Users], problems: list[Problem]) -> None:
    directory, origin = item.doc.directory, item.origin
    assert directory is not None
    if directory.password is not None:
        check_secret(directory.password, ("directory", "password"), origin, problems)
    if directory.ca_file is not None:
        ca = resolve_path(directory.ca_file, origin)
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


def merge_users(loaded: LoadResult, problems: list[Problem]) -> list[tuple[User, Origin]]:
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


def find_archive_path(config_dir: Path, loaded: LoadResult, problems: list[Problem]) -> Path:
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


def check_profile_names(profiles: Sequence[Loaded[Profile]], problems: list[Problem]) -> None:
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


@dataclass(frozen=True)
class InsecureSetting:
    """A server setting that weakens security: ``validate`` warns at the field, and every
    plan and run protocol of the profile carries the summary."""

    field: str  # the key in the document's server section
    warning: str  # as validate words it, at the field
    summary: str  # as plans and run protocols word it


def insecure_settings(server: Server) -> tuple[InsecureSetting, ...]:
    """The settings of ``server`` that leave the passwords and the mail unprotected."""
    found = []
    if server.accept_all_certificates:
        found.append(
            InsecureSetting(
                "accept_all_certificates",
                "insecure: every server certificate is accepted, so a man in the middle can read "
                "the passwords and the mail",
                "server.accept_all_certificates is true: the server's certificate is not verified "
                "(insecure)",
            )
        )
    if server.security == "plain":
        found.append(
            InsecureSetting(
                "security",
                "insecure: passwords and mail travel unencrypted; use starttls or tls",
                "server.security is plain: passwords and mail travel unencrypted",
            )
        )
    return tuple(found)


def check_server(item: Loaded[Profile], problems: list[Problem]) -> None:
    server, origin = item.doc.server, item.origin
    for setting in insecure_settings(server):
        problems.append(origin.problem(("server", setting.field), setting.warning, WARNING))
    if server.ca_file is not None:
        ca = resolve_path(server.ca_file, origin)
        if not ca.is_file():
            problems.append(origin.problem(("server", "ca_file"), f"file not found: {ca}", WARNING))


def check_schedule(item: Loaded[Profile], problems: list[Problem]) -> None:
    """The schema checks the shape of a cron expression; this checks its values."""
    if item.doc.schedule is None:
        return
    from imapsync_decl.config.cron import CronError, parse

    try:
        parse(item.doc.schedule)
    except CronError as exc:
        problems.append(item.origin.problem(("schedule",), str(exc)))


def check_notify(item: Loaded[Profile], problems: list[Problem]) -> None:
    """The schema checks inline notify URLs; this checks those kept as secrets, where they
    can be read here: unset or unreadable is a warning, no http(s) URL an error. The URL
    itself never appears in a message."""
    from imapsync_decl.config.documents.rules import http_url_problem
    from imapsync_decl.secrets import read_environment, read_file

    for position, ref in enumerate(item.doc.notify):
        loc = ("notify", position)
        if isinstance(ref, str | CredentialSecret):
            continue  # checked by the schema / only there when systemd runs the service
        if isinstance(ref, EnvSecret):
            if ref.env not in os.environ:
                problems.append(
                    item.origin.problem(loc, f"environment variable {ref.env} is not set", WARNING)
                )
                continue
            value, where = read_environment(ref.env), f"environment variable {ref.env}"
        else:
            path = resolve_path(ref.file, item.origin)
            try:
                value, where = read_file(path), f"file {path}"
            except SecretError as exc:
                problems.append(item.origin.problem(loc, exc.message, WARNING))
                continue
        problem = http_url_problem(value.reveal())
        if problem is not None:
            problems.append(item.origin.problem(loc, f"the URL in {where} {problem}"))


def resolve_path(value: str, origin: Origin) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else origin.base_dir / path


def check_secret(
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
    path = resolve_path(ref.file, origin)
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
        read_secret(ref, origin.base_dir)
    except UnsendableSecret as exc:
        problems.append(origin.problem(loc, exc.message))
    except SecretError:
        pass  # unset or unreadable: warned about by the caller


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
