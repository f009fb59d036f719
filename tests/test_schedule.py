"""Schedules without a mail server: cron expressions, next run times, export, the daemon's
loop with a fake clock, and a real daemon process that is stopped while idle."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import structlog

from imapsync_decl.cli.main import main
from imapsync_decl.config.cron import (
    FAILURE_UNIT,
    CronError,
    crontab_line,
    parse,
    systemd_units,
    to_oncalendar,
)
from imapsync_decl.config.resolve import Config, load_config
from imapsync_decl.run.daemon import Daemon
from imapsync_decl.run.executor import StopRequested
from imapsync_decl.run.results import ApplyResult

from helpers import write_config

BERLIN = ZoneInfo("Europe/Berlin")


def profile(name: str, schedule: str | None) -> str:
    line = f"schedule: {json.dumps(schedule)}\n" if schedule is not None else ""
    return (
        f"kind: Profile\nname: {name}\nserver: {{host: 127.0.0.1, port: 1}}\n"
        # One mailbox per profile: the same mailbox in two profiles is a configuration error.
        f"source: {{single: {{username: u-{name}, password: {{env: SCHEDULE_TEST_PW}}}}}}\n" + line
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "0 2 * * *",
        "*/15 8-18 * * 1-5",
        "0 3 1,15 * *",
        "30 4 1,15 * fri",
        "0 0 * JAN-mar sat,SUN",
        "5/20 0 1 * 7",
        "0 0 29 2 *",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "0\t2  * * *",
    ],
)
def test_good_expressions_validate(tmp_path: Path, expression: str) -> None:
    write_config(tmp_path, {"p.yaml": profile("p", expression)})
    config = load_config(tmp_path, "cfg")
    assert config.errors == (), [str(p) for p in config.errors]
    assert config.profiles[0].doc.schedule == expression


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 2 * * *", "minute 61 is out of range (0-59)"),
        ("0 24 * * *", "hour 24 is out of range (0-23)"),
        ("0 0 0 * *", "day-of-month 0 is out of range (1-31)"),
        ("0 0 * 13 *", "month 13 is out of range (1-12)"),
        ("0 0 * * 8", "day-of-week 8 is out of range (0-7)"),
        ("0 0 * foo *", "month 'foo' is neither a number nor a name"),
        ("0 0 L * *", "day-of-month 'L' is not a number"),
        ("0 0 * * 5#3", "day-of-week '5#3' is not a number, range, step or '*'"),
        ("5-2 * * * *", "minute range '5-2' goes backwards"),
        ("*/0 * * * *", "minute step 0 is out of range (1-60)"),
        ("0 0 30 2 *", "never runs: no month of '2' has day 30"),
        ("0 0 */2 * 1", "'*/2' beside a restricted day-of-week is read differently"),
    ],
)
def test_bad_values_are_problems_at_the_schedule(
    tmp_path: Path, expression: str, message: str
) -> None:
    write_config(tmp_path, {"p.yaml": profile("p", expression)})
    config = load_config(tmp_path, "cfg")
    assert [str(p).split(": ", 2)[:2] for p in config.errors] == [["cfg/p.yaml:5:11", "schedule"]]
    assert message in config.errors[0].message


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "String should match pattern"),
        ("", "String should match pattern"),
        ("@reboot", "String should match pattern"),
        ("0 2 * * * *", "String should match pattern"),
    ],
)
def test_bad_shapes_are_schema_problems(tmp_path: Path, expression: str, message: str) -> None:
    write_config(tmp_path, {"p.yaml": profile("p", expression)})
    config = load_config(tmp_path, "cfg")
    assert len(config.errors) == 1
    assert str(config.errors[0]).startswith("cfg/p.yaml:5:11: schedule: " + message)


def test_validate_exits_10_on_a_bad_schedule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_config(tmp_path, {"p.yaml": profile("p", "61 2 * * *")})
    code, out, err = run(capsys, "validate", "--config-dir", str(tmp_path))
    assert code == 10
    assert f"{tmp_path}/p.yaml:5:11: schedule: minute 61 is out of range (0-59)" in err
    assert "invalid (1 error" in out


# --- next run times --------------------------------------------------------------------------


def local(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: ZoneInfo = BERLIN,
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("0 2 * * *", (2024, 3, 10, 1, 59), (2024, 3, 10, 2, 0)),
        ("0 2 * * *", (2024, 3, 10, 2, 0), (2024, 3, 11, 2, 0)),
        ("*/15 8-18 * * 1-5", (2024, 3, 8, 18, 50), (2024, 3, 11, 8, 0)),  # Fri -> Mon
        ("30 4 1,15 * fri", (2024, 3, 2, 0, 0), (2024, 3, 8, 4, 30)),  # either day field
        ("@monthly", (2024, 1, 31, 23, 0), (2024, 2, 1, 0, 0)),
        ("0 0 29 2 *", (2024, 3, 1, 0, 0), (2028, 2, 29, 0, 0)),
        ("0 12 * * *", (2024, 10, 27, 1, 0), (2024, 10, 27, 12, 0)),  # the day DST ends
    ],
)
def test_next_run_in_an_injected_zone(
    expression: str, now: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    assert parse(expression).next_after(local(*now), BERLIN) == local(*expected)


def test_next_run_uses_the_machines_local_time() -> None:
    code = (
        "from datetime import datetime; from imapsync_decl.config.cron import parse;"
        "t = parse('0 2 * * *').next_after(datetime(2024, 7, 1, 1, 59).timestamp());"
        "print(t, datetime.fromtimestamp(t).isoformat())"
    )
    for zone in ("America/New_York", "Asia/Tokyo"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "TZ": zone},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out[1] == "2024-07-01T02:00:00"
        assert float(out[0]) == datetime(2024, 7, 1, 2, 0, tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize(
    "expression",
    ["*/15 8-18 * * 1-5", "30 4 1,15 * fri", "0 0 * jan-mar sat,sun", "5/20 */7 1-10/3 * *"],
)
def test_the_parsed_sets_fire_exactly_when_croniter_does(expression: str) -> None:
    """The systemd form is built from the parsed sets, run times from croniter: they agree."""
    schedule = parse(expression)

    def fires(moment: datetime) -> bool:
        """Whether the parsed sets allow ``moment``; both day fields restricted: either day."""
        if not (
            moment.minute in schedule.minutes
            and moment.hour in schedule.hours
            and moment.month in schedule.months
        ):
            return False
        day = moment.day in schedule.days
        weekday = moment.isoweekday() % 7 in schedule.weekdays
        both = schedule.days_restricted and schedule.weekdays_restricted
        return (day or weekday) if both else (day and weekday)

    start = datetime(2024, 1, 1, tzinfo=UTC)
    fired = set()
    t = start.timestamp()
    end = (start + timedelta(days=70)).timestamp()
    while (t := schedule.next_after(t, UTC)) < end:
        fired.add(t)
    expected = {
        moment.timestamp()
        for i in range(70 * 24 * 60)
        if fires(moment := start + timedelta(minutes=i)) and i > 0
    }
    assert fired == expected
    assert fired


# --- export ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "calendar"),
    [
        ("0 2 * * *", ["*-*-* 02:00:00"]),
        ("@daily", ["*-*-* 00:00:00"]),
        ("@hourly", ["*-*-* *:00:00"]),
        ("@weekly", ["Sun *-*-* 00:00:00"]),
        ("@yearly", ["*-01-01 00:00:00"]),
        ("*/15 8-18 * * 1-5", ["Mon..Fri *-*-* 08..18:00/15:00"]),
        ("0 3 1,15 * *", ["*-*-01,15 03:00:00"]),
        ("0 0 * jan-mar sat,7", ["Sat,Sun *-01..03-* 00:00:00"]),
        ("0,30 6,7,12 1-31/2 * *", ["*-*-01/2 06,07,12:00,30:00"]),
        ("30 4 1,15 * fri", ["*-*-01,15 04:30:00", "Fri *-*-* 04:30:00"]),
    ],
)
def test_oncalendar(expression: str, calendar: list[str]) -> None:
    assert to_oncalendar(parse(expression)) == calendar


def test_expressions_read_differently_by_schedulers_are_refused() -> None:
    with pytest.raises(CronError, match="read differently by cron implementations"):
        parse("0 0 */3 * mon")
    with pytest.raises(CronError, match="read differently by cron implementations"):
        parse("0 0 1,15 * */2")


def test_systemd_units_and_cron_lines() -> None:
    command = ["/opt/id/bin/imapsync-decl", "apply", "--config-dir", "/srv/a b/p", "--profile", "x"]
    units = systemd_units("x", parse("30 4 1,15 * fri"), command, Path("/srv/a b"))
    assert sorted(units) == ["imapsync-decl-x.service", "imapsync-decl-x.timer"]
    service, timer = units["imapsync-decl-x.service"], units["imapsync-decl-x.timer"]
    assert "Type=oneshot\n" in service
    assert 'WorkingDirectory="/srv/a b"\n' in service
    assert (
        'ExecStart=/opt/id/bin/imapsync-decl apply --config-dir "/srv/a b/p" --profile x\n'
        in service
    )
    assert "OnCalendar=*-*-01,15 04:30:00\nOnCalendar=Fri *-*-* 04:30:00\n" in timer
    assert "Persistent=true\n" in timer
    assert "Unit=imapsync-decl-x.service\n" in timer
    assert "WantedBy=timers.target\n" in timer
    line = crontab_line(parse("@daily"), [*command[:-1], "50%"], Path("/srv/a b"))
    assert line == (
        "@daily cd '/srv/a b' && /opt/id/bin/imapsync-decl apply --config-dir '/srv/a b/p'"
        " --profile 50\\%"
    )


def test_schedule_export_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config_dir = write_config(
        tmp_path / "profiles.d",
        {
            "a.yaml": profile("nightly", "0 2 * * *"),
            "b.yaml": profile("office", "*/15 8-18 * * 1-5"),
            "c.yaml": profile("halfmonth", "0 3 1,15 * *"),
            "d.yaml": profile("manual", None),
        },
    )
    code, out, err = run(capsys, "schedule", "export", "--cron", "--config-dir", str(config_dir))
    assert code == 0, err
    exe = str(Path(sys.executable).parent / "imapsync-decl")
    assert out.splitlines() == [
        f"0 2 * * * cd {tmp_path} && {exe} apply --config-dir {config_dir} --profile nightly",
        f"*/15 8-18 * * 1-5 cd {tmp_path} && {exe} apply --config-dir {config_dir}"
        " --profile office",
        f"0 3 1,15 * * cd {tmp_path} && {exe} apply --config-dir {config_dir} --profile halfmonth",
    ]
    code, out, _ = run(capsys, "schedule", "export", "--systemd", "--config-dir", str(config_dir))
    assert code == 0
    assert out.count("# --- imapsync-decl-") == 7, "3 services, 3 timers, the failure template"
    assert out.count("OnFailure=imapsync-decl-failure@%n.service\n") == 3
    assert out.count("# --- imapsync-decl-failure@.service\n") == 1
    assert "OnCalendar=Mon..Fri *-*-* 08..18:00/15:00\n" in out
    assert "manual" not in out
    code, out, _ = run(
        capsys,
        "schedule",
        "export",
        "--systemd",
        "--profile",
        "halfmonth",
        "--config-dir",
        str(config_dir),
    )
    assert code == 0
    assert out.count("[Timer]") == 1
    assert "OnCalendar=*-*-01,15 03:00:00\n" in out
    assert f"ExecStart={exe} apply --config-dir {config_dir} --profile halfmonth\n" in out

    code, out, err = run(
        capsys,
        "schedule",
        "export",
        "--cron",
        "--profile",
        "manual",
        "--config-dir",
        str(config_dir),
    )
    assert (code, out) == (10, "")
    assert "profile 'manual' has no schedule" in err
    code, _, err = run(capsys, "schedule", "export", "--config-dir", str(config_dir))
    assert code == 10
    assert "give --systemd or --cron" in err


def test_schedule_export_refuses_an_invalid_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_config(tmp_path, {"a.yaml": profile("p", "0 0 */2 * mon")})
    code, out, err = run(capsys, "schedule", "export", "--systemd", "--config-dir", str(tmp_path))
    assert (code, out) == (10, "")
    assert "schedule: '*/2' beside a restricted day-of-week" in err


# --- the daemon's loop, with a fake clock ----------------------------------------------------


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.on_sleep: list[object] = []  # callables run at the n-th sleep

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        if self.on_sleep:
            action = self.on_sleep.pop(0)
            if callable(action):
                action()
        self.now += seconds


class FakeRunner:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.during: object = None

    def __call__(
        self, config_dir: Path, config: Config, profile: str, stop: StopRequested, run_id: str
    ) -> ApplyResult | None:
        self.calls.append((profile, self.clock.now))
        if callable(self.during):
            self.during()
        if stop:
            return None
        return ApplyResult(run_id=run_id, plan_id="p", started_at="now")


def test_daemon_keeps_its_schedule_while_the_configuration_is_invalid(tmp_path: Path) -> None:
    write_config(tmp_path, {"a.yaml": profile("a", "0 2 * * *")})
    clock = FakeClock(local(2024, 3, 10, 1, 58))
    runner = FakeRunner(clock)
    daemon = Daemon(tmp_path, clock=clock, sleep=clock.sleep, tz=BERLIN, runner=runner)
    clock.on_sleep = [lambda: write_config(tmp_path, {"a.yaml": profile("a", "0 25 * * *")})]
    with structlog.testing.capture_logs() as logs:
        assert daemon.run(once=True) == 0
    assert runner.calls == [("a", local(2024, 3, 10, 2, 0))]
    invalid = [e for e in logs if e["event"] == "config_invalid"]
    assert len(invalid) == 1, "logged once, not on every wake-up"
    assert invalid[0]["log_level"] == "error"
    assert "hour 25 is out of range" in invalid[0]["problems"][0]
    finished = next(e for e in logs if e["event"] == "run_finished")
    assert finished["profile"] == "a"
    assert finished["status"] == "ok"
    assert finished["exit_code"] == 0
    assert finished["run_id"] == daemon.runs[0].run_id


def test_daemon_without_scheduled_profiles_exits_10(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write_config(tmp_path, {"a.yaml": profile("manual", None)})
    code, _, err = run(capsys, "daemon", "--config-dir", str(tmp_path))
    assert code == 10
    assert "no profile in" in err
    assert "has a schedule (profiles: manual)" in err


def test_a_stop_during_a_run_ends_the_daemon_with_the_runs_code(tmp_path: Path) -> None:
    write_config(tmp_path, {"a.yaml": profile("a", "@hourly"), "b.yaml": profile("b", "@hourly")})
    clock = FakeClock(local(2024, 3, 10, 1, 59, 30))
    runner = FakeRunner(clock)
    daemon = Daemon(tmp_path, clock=clock, sleep=clock.sleep, tz=BERLIN, runner=runner)
    runner.during = lambda: daemon.request_stop(signal.SIGTERM)
    with structlog.testing.capture_logs():
        assert daemon.run() == 143
    assert [name for name, _ in runner.calls] == ["a"], "b is not started after the stop"


# --- a real daemon process -------------------------------------------------------------------


def test_an_idle_daemon_exits_0_at_once_on_sigterm(tmp_path: Path) -> None:
    config_dir = write_config(tmp_path / "p", {"a.yaml": profile("far", "0 0 29 2 *")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "imapsync_decl", "--log-format", "json", "daemon"],
        env={**os.environ, "IMAPSYNC_DECL_CONFIG_DIR": str(config_dir), "SCHEDULE_TEST_PW": "x"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        events = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, f"the daemon ended early: {proc.wait()}"
            events.append(json.loads(line))
            if events[-1]["event"] == "daemon_started":
                break
        assert events[-1]["schedules"] == {"far": "0 0 29 2 *"}
        loaded = next(e for e in events if e["event"] == "schedules_loaded")
        assert loaded["next_runs"]["far"][5:10] == "02-29"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        rest = [json.loads(line) for line in proc.stderr.read().splitlines()]
        assert [e["event"] for e in rest] == ["daemon_stopped"]
        assert rest[-1]["signal"] == signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def exported_units(text: str, directory: Path) -> list[Path]:
    """The units of `schedule export --systemd`, written to ``directory``."""
    paths = []
    for block in text.split("# --- ")[1:]:
        name, _, body = block.partition("\n")
        path = directory / name
        path.write_text(body.rstrip("\n") + "\n")
        paths.append(path)
    return paths


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_passes_on_the_exported_units(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config_dir = write_config(
        tmp_path / "profiles.d",
        {"a.yaml": profile("nightly", "0 2 * * *"), "b.yaml": profile("office", "@hourly")},
    )
    (tmp_path / "archive").mkdir()
    code, out, err = run(capsys, "schedule", "export", "--systemd", "--config-dir", str(config_dir))
    assert code == 0, err
    units = tmp_path / "units"
    units.mkdir()
    paths = exported_units(out, units)
    assert sorted(p.name for p in paths) == [
        "imapsync-decl-failure@.service",
        "imapsync-decl-nightly.service",
        "imapsync-decl-nightly.timer",
        "imapsync-decl-office.service",
        "imapsync-decl-office.timer",
    ]
    # The template is verified as the instance a failure starts.
    instance = units / "imapsync-decl-failure@imapsync-decl-nightly.service.service"
    checked = [str(p) for p in paths if "@." not in p.name] + [str(instance)]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *checked],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", "no warnings either (an unknown key is only a warning)"


def test_the_readme_names_the_exported_failure_wiring() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Failure alerts with systemd (OnFailure)\n", 1)[1]
    units = systemd_units("staff", parse("@daily"), ["/bin/true"], Path("/srv"))
    [wiring] = [
        line
        for line in units["imapsync-decl-staff.service"].splitlines()
        if line.startswith("OnFailure=")
    ]
    assert f"`{wiring}`" in section
    assert f"`{FAILURE_UNIT}`" in section
    assert "ExecStart=\nExecStart=" in section, "the drop-in clears the command first"
