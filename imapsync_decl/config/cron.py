"""Cron expressions: parsing, next run times, and their systemd and crontab forms.

A profile's ``schedule`` is a classic five-field cron expression (minute, hour,
day of month, month, day of week) in the machine's local time, or one of the
names ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly`` /
``@annually``. Each field is ``*``, a number, a range ``a-b``, a step
``*/n`` / ``a-b/n`` / ``a/n`` (from ``a`` to the end), or a comma list of
those; months and days of the week also take English names (``jan``,
``mon``), and day of week 7 is Sunday like 0.

As in cron, when both the day of month and the day of week are restricted
(neither is ``*``), a day matches if **either** does. Expressions that cron
implementations read differently (a day field like ``*/2`` beside a
restricted other day field: some AND them, some OR) are refused, as are
extensions that not every scheduler has (``L``, ``W``, ``#``, ``?``, seconds).
So the daemon, crontab and a systemd timer fire at exactly the same minutes.
"""

from __future__ import annotations

import calendar
import itertools
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

NICKNAMES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# For the JSON Schema and the model: the shape only; config.checks checks the rest.
SCHEDULE_PATTERN = r"^(@(hourly|daily|weekly|monthly|yearly|annually)|\S+([ \t]+\S+){4})$"

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0  # the number of names[0]


FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, 1),
    _Field("day-of-week", 0, 7, DAY_NAMES, 0),
)

_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/([0-9]+))?$", re.IGNORECASE)


class CronError(ValueError):
    """An expression that is not a supported cron expression; the message says why."""


@dataclass(frozen=True)
class CronSchedule:
    """A parsed cron expression: the sets of values each field allows."""

    text: str  # as written
    expression: str  # the five fields (a name like @daily replaced by its fields)
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    days_restricted: bool  # day-of-month is not '*'
    weekdays_restricted: bool  # day-of-week is not '*'

    def next_after(self, after: float, tz: tzinfo | None = None) -> float:
        """The next time (Unix seconds) strictly after ``after`` at which the schedule fires,
        in the zone ``tz`` (default: the machine's local time, as cron does)."""
        from croniter import croniter

        start = datetime.fromtimestamp(after, tz)
        found = croniter(self.expression, start).get_next(datetime)
        assert isinstance(found, datetime)
        return found.timestamp()


def parse(text: str) -> CronSchedule:
    """Parse and check a cron expression; raises CronError with the reason."""
    expression = NICKNAMES.get(text.strip().lower(), text)
    if expression.startswith("@"):
        raise CronError(
            f"unknown name {text.strip()!r}; use one of {', '.join(sorted(NICKNAMES))} "
            "or five fields"
        )
    parts = expression.split()
    if len(parts) != 5:
        raise CronError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), found {len(parts)}"
        )
    sets = [_parse_field(part, spec) for part, spec in zip(parts, FIELDS, strict=True)]
    weekdays = frozenset(v % 7 for v in sets[4])
    day_text, weekday_text = parts[2], parts[4]
    days_restricted, weekdays_restricted = day_text != "*", weekday_text != "*"
    for this, other, other_restricted in (
        (day_text, "day-of-week", weekdays_restricted),
        (weekday_text, "day-of-month", days_restricted),
    ):
        if this.startswith("*") and this != "*" and other_restricted:
            raise CronError(
                f"{this!r} beside a restricted {other} is read differently by cron "
                "implementations (all days or either day); write the values out, e.g. 1-31/2"
            )
    schedule = CronSchedule(
        text=text,
        expression=" ".join(parts),
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_restricted=days_restricted,
        weekdays_restricted=weekdays_restricted,
    )
    if days_restricted and not weekdays_restricted:
        longest = max(_month_length(m) for m in schedule.months)
        if min(schedule.days) > longest:
            raise CronError(
                f"never runs: no month of {parts[3]!r} has day {_join(sorted(schedule.days))}"
            )
    _check_with_croniter(schedule.expression)
    return schedule


def _check_with_croniter(expression: str) -> None:
    """The daemon computes run times with croniter: it must accept what we accept."""
    from croniter import croniter

    if not croniter.is_valid(expression):  # pragma: no cover - the parser is stricter
        raise CronError(f"not a valid cron expression: {expression!r}")


def _month_length(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2023, month)[1]


def _join(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)


