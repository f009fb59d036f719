"""Running the Ansible collection in ``ansible/`` with the real ``ansible-playbook``.

The playbooks run on localhost (connection local) against the test Dovecot, with
ansible-core's own default stdout callback printing each task's result as one line of JSON
(``-vvv`` keeps the ``invocation`` and ``diff`` keys in it), so that each result can be read.
The modules run with the system's Python where there is one: they must work without the
``imapsync_decl`` package, which only the test virtualenv has.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bed import Bed

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ROOT / "ansible"
BIN = Path(sys.executable).parent
SECRET_NAME = "ARCHIVER_PASSWORD"
# The modules need only the standard library; a Python without imapsync_decl proves it.
MODULE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def readme_playbook() -> str:
    """The example playbook of the README's section "Ansible"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Ansible\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


TASK = re.compile(r"^TASK \[(?P<name>.*)\] \*+$")
RESULT = re.compile(
    r"^(?P<status>ok|changed|fatal|skipping): \[localhost\](?:: FAILED!)? => (?P<json>\{.*\})$"
)


@dataclass
class Run:
    """One ``ansible-playbook`` run: its exit code, its output, and the results by task."""

    returncode: int
    stdout: str
    stderr: str

    def __post_init__(self) -> None:
        self.results: dict[str, tuple[str, dict[str, Any]]] = {}
        task = None
        for line in self.stdout.splitlines():
            header = TASK.match(line)
            if header:
                task = header["name"]
                continue
            result = RESULT.match(line)
            if result and task is not None:
                self.results[task] = (result["status"], json.loads(result["json"]))

    def result(self, task: str) -> dict[str, Any]:
        if task not in self.results:
            raise AssertionError(f"no result of {task!r}: {self.stdout[-4000:]}{self.stderr}")
        return self.results[task][1]

    def status(self, task: str) -> str:
        """``ok``, ``changed``, ``fatal`` (failed) or ``skipping``."""
        self.result(task)
        return self.results[task][0]

    def ran(self, task: str) -> bool:
        return task in self.results and self.results[task][0] != "skipping"


@dataclass
class Ansible:
    """Playbooks on localhost for a bed's configuration directory."""

    bed: Bed
    secret: str

    def __post_init__(self) -> None:
        self.home = self.bed.root / "ansible-home"
        self.home.mkdir()
        self.inventory = self.bed.root / "inventory.ini"
        self.inventory.write_text(
            "[mailarchive]\n"
            f"localhost ansible_connection=local ansible_python_interpreter={MODULE_PYTHON}\n",
            encoding="utf-8",
        )
        # The secret reaches ansible-playbook in a vars file, never on its command line.
        self.vars_file = self.bed.root / "vars.json"
        self.vars_file.touch(mode=0o600)
        self.vars_file.write_text(
            json.dumps({"config_dir": str(self.bed.config_dir), "archiver_password": self.secret}),
            encoding="utf-8",
        )

    def use_secret_name(self) -> None:
        """Make the bed's profiles read the master password from ``ARCHIVER_PASSWORD``."""
        for path in self.bed.config_dir.glob("*.yaml"):
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace("BED_MASTER_PASSWORD", SECRET_NAME), encoding="utf-8")

    def environment(self) -> dict[str, str]:
        # Not the test's environment: the master password reaches the command only
        # through the modules' env option.
        return {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(self.home),
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_HOME": str(self.home / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(self.home / "tmp"),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_REMOTE_TEMP": str(self.home / "remote-tmp"),
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            "ANSIBLE_CALLBACK_FORMAT_PRETTY": "false",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_PYTHON_INTERPRETER": MODULE_PYTHON,
        }

    def play(self, playbook: str, *args: str, name: str = "playbook.yml") -> Run:
        path = self.bed.root / name
        path.write_text(playbook, encoding="utf-8")
        completed = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "-i",
                str(self.inventory),
                "-e",
                f"@{self.vars_file}",
                "-vvv",
                *args,
                str(path),
            ],
            cwd=self.bed.root,
            env=self.environment(),
            capture_output=True,
            text=True,
            check=False,
        )
        self.bed.outputs.append(completed.stdout + completed.stderr)
        return Run(completed.returncode, completed.stdout, completed.stderr)


def task_play(*tasks: dict[str, Any], **play: Any) -> str:
    """A playbook (JSON is YAML) of one play on the inventory's group with these tasks."""
    body = {"name": "test", "hosts": "mailarchive", "gather_facts": False, **play}
    return json.dumps([{**body, "tasks": list(tasks)}])
