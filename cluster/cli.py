"""The `cluster` console script.

Every subcommand loads the configuration once (``--config FILE``, else ``./cluster.toml`` when it
exists, else the defaults; ``CLUSTER_<SECTION>_<KEY>`` variables override single keys) and exits
with code 2 and one line naming the key when it is invalid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster import config as config_module
from cluster.config import Config, ConfigError

DEFAULT_CONFIG = "cluster.toml"

DESCRIPTION = """\
A login/game server cluster speaking the original IOCP echo server's wire protocol:
TCP gateways -> ZeroMQ broker -> pools of game workers, on one host or many."""

EPILOG = """\
examples:
  cluster up                              whole cluster on this host (broker, gateway, workers)
  cluster up --config prod.toml --only game   just this host's game workers
  cluster broker --config prod.toml       one role in the foreground
  cluster config --config prod.toml       print the effective configuration
"""


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML config file (default: ./{DEFAULT_CONFIG} if present, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "up",
        help="start this host's roles as child processes and supervise them",
        description="Start the broker, the game workers and the gateway (or only --only ROLES) "
        "as child processes, print one 'ready' line with the client addresses when all are up "
        "and registered, and stop them all on SIGINT/SIGTERM.",
    )
    _add_config(up)
    up.add_argument(
        "--only", metavar="ROLE[,ROLE...]", help="start only these roles (broker, game, gateway)"
    )

    for role, text in (
        ("broker", "run the broker (the ZeroMQ ROUTER every process connects to)"),
        ("gateway", "run a gateway (the TCP game port clients connect to)"),
        ("game", "run one game (echo) worker"),
    ):
        p = sub.add_parser(
            role,
            help=text,
            description=text[0].upper()
            + text[1:]
            + " in the foreground until SIGINT/SIGTERM. Prints 'ready ...' on stdout "
            "once serving; logs go to stderr.",
        )
        _add_config(p)

    show = sub.add_parser(
        "config",
        help="print the effective configuration as TOML",
        description="Load, validate and print the effective configuration "
        "(file + environment overrides + defaults).",
    )
    _add_config(show)
    return parser


def load_config(path: str | None) -> tuple[Config, str | None]:
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return config_module.load(path), path


def render_toml(config: Config) -> str:
    lines = []
    for section in config_module.SECTIONS:
        lines.append(f"[{section}]")
        for key, value in vars(getattr(config, section)).items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, path = load_config(args.config)
    except ConfigError as exc:
        print(f"cluster: config error: {exc}", file=sys.stderr)
        return 2
    from cluster import runtime

    if args.command == "config":
        print(render_toml(config), end="")
        return 0
    runtime.setup_logging(args.command, config.cluster.log_level)
    if args.command == "up":
        from cluster import supervisor

        try:
            roles = supervisor.parse_roles(args.only)
        except ValueError as exc:
            print(f"cluster up: {exc}", file=sys.stderr)
            return 2
        return supervisor.serve(config, path, roles)
    if args.command == "broker":
        from cluster import broker

        return broker.serve(config)
    if args.command == "gateway":
        from gateway import server

        return server.serve(config)
    if args.command == "game":
        from workers import game

        return game.serve(config)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