def _value(token: str, spec: _Field) -> int:
    if token.isdigit():
        value = int(token)
    elif token.lower() in spec.names:
        value = spec.names.index(token.lower()) + spec.first_name
    elif spec.names:
        raise CronError(
            f"{spec.name} {token!r} is neither a number nor a name ({', '.join(spec.names)})"
        )
    else:
        raise CronError(f"{spec.name} {token!r} is not a number")
    if not spec.low <= value <= spec.high:
        raise CronError(f"{spec.name} {value} is out of range ({spec.low}-{spec.high})")
    return value


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise CronError(f"{spec.name} {item!r} is not a number, range, step or '*'")
        star, first, last, step_text = match.groups()
        if star:
            low, high = spec.low, spec.high
        else:
            low = _value(first, spec)
            high = _value(last, spec) if last is not None else low
            if last is None and step_text is not None:
                high = spec.high  # a/n: from a to the end
            if high < low:
                raise CronError(f"{spec.name} range {item!r} goes backwards")
        step = 1
        if step_text is not None:
            step = int(step_text)
            if step < 1 or step > spec.high - spec.low + 1:
                raise CronError(
                    f"{spec.name} step {step} is out of range (1-{spec.high - spec.low + 1})"
                )
        values.update(range(low, high + 1, step))
    return frozenset(values)


# --- systemd ------------------------------------------------------------------------------


def to_oncalendar(schedule: CronSchedule) -> list[str]:
    """systemd OnCalendar= values that fire exactly when the cron expression does.

    One value, or two when both day fields are restricted (cron fires when either
    matches; a systemd calendar event needs both, so each day field gets its own).
    """
    time = f"{_systemd_field(schedule.hours, 0, 23)}:{_systemd_field(schedule.minutes, 0, 59)}:00"
    months = _systemd_field(schedule.months, 1, 12)
    days = _systemd_field(schedule.days, 1, 31)
    weekdays = _systemd_weekdays(schedule.weekdays)
    if schedule.days_restricted and schedule.weekdays_restricted:
        return [f"*-{months}-{days} {time}", f"{weekdays} *-{months}-* {time}"]
    prefix = f"{weekdays} " if schedule.weekdays_restricted else ""
    return [f"{prefix}*-{months}-{days} {time}"]


def _systemd_field(values: frozenset[int], low: int, high: int) -> str:
    ordered = sorted(values)
    if ordered == list(range(low, high + 1)):
        return "*"
    if len(ordered) >= 3:
        step = ordered[1] - ordered[0]
        progression = all(b - a == step for a, b in itertools.pairwise(ordered))
        if progression and step > 1 and ordered[-1] + step > high:
            return f"{ordered[0]:02d}/{step}"  # the value and every step after it, to the end
    return ",".join(
        f"{a:02d}..{b:02d}" if b - a >= 2 else ",".join(f"{v:02d}" for v in range(a, b + 1))
        for a, b in _runs(ordered)
    )


def _systemd_weekdays(values: frozenset[int]) -> str:
    monday_first = [(d + 1) % 7 for d in range(7)]  # Mon .. Sun, as cron numbers
    positions = sorted(monday_first.index(v) for v in values)
    parts = []
    for a, b in _runs(positions):
        names = [SYSTEMD_DAYS[monday_first[i]] for i in range(a, b + 1)]
        parts.append(f"{names[0]}..{names[-1]}" if len(names) >= 3 else ",".join(names))
    return ",".join(parts)


