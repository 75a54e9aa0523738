"""deploy/ must match the CLI: every command line in it parses, every config in it loads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cluster import config
from cluster.launch.cli import build_parser

DEPLOY = Path(__file__).parent.parent / "deploy"


def _exec_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                lines.append((unit.name, shlex.split(line.split("=", 1)[1])))
    return lines


def _compose_commands() -> list[tuple[str, list[str]]]:
    text = (DEPLOY / "docker" / "compose.yaml").read_text()
    return [(f"compose:{i}", ["cluster", *re.findall(r'"([^"]+)"', match)])
            for i, match in enumerate(re.findall(r"command: \[([^\]]*)\]", text))]  # fmt: skip


def _readme_commands() -> list[tuple[str, list[str]]]:
    out = []
    for readme in sorted(DEPLOY.rglob("README.md")):
        for command in re.findall(r"`(cluster [^`]+)`", readme.read_text()):
            out.append((readme.name, shlex.split(command.split("#")[0])))
    return out


COMMANDS = _exec_lines() + _compose_commands() + _readme_commands()


def test_every_role_has_a_systemd_unit():
    units = {p.name for p in (DEPLOY / "systemd").glob("*.service")}
    assert units == {"cluster-broker.service", "cluster-monitor.service",
                     "cluster-gateway.service", "cluster-auth@.service",
                     "cluster-game@.service", "cluster-chat@.service"}  # fmt: skip


def test_compose_runs_every_role():
    roles = {argv[1] for _, argv in _compose_commands()}
    assert {"broker", "monitor", "gateway", "auth", "game", "chat", "web"} <= roles


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_line_parses_with_the_cli(where, argv):
    assert Path(argv[0]).name == "cluster", argv
    args = build_parser().parse_args(argv[1:])  # SystemExit (a failure) when it does not
    assert args.command in {"broker", "monitor", "gateway", "auth", "game", "chat", "web", "up",
                            "db", "accounts", "keys", "status"}  # fmt: skip


@pytest.mark.parametrize("path", ["topology/cluster.toml", "docker/cluster.toml"])
def test_deploy_configs_load(path):
    loaded = config.load(DEPLOY / path, env={})
    assert loaded.broker.endpoint.startswith("tcp://")


def test_topology_config_is_the_one_its_commands_name():
    loaded = config.load(DEPLOY / "topology" / "cluster.toml", env={})
    assert loaded.broker.endpoint == "tcp://10.0.0.1:5555"
    assert loaded.security.curve
    for _, argv in _readme_commands():
        if "--config" in argv:
            assert argv[argv.index("--config") + 1] == "/etc/iocp-cluster/cluster.toml"


COMPOSE_SPEC = Path(__file__).parent / "data" / "compose-spec" / "compose-spec.json"


@pytest.mark.parametrize("name", ["compose.yaml", "compose.curve.yaml"])
def test_compose_files_follow_the_compose_specification(name):
    """`docker compose` cannot run here (podman-compose does, in tests/test_containers.py): the
    files are held to the Compose Specification's own schema, so they stay standard for both."""
    import json

    import jsonschema
    import yaml

    schema = json.loads(COMPOSE_SPEC.read_text())
    document = yaml.safe_load((DEPLOY / "docker" / name).read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)
    assert [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors] == []


def test_the_compose_schema_check_refuses_a_misspelt_key():
    import json

    import jsonschema
    import yaml

    schema = json.loads(COMPOSE_SPEC.read_text())
    document = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    service = next(iter(document["services"].values()))
    service["restart_policy"] = "always"  # a key Compose does not have
    assert list(jsonschema.Draft7Validator(schema).iter_errors(document))
