"""An ``apply`` with nothing new on the server loads only what it uses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bed import Bed, seed

pytestmark = pytest.mark.dovecot


def test_a_no_op_apply_loads_neither_text_extraction_nor_rich_asyncio_argon2(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 2)
    bed.master_profile("p", [user])
    code, result = bed.apply_json()
    assert code == 0
    assert result["totals"]["archived"] == 2

    # Nothing new: the run's catch-up finds nothing to index, so the parsers of
    # messages and HTML stay unloaded; with no terminal there are no progress bars, and
    # structlog was loaded without rich and asyncio (``run/lean_start.py``); the web
    # accounts' Argon2 is for the web and ``users`` only.
    script = (
        "import sys\n"
        "from imapsync_decl.cli.main import main\n"
        f"code = main(['apply', '--config-dir', {str(bed.config_dir)!r}, '--format', 'json'])\n"
        "heavy = sorted(m for m in ('imapsync_decl.store.search.extract', 'selectolax', 'rich',"
        " 'asyncio', 'argon2') if m in sys.modules)\n"
        "print(code, heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.stderr.splitlines()[-1] == "0 []", proc.stderr


def test_progress_bars_still_draw_after_structlog_was_loaded_without_rich(bed: Bed) -> None:
    user = bed.new_user()
    seed(bed, user, "INBOX", 3)
    bed.master_profile("p", [user])
    script = (
        "import sys\n"
        "from imapsync_decl.cli.main import main\n"
        f"code = main(['apply', '--progress', '--config-dir', {str(bed.config_dir)!r}])\n"
        "print('exit', code, 'rich' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.stderr.splitlines()[-1] == "exit 0 True", proc.stderr
    assert "all mailboxes" in proc.stderr
    assert "3/3 messages" in proc.stderr
