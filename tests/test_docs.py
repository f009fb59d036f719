"""The README cannot drift from the code: header table, exit codes, commands, example."""

from __future__ import annotations

import re
from pathlib import Path

import click

from imapsync_decl.cli.main import EXIT_CODES, cli
from imapsync_decl.config.resolve import load_config
from imapsync_decl.sources.csv import HEADER_SYNONYMS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_csv_header_table_is_the_published_one() -> None:
    section = README.split("\n## CSV files", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", section, re.MULTILINE))
    assert {key: tuple(names.split(", ")) for key, names in rows.items()} == dict(HEADER_SYNONYMS)


def test_exit_codes_in_readme_and_help_agree() -> None:
    section = README.split("\n### Exit codes", 1)[1].split("\n## ", 1)[0]
    readme = set(re.findall(r"^\| +(\d+) \|", section, re.MULTILINE))
    helptext = set(re.findall(r"^\s+(\d+)\s", EXIT_CODES, re.MULTILINE))
    assert readme == helptext == {"0", "1", "2", "3", "10", "11", "12", "13", "14", "130", "143"}


def test_every_command_is_documented() -> None:
    context = click.Context(cli)
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        assert command is not None, name
        subcommands = (
            command.list_commands(click.Context(command))
            if isinstance(command, click.Group)
            else []
        )
        for full in [f"{name} {sub}" for sub in subcommands] or [name]:
            assert f"imapsync-decl {full}" in README


def test_readme_example_validates(tmp_path: Path) -> None:
    example = README.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.yaml").write_text(example, encoding="utf-8")
    config = load_config(tmp_path, "README")
    assert config.ok, [str(p) for p in config.problems]
    assert [p.doc.name for p in config.profiles] == ["staff"]


def test_the_architecture_section_is_the_generated_one() -> None:
    from architecture import readme_section, section

    assert readme_section(README) == section(), "run: python tests/architecture.py --write"
