# Copyright: imapsync-decl contributors
# MIT License (see https://opensource.org/licenses/MIT)
"""Running the ``imapsync-decl`` executable for the modules of this collection.

The modules never import the ``imapsync_decl`` package: on a managed host it may be
installed in another Python (a virtualenv, pipx). They run its command line, read the
one JSON document it prints on stdout, and turn its exit code into a result or a
failure with the command's own message. Secrets reach the command only through its
environment, never its arguments.
"""

import errno
import json
import os
import re
import stat

# The command's exit codes (`imapsync-decl --help`).
OK = 0
INTERNAL = 1
CHANGES_PENDING = 2
PARTIAL = 3
CONFIG = 10
STALE_PLAN = 11
INTEGRITY = 12
LOCKED = 13
NOT_WRITABLE = 14
INTERRUPTED = 130
TERMINATED = 143

# What each failing exit code means, as the start of the task's failure message.
FAILURES = {
    INTERNAL: "imapsync-decl failed with an internal error (a bug)",
    PARTIAL: "some mailboxes or folders failed; the others are done",
    CONFIG: "the configuration or the command line is invalid",
    STALE_PLAN: "the saved plan is stale: plan again",
    INTEGRITY: "the archive failed its integrity check",
    LOCKED: "the archive is locked by another apply",
    NOT_WRITABLE: "the archive cannot be written",
    INTERRUPTED: "imapsync-decl was interrupted",
    TERMINATED: "imapsync-decl was terminated",
}

# Saved plans larger than this are refused by the command too.
MAX_PLAN_BYTES = 64 << 20
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_MESSAGE_LINES = 20


class CommandError(Exception):
    """The command failed; ``msg`` says why, ``rc`` is its exit code (None: it never ran)."""

    def __init__(self, msg, rc=None, details=None):
        super().__init__(msg)
        self.msg = msg
        self.rc = rc
        self.details = details or []


def check_env(env):
    """The ``env`` option as a dict of str to str; raises CommandError on a bad name or
    value (never naming the value: it is a secret)."""
    checked = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise CommandError(f"env: {name!r} is not an environment variable name")
        if value is None:
            raise CommandError(f"env: {name} has no value")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise CommandError(f"env: the value of {name} must be a string")
        value = str(value)
        if "\0" in value:
            raise CommandError(f"env: the value of {name} contains a NUL character")
        checked[name] = value
    return checked


def message_lines(stderr):
    """The human lines of the command's stderr (``error: ...``, ``path:line:col: ...``),
    without its JSON log lines."""
    lines = []
    for line in (stderr or "").splitlines():
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                json.loads(text)
            except ValueError:
                pass
            else:
                continue
        lines.append(text[len("error: ") :] if text.startswith("error: ") else text)
    return lines[-MAX_MESSAGE_LINES:]


def failure_message(rc, stderr, detail=None):
    """The task's failure message for exit code ``rc``: its meaning, then what the
    command said (for 13, the holder of the lock)."""
    head = FAILURES.get(rc, f"imapsync-decl exited {rc}")
    said = [detail] if detail else message_lines(stderr)
    return head + (": " + "; ".join(said) if said else "")


class Cli:
    """The ``imapsync-decl`` command of one configuration directory."""

    def __init__(self, module, executable, config_dir, env):
        self.module = module
        self.executable = self._find(executable)
        self.config_dir = config_dir
        self.env = check_env(env)

    def _find(self, executable):
        if os.sep in executable:
            if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
                raise CommandError(f"executable: {executable} is not an executable file")
            return executable
        found = self.module.get_bin_path(executable, required=False)
        if not found:
            raise CommandError(
                f"executable: {executable} was not found on PATH;"
                " install imapsync-decl or give its path"
            )
        return found

    def run(self, command, args=()):
        """Run ``imapsync-decl COMMAND --config-dir DIR ARGS``; returns (rc, stdout, stderr).

        Logs: warnings and errors only, as JSON lines (kept out of the messages)."""
        argv = [self.executable, "--log-format", "json", "--log-level", "warning"]
        # Values joined to their options: a value that starts with `-` stays a value.
        argv += [*command, f"--config-dir={self.config_dir}", *args]
        return self.module.run_command(
            argv,
            environ_update=self.env,
            check_rc=False,
            # Arguments are data: a `$` or `~` in a path or a profile name stays as it is.
            expand_user_and_vars=False,
            encoding="utf-8",
            errors="surrogate_or_replace",
        )

    def run_json(self, command, args=(), ok=(OK,)):
        """Run a command with ``--format json``; returns (rc, document).

        An exit code not in ``ok`` raises CommandError with the command's message. Codes
        in ``ok`` after which the command may have ended without its document (a saved
        plan refused before the run: exit 11) raise it too when stdout has none."""
        rc, out, err = self.run(command, ["--format", "json", *args])
        if rc not in ok:
            raise CommandError(failure_message(rc, err), rc=rc, details=message_lines(err))
        try:
            return rc, json.loads(out)
        except ValueError:
            if rc != OK:
                raise CommandError(
                    failure_message(rc, err), rc=rc, details=message_lines(err)
                ) from None
            said = "; ".join(message_lines(err)) or out[:200]
            raise CommandError(
                f"imapsync-decl {' '.join(command)} printed no JSON document: {said}", rc=rc
            ) from None


def read_plan_file(path):
    """A saved plan, read without following a symbolic link and bounded in size."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CommandError(
                f"plan_file: {path} is a symbolic link; give the file itself", rc=CONFIG
            ) from None
        raise CommandError(
            f"plan_file: {path} cannot be read: {error.strerror}", rc=CONFIG
        ) from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise CommandError(f"plan_file: {path} is not a regular file", rc=CONFIG)
        data = handle.read(MAX_PLAN_BYTES + 1)
    if len(data) > MAX_PLAN_BYTES:
        raise CommandError(f"plan_file: {path} is larger than 64 MiB", rc=STALE_PLAN)
    try:
        plan = json.loads(data.decode("utf-8"))
    except ValueError:
        raise CommandError(f"plan_file: {path} is not a plan (not JSON)", rc=STALE_PLAN) from None
    if not isinstance(plan, dict) or not isinstance(plan.get("profiles"), list):
        raise CommandError(f"plan_file: {path} is not a plan", rc=STALE_PLAN)
    return plan
