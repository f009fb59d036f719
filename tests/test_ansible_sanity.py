"""``ansible-test sanity --python 3.11`` on the Ansible collection, locally, without containers.

ansible-test runs each sanity test in a virtualenv of its own, with the test's pinned
requirements installed from PyPI. It bootstraps pip into those virtualenvs with a script
that it downloads from a server of its project (not PyPI), unless the script is in its
cache (``~/.ansible/test/cache/get_pip_<version>.py``, the documented way for machines
without that server). The cache here holds a bootstrap of our own that does the same job
with what Python ships and PyPI: ``ensurepip``, then ``pip install`` of the pinned pip.
HOME points at a directory beside the virtualenv that runs the tests, so ansible-test's
virtualenvs are kept between runs (the first run installs them: about a minute).

Every sanity test of ansible-core 2.19 runs; those with no file to check in this
collection say "No tests applicable" and pass: action-plugin-docs (no action plugins),
changelog (no changelogs/), empty-init (no __init__.py), pslint (no PowerShell) and
shellcheck (no shell scripts). No test is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_bed import BIN, COLLECTIONS

COLLECTION = COLLECTIONS / "ansible_collections" / "imapsync_decl" / "archiving"

BOOTSTRAP = '''\
"""pip for ansible-test's virtualenvs: ensurepip, then the pinned pip from PyPI."""
import subprocess
import sys

# get-pip's own options; pip installs only what is named.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# In a child: ensurepip turns pip's configuration off in its process (PIP_CONFIG_FILE).
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args]))
'''


def ansible_test_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME for ansible-test that outlives the test run where it can."""
    kept = Path(sys.prefix) / "ansible-test-home"
    try:
        kept.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return tmp_path_factory.mktemp("ansible-test-home")
    return kept if os.access(kept, os.W_OK) else tmp_path_factory.mktemp("ansible-test-home")


def pip_version() -> str:
    """The pip that ansible-test puts into its virtualenvs (its bootstrap's name says it)."""
    from ansible_test._internal.python_requirements import get_venv_packages

    class Python:
        version = "3.11"

    version: str = get_venv_packages(Python())["pip"]
    return version


def test_ansible_test_sanity_passes(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = ansible_test_home(tmp_path_factory)
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / f"get_pip_{pip_version().replace('.', '_')}.py").write_text(
        BOOTSTRAP, encoding="utf-8"
    )
    completed = subprocess.run(
        # --untracked: also files not yet committed, so that what is checked is the tree.
        [str(BIN / "ansible-test"), "sanity", "--python", "3.11", "--color", "no", "--untracked"],
        cwd=COLLECTION,
        env={
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(home),
            "LC_ALL": "C.UTF-8",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-6000:]
    ran = [line for line in output.splitlines() if line.startswith("Running sanity test ")]
    for test in ("ansible-doc", "compile", "import", "pep8", "pylint", "validate-modules"):
        assert any(line.startswith(f'Running sanity test "{test}"') for line in ran), test
    assert "ERROR" not in output
