"""The CI examples in examples/ci/ are valid YAML, run commands that exist with the options
they use, post what `plan --format markdown` renders, and handle the exit codes: their
plan and apply scripts run here, with bash, against the test Dovecot (the GitLab note is
posted to an HTTP server the test runs)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import click
import pytest
from ruamel.yaml import YAML

from imapsync_decl.cli.main import cli

from bed import Bed, seed

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "ci"
BIN = str(Path(sys.executable).parent)


def load(name: str) -> Any:
    return YAML(typ="safe").load((EXAMPLES / name).read_text(encoding="utf-8"))


def github_scripts() -> dict[str, list[str]]:
    """Job name -> the `run:` scripts of its steps."""
    workflow = load("github-actions.yml")
    return {
        name: [step["run"] for step in job["steps"] if "run" in step]
        for name, job in workflow["jobs"].items()
    }


def gitlab_scripts() -> dict[str, list[str]]:
    pipeline = load("gitlab-ci.yml")
    return {
        name: list(job["script"])
        for name, job in pipeline.items()
        if isinstance(job, dict) and "script" in job
    }


def commands(script: str) -> list[list[str]]:
    """The imapsync-decl command lines of a script, as arguments (up to a redirection)."""
    found = []
    for line in script.splitlines():
        if "imapsync-decl " not in line:
            continue
        text = line[line.index("imapsync-decl ") :]
        text = re.split(r"\s(?:>|\|\||&&|;|\|)\s?", text)[0]
        found.append(shlex.split(text)[1:])
    return found


def check_options(args: list[str], config_dir: Path) -> None:
    """Parse ``args`` as the command line does (unknown options and bad values raise)."""
    args = [str(config_dir) if a == "$CONFIG_DIR" else a for a in args]
    context = cli.make_context("imapsync-decl", ["validate"], resilient_parsing=True)
    command = cli.get_command(context, args[0])
    assert isinstance(command, click.Command), args[0]
    command.make_context(args[0], args[1:], parent=context)


def test_both_examples_are_yaml_with_the_jobs_expected() -> None:
    workflow = load("github-actions.yml")
    assert set(workflow["jobs"]) == {"plan", "apply"}
    assert workflow["jobs"]["plan"]["permissions"]["pull-requests"] == "write"
    pipeline = load("gitlab-ci.yml")
    assert pipeline["stages"] == ["validate", "plan", "apply"]


@pytest.mark.parametrize("scripts", [github_scripts, gitlab_scripts])
def test_the_commands_exist_with_their_options(scripts: Any, tmp_path: Path) -> None:
    lines = [c for script_list in scripts().values() for s in script_list for c in commands(s)]
    assert {c[0] for c in lines} == {"validate", "plan", "apply"}
    for args in lines:
        check_options(args, tmp_path)
    with pytest.raises(click.NoSuchOption):  # the check would catch a wrong option
        check_options(["plan", "--detailed-exit-code"], tmp_path)


@pytest.mark.parametrize("scripts", [github_scripts, gitlab_scripts])
def test_the_plan_posted_is_the_markdown(scripts: Any) -> None:
    plan_script = next(s for s in scripts()["plan"] if "imapsync-decl plan" in s)
    [plan] = [c for c in commands(plan_script) if c[0] == "plan"]
    assert plan[plan.index("--format") + 1] == "markdown"
    assert "--detailed-exitcode" in plan
    assert plan[plan.index("--out") + 1] == "plan.json"
    assert "--format markdown > plan.md" in plan_script
    posting = "\n".join(scripts()["plan"])
    assert "--body-file plan.md" in posting or '"body@plan.md"' in posting


def run_script(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.dovecot
@pytest.mark.parametrize("scripts", [github_scripts, gitlab_scripts])
def test_the_apply_job_applies_the_saved_plan_and_takes_2_for_changes(
    bed: Bed, scripts: Any
) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("staff", [user])
    [script] = [s for s in scripts()["apply"] if "imapsync-decl apply" in s]
    workdir = bed.root / "checkout"
    workdir.mkdir()
    done = run_script(script, workdir, CONFIG_DIR=str(bed.config_dir))
    assert done.returncode == 0, done.stderr
    assert len(bed.placements()) == 2, "plan exited 2, then the saved plan was applied"
    again = run_script(script, workdir, CONFIG_DIR=str(bed.config_dir))
    assert again.returncode == 0, "nothing to do is no failure"
    assert len(bed.placements()) == 2
    bed.master_profile("staff", [user, "ghost2"])
    failed = run_script(script, workdir, CONFIG_DIR=str(bed.config_dir))
    assert failed.returncode == 3, "a plan with errors fails the job"


class Notes(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), NoteHandler)
        self.posted: list[tuple[str, str, dict[str, list[str]]]] = []


class NoteHandler(BaseHTTPRequestHandler):
    server: Notes

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        token = self.headers.get("PRIVATE-TOKEN", "")
        self.server.posted.append((self.path, token, parse_qs(body)))
        self.send_response(201)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def notes() -> Iterator[Notes]:
    server = Notes()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.dovecot
def test_the_gitlab_plan_job_posts_the_markdown_as_a_note(bed: Bed, notes: Notes) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    bed.master_profile("staff", [user])
    [script] = gitlab_scripts()["plan"]
    workdir = bed.root / "checkout"
    workdir.mkdir()
    done = run_script(
        script,
        workdir,
        CONFIG_DIR=str(bed.config_dir),
        GITLAB_API_TOKEN="glpat-test",
        CI_API_V4_URL=f"http://127.0.0.1:{notes.server_address[1]}/api/v4",
        CI_PROJECT_ID="42",
        CI_MERGE_REQUEST_IID="7",
    )
    assert done.returncode == 0, done.stderr
    [(path, token, form)] = notes.posted
    assert path == "/api/v4/projects/42/merge_requests/7/notes"
    assert token == "glpat-test"
    markdown = (workdir / "plan.md").read_text()
    assert form["body"] == [markdown]
    assert markdown.startswith("### imapsync-decl plan: 3 messages (")
    assert (workdir / "plan.json").is_file()


@pytest.mark.dovecot
def test_the_github_plan_step_records_the_exit_code(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 1)
    bed.master_profile("staff", [user])
    script = next(s for s in github_scripts()["plan"] if "imapsync-decl plan" in s)
    workdir = bed.root / "checkout"
    workdir.mkdir()
    output = workdir / "github-output"
    done = run_script(script, workdir, CONFIG_DIR=str(bed.config_dir), GITHUB_OUTPUT=str(output))
    assert done.returncode == 0, done.stderr
    assert output.read_text() == "exit_code=2\n"
    assert (workdir / "plan.md").read_text().startswith("### imapsync-decl plan: 1 message (")
    final = github_scripts()["plan"][-1]
    assert run_script(final, workdir, PLAN_EXIT="2").returncode == 0
    assert run_script(final, workdir, PLAN_EXIT="3").returncode != 0
