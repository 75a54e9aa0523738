"""`cluster dummy run|controller|agent`: argument parsing and dispatch for the load tool."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import zmq

from cluster import runtime
from cluster.config import Config

#: dummy.engine.PATHS, without importing the engines (and aiohttp) for every `cluster` command.
PATHS = ("web", "login", "direct")

#: Run knobs of `dummy run`, `dummy controller` and `demo`: (flag, type, default, help, apps).
#: A default of None leaves the app's own default (LoadOptions / ChatOptions).
KNOBS: tuple[tuple[str, type, Any, str, tuple[str, ...]], ...] = (
    ("--clients", int, 100, "clients in all (the original's threads x clients per thread)",
     ("echo", "chat")),
    ("--rand-connect", int, 100, "percent chance per loop that a disconnected client connects",
     ("echo", "chat")),
    ("--rand-disconnect", int, 0, "percent chance per loop that a logged-in client disconnects",
     ("echo", "chat")),
    ("--rand-contents", int, 100, "percent chance per loop that an idle client acts (echoes; "
     "chat: a sector move or a message)", ("echo", "chat")),
    ("--echo-overlap", int, None, "echo: echoes in flight per client, pipelined (default 1)",
     ("echo",)),
    ("--delay-action", float, None, "ms between two loops over the clients (0: back to back; "
     "default 10 for echo, 1000 for chat as the original chat dummy)", ("echo", "chat")),
    ("--delay-login", float, 0.0, "ms between connecting and sending a login request",
     ("echo", "chat")),
    ("--duration", float, 20.0, "seconds to run", ("echo", "chat")),
    ("--threads", int, None, "action loops the clients are split among, each visiting its "
     "share every --delay-action ms (the original's THREAD_NUMBER x CONNECT_CLIENT; 1..100, "
     "default 1)", ("echo", "chat")),
    ("--ramp", float, 0.0, "new connections per second at most (0: no limit)", ("echo", "chat")),
    ("--sector-range", int, None, "chat: moves go to sectors 0..N-1 in x and y, out of the "
     "100 x 100 grid (default 10, so that clients meet)", ("chat",)),
    ("--web-concurrency", int, None, "--path web: web logins in flight at most, per process "
     "(default 64; the others wait their turn)", ("echo", "chat")),
)  # fmt: skip


def add_knobs(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    group = parser.add_argument_group("load knobs (as the original dummies)")
    for flag, kind, default, text, _ in KNOBS:
        default = defaults.get(flag[2:].replace("-", "_"), default)
        shown = "" if default is None else f" (default {default})"
        group.add_argument(flag, type=kind, default=default, metavar=kind.__name__.upper(),
                           help=text + shown)  # fmt: skip
    group.add_argument("--path", choices=PATHS, default=defaults.get("path", "login"),
                       help="web: the web login (POST /v1/login with the UserID and password of "
                       "the accounts file) for a fresh key, then the login port, then the game "
                       "(chat) port it names, on every (re)connect, as a real client; login: the "
                       "login port with the key from the accounts file, then the game (chat) "
                       "port it names; direct: straight to the game (chat) port with that key "
                       "(default %(default)s). The web login limits attempts per client address "
                       "(web.address_rate, default 10/s): load tests from few hosts raise it, "
                       "else many clients are refused (429, counted web_rate_limited, retried "
                       "after 1 s)")  # fmt: skip


def add_app(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", choices=("echo", "chat"), default="echo",
                        help="echo: game port clients (echo and heartbeat); chat: chat port "
                        "clients (sector moves and messages) (default %(default)s)")  # fmt: skip


def knobs_of(args: argparse.Namespace, app: str | None = None) -> dict[str, Any]:
    """The knobs given in `args` (those left at None are the apps' defaults) and the path: all
    of them, or those `app` takes (ValueError for a knob given that `app` does not take)."""
    knobs = {}
    for flag, _, _, _, apps in KNOBS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name, None)
        if value is None:
            continue
        if app is not None and app not in apps:
            raise ValueError(f"{flag} applies to --app {' or '.join(apps)} only")
        knobs[name] = value
    knobs["path"] = args.path
    return knobs


def knobs_for(knobs: dict[str, Any], app: str) -> dict[str, Any]:
    """The part of `knobs` (from :func:`knobs_of`) that `app` takes."""
    takes = {flag[2:].replace("-", "_") for flag, _, _, _, apps in KNOBS if app in apps}
    return {k: v for k, v in knobs.items() if k in takes or k == "path"}


def add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--csv", metavar="FILE", help="write one row per second here")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report "
                        "here: the summary, charts per second, final counters")  # fmt: skip


def add_account_range(parser: argparse.ArgumentParser) -> None:
    """--first/--last: the AccountNo range of --accounts, so dummies can share one file."""
    parser.add_argument("--first", metavar="ACCOUNTNO", help="use the accounts from this "
                        "AccountNo on (inclusive; as FILE:START-END)")  # fmt: skip
    parser.add_argument("--last", metavar="ACCOUNTNO", help="use the accounts up to this "
                        "AccountNo (inclusive)")  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction, add_config: Any) -> None:  # type: ignore[type-arg]
    dummy = sub.add_parser("dummy", help="load the cluster like game or chat clients do",
                           description="The load tool: clients that speak the client protocol "
                           "(game port echo, or chat port with --app chat), from this machine "
                           "(run) or many (controller + agents).")  # fmt: skip
    dsub = dummy.add_subparsers(dest="dummy_command", metavar="DUMMY_COMMAND", required=True)

    run = dsub.add_parser("run", help="run the load from this process",
                          description="Run dummy clients from this process against the cluster "
                          "the config describes, with a live screen (S pauses, Q quits) on a "
                          "terminal, and a report at the end.")  # fmt: skip
    add_config(run)
    add_app(run)
    run.add_argument(
        "--accounts",
        required=True,
        metavar="FILE[:START-END]",
        help="accounts file from 'cluster accounts create' (one client each); :START-END uses "
        "only the lines whose AccountNo is in that inclusive range",
    )
    add_account_range(run)
    add_knobs(run)
    add_outputs(run)

    ctl = dsub.add_parser("controller", help="drive agents on many hosts",
                          description="Wait for N agents, give each a share of the clients and "
                          "of the accounts, run them together, merge their figures into one "
                          "screen and one report, and stop them at the end.")  # fmt: skip
    add_config(ctl)
    add_app(ctl)
    ctl.add_argument(
        "--listen", required=True, metavar="tcp://HOST:PORT", help="where agents connect"
    )
    ctl.add_argument("--agents", type=int, required=True, metavar="N", help="agents to wait for")
    ctl.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for the agents (default 120)",
    )
    ctl.add_argument(
        "--accounts", required=True, metavar="FILE[:START-END]",
        help="accounts file (:START-END: only that AccountNo range); split between the agents",
    )  # fmt: skip
    add_account_range(ctl)
    add_knobs(ctl)
    add_outputs(ctl)

    agent = dsub.add_parser("agent", help="run load for a controller",
                            description="Connect to a controller, run the share of the load it "
                            "gives, report every second, and exit when it says stop.")  # fmt: skip
    agent.add_argument("--controller", required=True, metavar="tcp://HOST:PORT")


def main(args: argparse.Namespace, config: Config) -> int:
    from dummy import distributed, run
    from dummy.accounts import check_passwords

    if args.dummy_command == "agent":
        return runtime.run(distributed.run_agent(args.controller))
    try:
        options: Any
        if args.app == "chat":
            accounts: Any = run.load_chat_accounts(args.accounts, args.first, args.last)
            options = run.chat_options_from(config, **knobs_of(args, "chat"))
        else:
            accounts = run.load_accounts(args.accounts, args.first, args.last)
            options = run.options_from(config, **knobs_of(args, "echo"))
        options.check()
        if len(accounts) < options.clients:
            raise ValueError(f"{options.clients} clients need {options.clients} accounts, "
                             f"{args.accounts} has {len(accounts)}")  # fmt: skip
        if options.path == "web":
            check_passwords(accounts[: options.clients], args.accounts)
    except (OSError, ValueError) as exc:
        print(f"cluster dummy: {exc}", file=sys.stderr)
        return 2
    report = Path(args.report) if args.report else None
    csv_path = Path(args.csv) if args.csv else None
    html_path = Path(args.html) if getattr(args, "html", None) else None
    try:
        if args.dummy_command == "run":
            return runtime.run(run.run_local(config, options, accounts, report, csv_path,
                                             html_path=html_path))  # fmt: skip
        if args.agents < 1:
            raise ValueError("--agents must be at least 1")
        return runtime.run(distributed.run_controller(
            config, args.listen, args.agents, options, accounts, report, csv_path, args.wait,
            html_path=html_path,
        ))  # fmt: skip
    except (ValueError, RuntimeError, zmq.ZMQError) as exc:
        print(f"cluster dummy: {exc}", file=sys.stderr)
        return 1
