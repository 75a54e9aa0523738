"""`cluster dummy run|controller|agent`: argument parsing and dispatch for the load tool."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import zmq

from cluster import runtime
from cluster.config import Config

#: Run knobs shared by `dummy run`, `dummy controller` and `demo`: (flag, type, default, help).
KNOBS: tuple[tuple[str, type, Any, str], ...] = (
    ("--clients", int, 100, "clients in all (the original's threads x clients per thread)"),
    ("--rand-connect", int, 100, "percent chance per loop that a disconnected client connects"),
    ("--rand-disconnect", int, 0, "percent chance per loop that a client in game disconnects"),
    ("--rand-contents", int, 100, "percent chance per loop that an idle client sends echoes"),
    ("--echo-overlap", int, 1, "echoes in flight per client (pipelined)"),
    ("--delay-action", float, 10.0, "ms between two loops over the clients (0: back to back)"),
    ("--delay-login", float, 0.0, "ms between connecting and sending a login request"),
    ("--duration", float, 20.0, "seconds to run"),
    ("--ramp", float, 0.0, "new connections per second at most (0: no limit)"),
)


def add_knobs(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    group = parser.add_argument_group("load knobs (as the original dummy)")
    for flag, kind, default, text in KNOBS:
        default = defaults.get(flag[2:].replace("-", "_"), default)
        group.add_argument(flag, type=kind, default=default, metavar=kind.__name__.upper(),
                           help=f"{text} (default {default})")  # fmt: skip
    group.add_argument("--path", choices=("login", "direct"), default=defaults.get("path", "login"),
                       help="login: login port, then the game port it names; direct: game port "
                       "with the key from the accounts file (default %(default)s)")  # fmt: skip


def add_outputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here")
    parser.add_argument("--csv", metavar="FILE", help="write one row per second here")


def knobs_of(args: argparse.Namespace) -> dict[str, Any]:
    names = [flag[2:].replace("-", "_") for flag, *_ in KNOBS] + ["path"]
    return {name: getattr(args, name) for name in names}


def add_parsers(sub: argparse._SubParsersAction, add_config: Any) -> None:  # type: ignore[type-arg]
    dummy = sub.add_parser("dummy", help="load the cluster like game clients do",
                           description="The load tool: clients that speak the client protocol, "
                           "from this machine (run) or many (controller + agents).")  # fmt: skip
    dsub = dummy.add_subparsers(dest="dummy_command", metavar="DUMMY_COMMAND", required=True)

    run = dsub.add_parser("run", help="run the load from this process",
                          description="Run dummy clients from this process against the cluster "
                          "the config describes, with a live screen (S pauses, Q quits) on a "
                          "terminal, and a report at the end.")  # fmt: skip
    add_config(run)
    run.add_argument(
        "--accounts",
        required=True,
        metavar="FILE",
        help="accounts file from 'cluster accounts create' (one client each)",
    )
    add_knobs(run)
    add_outputs(run)

    ctl = dsub.add_parser("controller", help="drive agents on many hosts",
                          description="Wait for N agents, give each a share of the clients and "
                          "of the accounts, run them together, merge their figures into one "
                          "screen and one report, and stop them at the end.")  # fmt: skip
    add_config(ctl)
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
        "--accounts", required=True, metavar="FILE", help="accounts file; split between the agents"
    )
    add_knobs(ctl)
    add_outputs(ctl)

    agent = dsub.add_parser("agent", help="run load for a controller",
                            description="Connect to a controller, run the share of the load it "
                            "gives, report every second, and exit when it says stop.")  # fmt: skip
    agent.add_argument("--controller", required=True, metavar="tcp://HOST:PORT")


def main(args: argparse.Namespace, config: Config) -> int:
    from dummy import distributed, run

    if args.dummy_command == "agent":
        return runtime.run(distributed.run_agent(args.controller))
    try:
        accounts = run.load_accounts(args.accounts)
        options = run.options_from(config, **knobs_of(args))
        options.check()
        if len(accounts) < options.clients:
            raise ValueError(f"{options.clients} clients need {options.clients} accounts, "
                             f"{args.accounts} has {len(accounts)}")  # fmt: skip
    except (OSError, ValueError) as exc:
        print(f"cluster dummy: {exc}", file=sys.stderr)
        return 2
    report = Path(args.report) if args.report else None
    csv_path = Path(args.csv) if args.csv else None
    try:
        if args.dummy_command == "run":
            return runtime.run(run.run_local(config, options, accounts, report, csv_path))
        if args.agents < 1:
            raise ValueError("--agents must be at least 1")
        return runtime.run(distributed.run_controller(
            config, args.listen, args.agents, options, accounts, report, csv_path, args.wait,
        ))  # fmt: skip
    except (ValueError, RuntimeError, zmq.ZMQError) as exc:
        print(f"cluster dummy: {exc}", file=sys.stderr)
        return 1
