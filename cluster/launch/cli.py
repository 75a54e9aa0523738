"""The `cluster` console script.

Every subcommand loads the configuration once (``--config FILE``, else ``./cluster.toml`` when it
exists, else the defaults; ``CLUSTER_<SECTION>_<KEY>`` variables override single keys) and exits
with code 2 and one line naming the key when it is invalid.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cluster import config as config_module
from cluster.config import Config, ConfigError
from cluster.launch.roles import ROLES, entry_point

DEFAULT_CONFIG = "cluster.toml"

#: The commands whose log also goes to a file under ``cluster.log_dir`` (the servers and the
#: supervisor; tools such as ``status`` or ``dummy`` log to stderr only).
FILE_LOGGED = frozenset({*ROLES, "up"})

DESCRIPTION = """\
A login/game server cluster speaking the original IOCP login and echo servers' wire protocol:
TCP gateways -> ZeroMQ broker -> pools of auth and game workers, on one host or many."""

EPILOG = """\
examples:
  cluster demo                            whole cluster + dummy load for 20 s, then a report
  cluster up                              whole cluster on this host (broker, gateway, workers)
  cluster up --config prod.toml --only game   just this host's game workers
  cluster broker --config prod.toml       one role in the foreground
  cluster accounts create --count 1000 --out accounts.tsv   accounts, keys and passwords
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
        description="Start the broker, the monitor, the auth and game workers and the gateway "
        "(or only ROLES) "
        "as child processes, print one 'ready' line with the client addresses when all are up "
        "and registered, and stop them all on SIGINT/SIGTERM.",
    )
    _add_config(up)
    up.add_argument(
        "--only",
        metavar="ROLE[,ROLE...]",
        help="start only these roles (broker, monitor, game, chat, auth, gateway, web)",
    )

    up.add_argument(
        "--skip-db-init",
        action="store_true",
        help="do not create missing DB tables before starting (see 'cluster db init')",
    )

    for role, (_, text) in ROLES.items():
        p = sub.add_parser(
            role,
            help=text,
            description=text[0].upper()
            + text[1:]
            + " in the foreground until SIGINT/SIGTERM. Prints 'ready ...' on stdout "
            "once serving; logs go to stderr.",
        )
        _add_config(p)

    from dummy.cli import add_knobs, add_parsers

    add_parsers(sub, _add_config)
    demo = sub.add_parser(
        "demo", help="the whole cluster on this machine under dummy load, then a report",
        description="Start every role on this machine with a fresh embedded SQLite database in a "
        "temporary directory, create accounts (with passwords for the web path), run the dummy "
        "through the real client's path (--path web: web login, login port, game and chat "
        "ports; the web login's per-address rate limit is off in the demo), print the report "
        "summary, and stop everything. Ports come from the configuration.",
    )  # fmt: skip
    _add_config(demo)
    demo.add_argument("--link-mode", choices=config_module.LINK_MODES, default="systemlink",
                      help="systemlink or non-systemlink (default %(default)s)")  # fmt: skip
    add_knobs(demo, path="web")
    demo.add_argument("--report", metavar="FILE", help="write the JSON report here")
    demo.add_argument("--keep", action="store_true",
                      help="keep the demo's data directory and cluster log")  # fmt: skip

    keys = sub.add_parser(
        "keys",
        help="CurveZMQ keys for a secured bus",
        description="CurveZMQ keys for a secured bus ([security] curve).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    generate = keys_sub.add_parser(
        "generate", help="write the broker and client key pairs into [security] keys_dir",
        description="Write broker.key/broker.key_secret and client.key/client.key_secret into "
        "[security] keys_dir. Copy the directory to every host; keep *_secret files private.",
    )  # fmt: skip
    _add_config(generate)
    generate.add_argument("--force", action="store_true", help="replace existing keys")

    status = sub.add_parser(
        "status",
        help="every live process of the cluster: role, host, sessions, TPS, CPU, memory",
        description="Ask the cluster's monitor (through the broker) for every live process and "
        "print a table, or JSON with --json. Exits 1 with one line when the broker or the monitor "
        "cannot be reached.",
    )
    _add_config(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument(
        "--timeout", type=float, default=3.0, metavar="SECONDS",
        help="how long to wait for the broker and the monitor (default 3)",
    )  # fmt: skip

    db = sub.add_parser(
        "db", help="database administration", description="Database administration."
    )
    db_sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    init = db_sub.add_parser(
        "init",
        help="create accountdb and status_server (idempotent)",
        description="Create the accountdb and status_server tables and the "
        "v_account view on the configured [db] url, if missing.",
    )
    _add_config(init)

    accounts = sub.add_parser(
        "accounts", help="account administration", description="Account administration."
    )
    acc_sub = accounts.add_subparsers(
        dest="accounts_command", metavar="ACCOUNTS_COMMAND", required=True
    )
    create = acc_sub.add_parser(
        "create",
        help="create accounts with passwords and random session keys, and write the list file",
        description="Create N accounts (userid ID_<no>, nick NICK_<no>, an argon2id password "
        "hash, a random 64-character session key, status 0) and write FILE (mode 0600) with one "
        "line per account: AccountNo<TAB>UserID<TAB>Nick<TAB>SessionKey<TAB>Password. The "
        "passwords are the lines of --password-file, in order, else random ones; log in with them "
        "on the web login (POST /v1/login). The dummy and the tests read this file.",
    )
    _add_config(create)
    create.add_argument(
        "--count", type=_positive, metavar="N",
        help="how many accounts to create (default with --password-file: one per line)",
    )  # fmt: skip
    create.add_argument(
        "--start",
        type=_positive,
        metavar="ACCOUNTNO",
        help="first AccountNo (default: one past the highest in use)",
    )
    create.add_argument("--out", required=True, metavar="FILE", help="the account list to write")
    passwords = create.add_mutually_exclusive_group()
    passwords.add_argument(
        "--password-file", metavar="FILE",
        help="the accounts' passwords, one a line (at least 8 characters, no tabs)",
    )  # fmt: skip
    passwords.add_argument(
        "--no-passwords", action="store_true",
        help="no password (no web login; the Password column stays empty): fast, for load tests "
        "that log in with the listed keys",
    )  # fmt: skip
    passwd = acc_sub.add_parser(
        "passwd",
        help="set an account's password (read from stdin)",
        description="Set the password of account ACCOUNTNO: the first line of standard input "
        "(a prompt without echo on a terminal) or of --password-file. At least 8 characters. "
        "The password is stored as an argon2id hash and never shown.",
    )
    _add_config(passwd)
    passwd.add_argument("account_no", type=_positive, metavar="ACCOUNTNO")
    passwd.add_argument("--password-file", metavar="FILE", help="read the password from FILE")
    for name, text in (
        ("lock", "lock an account out of the game: its status row to 1 with no owner, so the "
         "login port answers GAME and a game login FAIL until it is unlocked"),
        ("unlock", "clear an account's status row (0, no owner): an operator's lock, or a row "
         "left by a crash that the cluster could not reset"),
    ):  # fmt: skip
        command = acc_sub.add_parser(name, help=text.split(":")[0], description=text[0].upper()
                                     + text[1:] + ".")  # fmt: skip
        _add_config(command)
        command.add_argument("account_no", type=_positive, metavar="ACCOUNTNO")

    show = sub.add_parser(
        "config",
        help="print the effective configuration as TOML",
        description="Load, validate and print the effective configuration "
        "(file + environment overrides + defaults).",
    )
    _add_config(show)
    show.add_argument("--show-secrets", action="store_true",
                      help="print db.url's password and monitor.tool_key too (hidden by default)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def load_config(path: str | None) -> tuple[Config, str | None]:
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    return config_module.load(path), path


def main(argv: list[str] | None = None) -> int:
    """The ``cluster`` command. A reader that stops reading our output (``cluster status
    --json | head -c 100``) ends it quietly, as it ends any Unix filter."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config, path = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"cluster: config error: {exc}", file=sys.stderr)
        return 2
    from cluster import runtime

    if args.command == "config":
        print(config_module.to_toml(config, hide_secrets=not args.show_secrets), end="")
        return 0
    quiet = args.command == "status"  # its output is the answer; its bus link stays silent
    from cluster.logfiles import LogDirError

    level = "warning" if quiet else config.cluster.log_level
    c = config.cluster
    log_dir = c.log_dir if args.command in FILE_LOGGED else ""
    try:
        runtime.setup_logging(args.command, level, log_dir=log_dir, rotate=c.log_rotate,
                              max_bytes=c.log_max_bytes, keep=c.log_keep)  # fmt: skip
    except LogDirError as exc:
        print(f"cluster {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    from cluster.security import SecurityError

    try:
        return _dispatch(args, config, path)
    except SecurityError as exc:
        print(f"cluster {args.command}: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, config: Config, path: str | None) -> int:
    """Run the chosen subcommand with a loaded, valid configuration."""
    from cluster import runtime

    if args.command == "keys":
        from cluster.security import generate_keys

        for written in generate_keys(Path(config.security.keys_dir), force=args.force):
            print(f"wrote {written}")
        return 0
    if args.command == "up":
        from cluster.launch import supervisor

        try:
            roles = supervisor.parse_roles(args.only)
        except ValueError as exc:
            print(f"cluster up: {exc}", file=sys.stderr)
            return 2
        return supervisor.serve(config, path, roles, init_db=not args.skip_db_init)
    if args.command in ROLES:
        return entry_point(args.command)(config)
    if args.command == "status":
        from cluster import status

        try:
            snapshot = runtime.run(status.fetch(config, args.timeout))
        except status.StatusUnavailable as exc:
            print(f"cluster status: {exc}", file=sys.stderr)
            return 1
        print(status.as_json(snapshot) if args.json else status.as_table(snapshot))
        return 0
    if args.command == "dummy":
        from dummy import cli as dummy_cli

        return dummy_cli.main(args, config)
    if args.command == "demo":
        from cluster.launch import demo
        from dummy.cli import knobs_of

        knobs = knobs_of(args)
        report = Path(args.report) if args.report else None
        try:
            return runtime.run(demo.demo(config, args.link_mode, knobs, report, args.keep))
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"cluster demo: {exc}", file=sys.stderr)
            return 1
    if args.command in ("db", "accounts"):
        from cluster.launch import admin

        return admin.main(args, config)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
