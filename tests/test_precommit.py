"""The published pre-commit hook, run as its users run it: `pre-commit try-repo`.

pre-commit installs a hook of ``language: python`` from a git repository, at a commit:
``try-repo`` takes the committed HEAD (plus tracked changes, but never new files), so
the test commits a copy of the working tree as it is (tracked and new files, not the
ignored ones) into a temporary repository and points ``try-repo`` at that. Each
``try-repo`` installs the package into a fresh environment in a store of its own (a
temporary directory: PRE_COMMIT_HOME cannot cache it), so this is slow (half a minute
per run here); pip's cache makes a second run faster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from helpers import write_config

ROOT = Path(__file__).resolve().parent.parent
GIT = shutil.which("git")
PRE_COMMIT = Path(sys.executable).parent / "pre-commit"

pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")

GOOD = """
    kind: Profile
    name: staff
    server: {host: imap.example.com, port: 993, security: tls}
    source:
      single: {username: alice, password: {env: ALICE_PASSWORD}}
"""
BAD = """
    kind: Profile
    name: staff
    server:
      host: imap.example.com
      port: 70000
    source:
      single: {username: alice, password: {env: ALICE_PASSWORD}}
"""


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.test",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.test",
        "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
    }
    done = subprocess.run(
        [str(GIT), *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def snapshot_of_the_working_tree(dest: Path) -> Path:
    """A git repository holding the project's files as they are now, committed."""
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-q", "-m", "snapshot", cwd=dest)
    return dest


def try_repo(hook_repo: Path, target: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAPSYNC_DECL_")}
    env["PRE_COMMIT_COLOR"] = "never"
    return subprocess.run(
        [str(PRE_COMMIT), "try-repo", str(hook_repo), "imapsync-decl-validate", "--all-files"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_hooks_file_is_the_documented_one() -> None:
    [hook] = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "imapsync-decl-validate"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert hook["entry"] == "imapsync-decl validate"
    readme = (ROOT / "README.md").read_text()
    example = (
        readme.split("\n### pre-commit hook", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    )
    config = YAML(typ="safe").load(example)
    assert config["repos"][0]["hooks"][0]["id"] == hook["id"]


def test_try_repo_passes_a_good_and_fails_a_bad_configuration(tmp_path: Path) -> None:
    hook_repo = snapshot_of_the_working_tree(tmp_path / "imapsync-decl")
    target = tmp_path / "mail-config"
    write_config(target / "profiles.d", {"staff.yaml": GOOD})
    git("init", "-q", cwd=target)
    git("add", "-A", cwd=target)

    good = try_repo(hook_repo, target)
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.search(r"imapsync-decl validate\.+Passed", good.stdout), good.stdout

    write_config(target / "profiles.d", {"staff.yaml": BAD})
    git("add", "-A", cwd=target)
    bad = try_repo(hook_repo, target)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert re.search(r"imapsync-decl validate\.+Failed", bad.stdout), bad.stdout
    assert "profiles.d/staff.yaml:5:9: server.port: Input should be less than" in bad.stdout