def _runs(ordered: Sequence[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in ordered:
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


# --- export -------------------------------------------------------------------------------


def crontab_line(schedule: CronSchedule, command: Sequence[str], workdir: Path) -> str:
    """One crontab line that runs ``command`` in ``workdir`` when the schedule fires."""
    shell = f"cd {shlex.quote(str(workdir))} && {shlex.join(command)}"
    return f"{schedule.text.strip()} {shell.replace('%', chr(92) + '%')}"  # % ends a cron command


CREDENTIAL_STORE = Path("/etc/imapsync-decl/credentials")
ENVIRONMENT_FILES = Path("/etc/imapsync-decl")


@dataclass(frozen=True)
class ServiceSecrets:
    """What a service must give the command it runs: systemd credentials (for
    ``{credential: NAME}``) and environment variables (for ``{env: NAME}``)."""

    credentials: Sequence[str] = ()
    environment: Sequence[str] = ()


def systemd_units(
    name: str,
    schedule: CronSchedule,
    command: Sequence[str],
    workdir: Path,
    *,
    read_write: Sequence[Path] = (),
    secrets: ServiceSecrets = ServiceSecrets(),
) -> dict[str, str]:
    """A service unit that runs ``command`` once and a timer unit that starts it on the
    schedule, by file name.

    The service is sandboxed: files it creates are private (``UMask=0077``), it cannot
    gain privileges, has its own /tmp, and sees the whole file system read-only except
    ``read_write`` (the archive, the log file's directory). Passwords come from
    ``LoadCredential=`` (readable by the service only) or from an ``EnvironmentFile=``
    of mode 0600, never from ``Environment=`` lines, which any local user can read
    through ``systemctl show``.
    """
    unit = f"imapsync-decl-{name}"
    lines = [
        "[Unit]",
        f"Description=imapsync-decl: archive the mailboxes of profile {name}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={_systemd_quote(str(workdir))}",
        f"ExecStart={' '.join(_systemd_quote(arg) for arg in command)}",
        *_sandbox(unit, read_write, secrets),
    ]
    service = "\n".join(lines) + "\n"
    calendar_lines = "".join(f"OnCalendar={value}\n" for value in to_oncalendar(schedule))
    timer = (
        "[Unit]\n"
        f"Description=imapsync-decl: run profile {name} on its schedule "
        f"({_systemd_escape_percent(schedule.text.strip())})\n"
        "\n"
        "[Timer]\n"
        f"{calendar_lines}"
        "Persistent=true\n"
        "AccuracySec=1s\n"
        f"Unit={unit}.service\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{unit}.service": service, f"{unit}.timer": timer}


SERVE_UNIT = "imapsync-decl-serve.service"
PRIVILEGED_PORTS = 1024  # binding a port below this needs CAP_NET_BIND_SERVICE


def serve_unit(
    command: Sequence[str],
    workdir: Path,
    port: int,
    *,
    read_write: Sequence[Path] = (),
    secrets: ServiceSecrets = ServiceSecrets(),
) -> dict[str, str]:
    """A service unit that keeps ``command`` (``serve``) running, by file name.

    The same sandbox as the apply services (:func:`systemd_units`); restarted when it
    fails. It keeps no capability but ``CAP_NET_BIND_SERVICE``, and that one only to
    listen on a ``port`` below 1024.
    """
    unit = SERVE_UNIT.removesuffix(".service")
    if port < PRIVILEGED_PORTS:
        capabilities = [
            f"# Port {port} is below 1024: the one capability kept is binding it.",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        ]
    else:
        capabilities = ["CapabilityBoundingSet="]
    lines = [
        "[Unit]",
        "Description=imapsync-decl: web access of the archive users to their archive",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={_systemd_quote(str(workdir))}",
        f"ExecStart={' '.join(_systemd_quote(arg) for arg in command)}",
        "Restart=on-failure",
        "RestartSec=5s",
        *_sandbox(unit, read_write, secrets),
        *capabilities,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return {SERVE_UNIT: "\n".join(lines) + "\n"}


def _sandbox(unit: str, read_write: Sequence[Path], secrets: ServiceSecrets) -> list[str]:
    """The sandbox and secrets lines of an imapsync-decl service."""
    lines = [
        "UMask=0077",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
    ]
    if read_write:
        lines.append("# These must exist before the first run (the archive: mkdir -m 700).")
        lines.append(f"ReadWritePaths={' '.join(_systemd_quote(str(p)) for p in read_write)}")
    if secrets.credentials:
        lines.append(
            f"# Credentials: one file per password in {CREDENTIAL_STORE}, root-owned, mode 0600."
        )
        lines += [
            f"LoadCredential={credential}:{_systemd_quote(str(CREDENTIAL_STORE / credential))}"
            for credential in secrets.credentials
        ]
    if secrets.environment:
        env_file = ENVIRONMENT_FILES / f"{unit}.env"
        lines += [
            f"# Sets {', '.join(secrets.environment)} (NAME=value lines); keep it root-owned,"
            " mode 0600. Not Environment=: systemctl show prints that to every user.",
            f"EnvironmentFile={_systemd_quote(str(env_file))}",
        ]
    return lines


_SYSTEMD_PLAIN = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def _systemd_escape_percent(text: str) -> str:
    return text.replace("%", "%%")


def _systemd_quote(arg: str) -> str:
    """One argument of a systemd command line: specifiers (%) and variables ($) escaped."""
    text = _systemd_escape_percent(arg).replace("$", "$$")
    if _SYSTEMD_PLAIN.match(arg):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
