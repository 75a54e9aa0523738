"""The README is a contract too: its config table and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from cluster import config
from cluster.launch.cli import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_config_table_lists_every_key_and_nothing_else():
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_0-9]+)` \|", README, re.MULTILINE))
    actual = {key for key, _, _ in config.describe()}
    assert documented == actual


def test_readme_defaults_match_the_code():
    for key, _, default in config.describe():
        row = re.search(rf"^\| `{re.escape(key)}` \| (.+?) \|", README, re.MULTILINE)
        assert row, key
        shown = row.group(1)
        if shown.startswith("="):  # derived default, e.g. public_host = host
            assert default == "''", key
            continue
        value = {"True": "true", "False": "false"}.get(default, default.strip("'"))
        assert value in shown.replace('"', ""), (key, shown, default)


def test_readme_commands_exist_in_the_cli():
    commands = set(build_parser()._subparsers._group_actions[0].choices)
    for command in re.findall(r"^cluster ([a-z|]+)", README, re.MULTILINE):
        for name in command.split("|"):
            assert name in commands, name
