"""`cluster dummy run`: the load engine in this process, with its screen, report and checks.

Through the run it follows the gateways' samples at the cluster's monitor (:mod:`dummy.accept`),
so the report can state the original's closing check: every TCP connect the dummy made
(connect_total) against what the gateways accepted in the same time (accept_total).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cluster.config import Config
from cluster.db.accounts import read_accounts_file
from dummy.accept import AcceptWatch
from dummy.console import Console
from dummy.engine import Engine, LoadOptions, SecondStats
from dummy.report import View, build_report, summary, write_csv, write_report

log = logging.getLogger("dummy")


def options_from(config: Config, **knobs: Any) -> LoadOptions:
    """Run options aimed at the cluster `config` describes (its public addresses and codec)."""
    gw, proto = config.gateway, config.protocol
    return LoadOptions(
        login_host=gw.public_host, login_port=gw.login_port,
        game_host=gw.public_host, game_port=gw.game_port,
        code=proto.code, key1=proto.key1, key2=proto.key2, version=config.game.version,
        **knobs,
    )  # fmt: skip


def load_accounts(path: str | Path) -> list[tuple[int, bytes]]:
    """(AccountNo, key) pairs of an accounts file; ValueError naming a bad line."""
    return [(no, key) for no, _, _, key in read_accounts_file(Path(path))]


def view_of(stats: SecondStats, paused: bool = False) -> View:
    return View(
        elapsed=stats.elapsed, clients=stats.clients, in_login=stats.in_login,
        in_game=stats.in_game, reply_wait=stats.reply_wait, send_tps=stats.send_tps,
        recv_tps=stats.recv_tps, totals=stats.totals, latency=stats.latency,
        action_delay_ms=stats.action_delay_ms, paused=paused,
    )  # fmt: skip


def exit_code(report: dict[str, Any]) -> int:
    """1 when something that must never happen happened (packet errors, a connect mismatch), or
    when the run did not do what it was asked: clients ran and not one got into the game (the
    reason is logged: the login failures by status)."""
    if report["errors"].get("packet_error") or report["connect_matches_accept"] is False:
        return 1
    if report.get("clients") and not report.get("login_ok"):
        failures = " ".join(
            f"{kind}={count}" for kind, count in sorted(report["errors"].items())
            if kind.startswith(("login", "game"))
        )  # fmt: skip
        log.error("no client got into the game (%s)", failures or "no login was answered")
        return 1
    return 0


async def run_local(
    config: Config,
    options: LoadOptions,
    accounts: list[tuple[int, bytes]],
    report_path: Path | None,
    csv_path: Path | None,
) -> int:
    engine = Engine(options, accounts)
    watch = AcceptWatch(config)
    await watch.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    console = Console("Dummy", engine.toggle_pause, stop.set)
    rows: list[dict[str, Any]] = []

    def on_second(stats: SecondStats) -> None:
        view = view_of(stats)
        rows.append(view.row())
        console.show(view)

    started = time.monotonic()
    try:
        with console.keys():
            totals = await engine.run(stop, on_second)
    except BaseException:
        await watch.close()
        raise
    duration = time.monotonic() - started
    accepted = await watch.finish()
    report = build_report(
        totals, engine.latency, duration=duration, clients=options.clients,
        accept_total=accepted.total, accept_note=accepted.note,
        accept_gateways=accepted.gateways, options=asdict(options),
        agents=[{"id": "local", "status": "finished", **totals.to_dict()}],
    )  # fmt: skip
    if engine.first_error:
        log.error("first packet error: %s", engine.first_error)
    print(summary(report), flush=True)
    if report_path is not None:
        write_report(report_path, report)
    if csv_path is not None:
        write_csv(csv_path, rows)
    return exit_code(report)
