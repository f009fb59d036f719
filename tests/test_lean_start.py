"""structlog loads without rich and asyncio, and both still work for whoever needs them."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


PRELUDE = (
    "import sys\n"
    "from imapsync_decl.run.lean_start import load_structlog_lean\n"
    "load_structlog_lean()\n"
    "import structlog\n"
)


def test_structlog_loads_without_rich_and_asyncio_and_logs() -> None:
    out = _run(
        PRELUDE
        + "structlog.get_logger().info('logged', n=1)\n"
        + "print(sorted(m for m in ('rich', 'asyncio') if m in sys.modules))\n"
    )
    assert out.splitlines()[-1] == "[]"
    assert "logged" in out


def test_asyncio_imported_later_is_the_real_module_and_structlog_async_logging_works() -> None:
    # serve's web server runs on asyncio; structlog's a-methods reach the real loop
    # through the stand-in it was given.
    out = _run(
        PRELUDE
        + "import asyncio, structlog.stdlib, types\n"
        + "assert type(asyncio) is types.ModuleType and hasattr(asyncio, 'run')\n"
        + "assert structlog.stdlib.asyncio is not asyncio\n"
        + "import logging\n"
        + "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        + "structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(),"
        " wrapper_class=structlog.stdlib.BoundLogger)\n"
        + "async def main():\n"
        + "    await structlog.get_logger('t').ainfo('from the loop')\n"
        + "asyncio.run(main())\n"
    )
    assert "from the loop" in out


def test_rich_is_importable_afterwards() -> None:
    out = _run(PRELUDE + "import rich.console\nprint(rich.console.Console.__name__)\n")
    assert out.splitlines()[-1] == "Console"


def test_nothing_is_hidden_when_structlog_is_loaded_already() -> None:
    out = _run(
        "import sys, structlog\n"
        "from imapsync_decl.run.lean_start import load_structlog_lean\n"
        "load_structlog_lean()\n"
        "print(len([f for f in sys.meta_path if type(f).__name__ == '_LeanStructlog']))\n"
    )
    assert out == "0"


@pytest.mark.parametrize("twice", [False, True])
def test_the_finder_is_installed_once_and_removes_itself(twice: bool) -> None:
    out = _run(
        "import sys\n"
        "from imapsync_decl.run.lean_start import load_structlog_lean\n"
        "load_structlog_lean()\n"
        + ("load_structlog_lean()\n" if twice else "")
        + "n = len([f for f in sys.meta_path if type(f).__name__ == '_LeanStructlog'])\n"
        "import structlog\n"
        "m = len([f for f in sys.meta_path if type(f).__name__ == '_LeanStructlog'])\n"
        "print(n, m)\n"
    )
    assert out == "1 0"
