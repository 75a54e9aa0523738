"""`cluster dummy run`: a load engine in this process (echo or chat), with its screen, report
and checks; and both engines at once for `cluster demo`.

Through the run it follows the gateways' samples at the cluster's monitor (:mod:`dummy.accept`),
so the report can state the original's closing check: every TCP connect the dummy made
(connect_total) against what the gateways accepted in the same time (accept_total, every port).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import Config
from dummy import html_report
from dummy.accept import AcceptFigure, AcceptWatch
from dummy.accounts import Account, read_range
from dummy.chat_engine import ChatAccount, ChatEngine, ChatOptions, ChatSecond
from dummy.console import Console
from dummy.engine import Engine, LoadOptions, SecondStats
from dummy.report import (
    ChatView,
    View,
    Views,
    accept_lines,
    build_chat_report,
    build_report,
    chat_summary,
    summary,
    write_csv,
    write_report,
)

log = logging.getLogger("dummy")

#: The apps the dummy can load: the game port's echo, the chat port's sector chat.
APPS = ("echo", "chat")


def options_from(config: Config, **knobs: Any) -> LoadOptions:
    """Echo run options aimed at the cluster `config` describes (its public addresses, its web
    login and codec)."""
    gw, proto = config.gateway, config.protocol
    return LoadOptions(
        login_host=gw.public_host, login_port=gw.login_port,
        game_host=gw.public_host, game_port=gw.game_port,
        web_host=config.web.host, web_port=config.web.port,
        code=proto.code, key1=proto.key1, key2=proto.key2, version=config.game.version,
        **knobs,
    )  # fmt: skip


def chat_options_from(config: Config, **knobs: Any) -> ChatOptions:
    """Chat run options aimed at the cluster `config` describes: its login and chat ports, its
    codec, and heartbeats often enough for its heartbeat timeout (`knobs` may set any option)."""
    gw, proto = config.gateway, config.protocol
    heartbeat = 30.0  # the original client's period
    if gw.heartbeat_timeout:
        heartbeat = min(heartbeat, gw.heartbeat_timeout / 2)
    return ChatOptions(**{
        "login_host": gw.public_host, "login_port": gw.login_port,
        "chat_host": gw.public_host, "chat_port": gw.chat_port,
        "web_host": config.web.host, "web_port": config.web.port,
        "code": proto.code, "key1": proto.key1, "key2": proto.key2,
        "heartbeat_interval": heartbeat,
        **knobs,
    })  # fmt: skip


def load_accounts(
    path: str | Path, first: str | None = None, last: str | None = None
) -> list[Account]:
    """The lines of an accounts file (4 or 5 columns, see :mod:`dummy.accounts`), for the echo
    load: every line, or those of an AccountNo range (`path` FILE:START-END, or `first` and
    `last`: :func:`dummy.accounts.read_range`); ValueError naming a bad line or range."""
    return read_range(path, first, last)


def load_chat_accounts(
    path: str | Path, first: str | None = None, last: str | None = None
) -> list[ChatAccount]:
    """As :func:`load_accounts`, for the chat load (which needs the ID and Nickname)."""
    return read_range(path, first, last)


def view_of(stats: SecondStats, paused: bool = False) -> View:
    return View(
        elapsed=stats.elapsed, clients=stats.clients, in_login=stats.in_login,
        in_game=stats.in_game, reply_wait=stats.reply_wait, send_tps=stats.send_tps,
        recv_tps=stats.recv_tps, totals=stats.totals, latency=stats.latency,
        action_delay_ms=stats.action_delay_ms, paused=paused, disconnected=stats.disconnected,
        shape=stats.shape,
    )  # fmt: skip


def chat_view_of(stats: ChatSecond, paused: bool = False) -> ChatView:
    return ChatView(
        elapsed=stats.elapsed, clients=stats.clients, in_login=stats.in_login,
        in_chat=stats.in_chat, connected=stats.connected, reply_wait=stats.reply_wait,
        send_tps=stats.send_tps, recv_tps=stats.recv_tps, totals=stats.totals,
        latency=stats.latency, action_delay_ms=stats.action_delay_ms, paused=paused,
        shape=stats.shape,
    )  # fmt: skip


def exit_code(report: dict[str, Any]) -> int:
    """1 when something that must never happen happened (packet errors or, for chat, any check
    error; a connect mismatch), or when the run did not do what it was asked: clients ran and
    not one logged in (the reason is logged: the login failures by status)."""
    chat = report.get("app") == "chat"
    if chat and report.get("check_errors"):
        return 1
    if report["errors"].get("packet_error") or report["connect_matches_accept"] is False:
        return 1
    if report.get("clients") and not report.get("login_ok"):
        failures = " ".join(
            f"{kind}={count}" for kind, count in sorted(report["errors"].items())
            if kind.startswith(("web", "login", "game", "chat"))
        )  # fmt: skip
        where = "the chat port" if chat else "the game"
        log.error("no client got into %s (%s)", where, failures or "no login was answered")
        return 1
    return 0


@dataclass
class Load:
    """One engine of a run in this process, and what the console last showed of it."""

    name: str  # "game" or "chat"
    engine: Engine | ChatEngine
    view: View | ChatView | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)  # the HTML report's seconds

    def on_second(self, stats: SecondStats | ChatSecond) -> View | ChatView:
        if isinstance(stats, ChatSecond):
            self.view = chat_view_of(stats)
        else:
            self.view = view_of(stats)
        self.rows.append(self.view.row())
        self.points.append(html_report.point(self.view))
        return self.view


async def run_loads(config: Config, loads: list[Load], title: str) -> tuple[float, AcceptFigure]:
    """Run every engine of `loads` at once, with one console (S pauses them all, Q stops
    them) and the accept figure of the whole run; returns the duration and that figure."""
    watch = AcceptWatch(config)
    await watch.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def toggle_pause() -> bool:
        paused = not loads[0].engine.paused
        for load in loads:
            load.engine.paused = paused
        return paused

    console = Console(title, toggle_pause, stop.set)

    def shower(load: Load) -> Callable[[Any], None]:
        def on_second(stats: Any) -> None:
            view = load.on_second(stats)
            if len(loads) == 1:
                console.show(view)
            elif load is loads[-1]:
                console.show(Views([(x.name, x.view) for x in loads if x.view is not None]))

        return on_second

    started = time.monotonic()
    try:
        with console.keys():
            await asyncio.gather(*(load.engine.run(stop, shower(load)) for load in loads))
    except BaseException:
        await watch.close()
        raise
    duration = time.monotonic() - started
    return duration, await watch.finish()


def _report(load: Load, duration: float, accepted: AcceptFigure | None) -> dict[str, Any]:
    """The report of one load; `accepted` None when the figure covers several loads."""
    engine = load.engine
    if accepted is None:
        accepted = AcceptFigure(None, "counted for all the loads of the run together")
    build = build_chat_report if isinstance(engine, ChatEngine) else build_report
    return build(
        engine.totals, engine.latency, duration=duration,  # type: ignore[arg-type]
        clients=engine.options.clients, accept_total=accepted.total, accept_note=accepted.note,
        accept_gateways=accepted.gateways, options=asdict(engine.options),
        agents=[{"id": "local", "status": "finished", **engine.totals.to_dict()}],
    )  # fmt: skip


def _first_error(load: Load) -> None:
    if load.engine.first_error:
        what = "check error" if load.name == "chat" else "packet error"
        log.error("%s: first %s: %s", load.name, what, load.engine.first_error)


async def run_local(
    config: Config,
    options: LoadOptions | ChatOptions,
    accounts: list[Account],
    report_path: Path | None,
    csv_path: Path | None,
    html_path: Path | None = None,
) -> int:
    """One load (echo with LoadOptions, chat with ChatOptions) from this process."""
    if isinstance(options, ChatOptions):
        load = Load("chat", ChatEngine(options, accounts))
        title = "Chat Dummy"
    else:
        load = Load("game", Engine(options, accounts))
        title = "Dummy"
    duration, accepted = await run_loads(config, [load], title)
    report = _report(load, duration, accepted)
    _first_error(load)
    closing = chat_summary(report) if load.name == "chat" else summary(report)
    print(closing, flush=True)
    if report_path is not None:
        write_report(report_path, report)
    if csv_path is not None:
        write_csv(csv_path, load.rows)
    if html_path is not None:
        html_report.write_html(
            html_path, report, load.points, load.engine.totals.to_dict(),
            passed=exit_code(report) == 0, closing=closing, link_mode=config.cluster.link_mode,
        )  # fmt: skip
    return exit_code(report)


async def run_together(
    config: Config,
    game: tuple[LoadOptions, list[Account]],
    chat: tuple[ChatOptions, list[ChatAccount]],
    report_path: Path | None,
) -> int:
    """The game and the chat load at once (the demo), one screen, one connect check for both:
    the report has the two loads' reports under ``game`` and ``chat`` and the check at the top
    (connect_total of both against every port's accepts)."""
    loads = [Load("game", Engine(*game)), Load("chat", ChatEngine(*chat))]
    duration, accepted = await run_loads(config, loads, "Demo")
    parts = {load.name: _report(load, duration, None) for load in loads}
    connect_total = sum(part["connect_total"] for part in parts.values())
    report: dict[str, Any] = {
        "duration_s": round(duration, 3),
        "connect_total": connect_total,
        "accept_total": accepted.total,
        "connect_matches_accept": (
            None if accepted.total is None else accepted.total == connect_total
        ),
        "accept_note": accepted.note,
        "accept_gateways": accepted.gateways or [],
        **parts,
    }
    for load in loads:
        _first_error(load)
    print("game: " + summary(parts["game"], accept_check=False), flush=True)
    print("chat: " + chat_summary(parts["chat"], accept_check=False), flush=True)
    print(accept_lines(report), flush=True)
    if report_path is not None:
        write_report(report_path, report)
    codes = [exit_code(part) for part in parts.values()]
    return 1 if any(codes) or report["connect_matches_accept"] is False else 0
