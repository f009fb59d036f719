"""Running on a schedule: the ``daemon`` command, and ``schedule export`` for systemd or cron.

The daemon runs each scheduled profile as ``apply --profile NAME`` does
(:mod:`imapsync_decl.run.daemon`); ``schedule export`` prints units or crontab lines
that make the system's own scheduler run ``apply`` instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

import click
import structlog

from imapsync_decl.cli.options import (
    EXIT_CODES,
    check_profiles,
    config_dir_option,
    setup_logging,
    valid_config,
)
from imapsync_decl.config.cron import (
    ServiceSecrets,
    crontab_line,
    parse,
    serve_unit,
    systemd_units,
)
from imapsync_decl.config.documents import CredentialSecret, EnvSecret, secret_references
from imapsync_decl.errors import ExitCode, UsageError
from imapsync_decl.run.daemon import Daemon


@click.command("daemon", epilog=EXIT_CODES)
@config_dir_option
@click.option("--once", is_flag=True, help="Wait for the next due time, run it, exit.")
def daemon_command(config_dir: Path, once: bool) -> int:
    """Run each profile with a schedule whenever its cron expression is due.

    Sleeps until the earliest next run time (local time), then plans and applies
    the due profiles one after another, exactly as `apply --profile NAME`. The
    configuration is read again before every run (and every minute): changes take
    effect without a restart; an invalid configuration is logged and the previous
    schedules stay. When another command holds the archive's lock, the occurrence is
    skipped (run_skipped). Logs run_started / run_finished with run_id, profile,
    status and exit_code. SIGTERM / Ctrl-C: exit 0 at once when idle; during a run
    the current batch commits, then exit 143 / 130. No scheduled profile: exit 10.
    With --once the exit code is that of the run.

    \b
    Examples:
      imapsync-decl daemon
      imapsync-decl daemon --once --config-dir /etc/imapsync-decl/profiles.d
    """
    valid_config(config_dir)
    setup_logging()
    daemon = Daemon(config_dir)
    previous = {
        sig: signal.signal(sig, daemon.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        daemon.reload(first=True)
        structlog.get_logger(__name__).info(
            "daemon_started",
            config_dir=str(config_dir),
            pid=os.getpid(),
            schedules={name: s.text for name, s in daemon.schedules.items()},
        )
        return daemon.run(once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        daemon.close()


@click.group("schedule", epilog=EXIT_CODES)
def schedule_group() -> None:
    """The profiles' schedules, for the system's own scheduler (systemd, cron)."""


@schedule_group.command("export", epilog=EXIT_CODES)
@config_dir_option
@click.option("--systemd", "target", flag_value="systemd", help="systemd service + timer units.")
@click.option("--cron", "target", flag_value="cron", help="crontab lines.")
@click.option("--profile", "profile_name", metavar="NAME", help="Only this profile.")
def schedule_export(config_dir: Path, target: str | None, profile_name: str | None) -> int:
    """Print what makes the system run each scheduled profile: systemd units or crontab lines.

    Each runs `imapsync-decl apply --config-dir DIR --profile NAME` (not the daemon),
    with absolute paths, in the configuration directory's parent. --systemd prints,
    per profile, imapsync-decl-NAME.service (Type=oneshot) and imapsync-decl-NAME.timer
    (OnCalendar= converted from the cron expression, exactly: two OnCalendar= lines
    when both day fields are restricted, since cron then runs on either;
    Persistent=true). The service is sandboxed (UMask=0077, NoNewPrivileges,
    PrivateTmp, ProtectSystem=strict with ReadWritePaths= the archive and the log
    file's directory) and gets {credential: NAME} passwords by LoadCredential= and
    {env: NAME} ones from an EnvironmentFile= (mode 0600), never Environment=.
    --cron prints one crontab line per profile. Use this or `imapsync-decl daemon`,
    not both. A profile without schedule is left out (named with --profile: exit 10).

    With a Web document, --systemd (without --profile) also prints
    imapsync-decl-serve.service, which keeps `imapsync-decl serve --config-dir DIR`
    running (Type=simple, Restart=on-failure, the same sandbox, every password a
    profile or directory needs; no capabilities but CAP_NET_BIND_SERVICE for a port
    below 1024). Such a configuration needs no schedule.

    \b
    Examples:
      imapsync-decl schedule export --systemd
      imapsync-decl schedule export --cron --profile staff >> mycrontab
    """
    if target is None:
        raise UsageError("give --systemd or --cron")
    config = valid_config(config_dir)
    if profile_name is not None:
        check_profiles(config, [profile_name])
    chosen = [item.doc for item in config.profiles if profile_name in (None, item.doc.name)]
    scheduled = [doc for doc in chosen if doc.schedule is not None]
    serve = target == "systemd" and profile_name is None and config.web_document is not None
    if not scheduled and not serve:
        which = f"profile {profile_name!r} has" if profile_name else "no profile has"
        raise UsageError(f"{which} no schedule" if profile_name else f"{which} a schedule")
    directory = Path(os.path.normpath(config_dir.absolute()))
    log_file = click.get_current_context().find_root().obj.get("log_file")
    log_options: list[str] = []
    read_write = [config.archive_path]
    if log_file is not None:
        log_file = Path(os.path.normpath(Path(log_file).absolute()))
        log_options = ["--log-file", str(log_file)]
        read_write.append(log_file.parent)
    for doc in scheduled:
        assert doc.schedule is not None
        references = secret_references(doc)
        if config.needs_directory(doc.name):
            references += [r for item in config.directories for r in secret_references(item.doc)]
        secrets = ServiceSecrets(
            credentials=_unique(
                r.credential for r in references if isinstance(r, CredentialSecret)
            ),
            environment=_unique(r.env for r in references if isinstance(r, EnvSecret)),
        )
        command = [
            *_own_command(),
            *log_options,
            "apply",
            "--config-dir",
            str(directory),
            "--profile",
            doc.name,
        ]
        schedule_ = parse(doc.schedule)
        if target == "cron":
            click.echo(crontab_line(schedule_, command, directory.parent))
            continue
        for file_name, text in systemd_units(
            doc.name, schedule_, command, directory.parent, read_write=read_write, secrets=secrets
        ).items():
            click.echo(f"# --- {file_name}")
            click.echo(text)
    if serve:
        references = [r for item in config.profiles for r in secret_references(item.doc)]
        references += [r for item in config.directories for r in secret_references(item.doc)]
        secrets = ServiceSecrets(
            credentials=_unique(
                r.credential for r in references if isinstance(r, CredentialSecret)
            ),
            environment=_unique(r.env for r in references if isinstance(r, EnvSecret)),
        )
        command = [*_own_command(), *log_options, "serve", "--config-dir", str(directory)]
        for file_name, text in serve_unit(
            command, directory.parent, config.web.port, read_write=read_write, secrets=secrets
        ).items():
            click.echo(f"# --- {file_name}")
            click.echo(text)
    return ExitCode.OK


def _unique(values: Iterable[str]) -> list[str]:
    """``values`` without repeats, in their first order."""
    return list(dict.fromkeys(values))


def _own_command() -> list[str]:
    """The absolute command that runs imapsync-decl, as installed."""
    script = Path(sys.executable).parent / "imapsync-decl"
    if script.is_file():
        return [str(Path(os.path.abspath(script)))]
    found = shutil.which("imapsync-decl")
    if found is not None:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "imapsync_decl"]
