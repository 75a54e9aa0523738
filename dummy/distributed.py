"""Distributed load: one controller, N agents on any hosts, over ZeroMQ (msgpack messages).

Messages (the first frame names the kind; the second is a msgpack map):

=========  ====================  ===============================================================
kind       direction             map
=========  ====================  ===============================================================
HELLO      agent -> controller   ``{"host", "pid"}``, repeated until START arrives
START      controller -> agent   ``{"app": "echo"|"chat", "options": LoadOptions (echo) or
                                 ChatOptions (chat) fields, "accounts": [[no, id, nick, key,
                                 password], ...]}`` (the lines of the accounts file; the
                                 password is "" when it lists none)
SECOND     agent -> controller   one second: counts, cumulative ``totals``, ``latency`` (that
                                 second's histogram); also the agent's heartbeat
HB         controller -> agent   the controller is alive (every second)
STOP       controller -> agent   end the run now
FINAL      agent -> controller   ``{"totals", "latency"}`` of the whole run; then the agent exits
=========  ====================  ===============================================================

The app (``--app``) is the controller's: every agent runs the engine it names
(:mod:`dummy.engine` for echo, :mod:`dummy.chat_engine` for chat). The controller waits for N
agents, gives each a share of the clients and a disjoint slice of the accounts, starts them
together, merges their seconds into one screen and one report, and stops them all at the end.
``--threads`` is per agent (as each of the original's dummy processes had its threads), capped at
the agent's share of the clients; the screen sums them.
With ``--path web`` every agent's clients log in on the web login themselves (one web client per
agent), so the web role's per-address rate limit applies to each agent host separately.
An agent silent for :data:`AGENT_TIMEOUT` seconds is marked lost: the run goes on with the
others and the report says so (counting what the lost agent reported until then). An agent
whose controller falls silent for :data:`CONTROLLER_TIMEOUT` seconds stops on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from cluster.config import Config
from dummy import html_report
from dummy.accept import AcceptWatch
from dummy.accounts import Account
from dummy.chat_engine import ChatEngine, ChatOptions, ChatSecond, ChatTotals
from dummy.console import Console
from dummy.engine import Counters, Engine, LoadOptions, SecondStats, Totals
from dummy.histogram import Histogram
from dummy.report import (
    ChatView,
    View,
    build_chat_report,
    build_report,
    chat_summary,
    summary,
    write_csv,
    write_report,
)
from dummy.run import exit_code

log = logging.getLogger("dummy")

HELLO, START, SECOND, HB, STOP, FINAL = b"HELLO", b"START", b"SECOND", b"HB", b"STOP", b"FINAL"
AGENT_TIMEOUT = 3.0
CONTROLLER_TIMEOUT = 10.0
FINAL_TIMEOUT = 20.0


def _pack(data: dict[str, Any]) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


def _unpack(frame: bytes) -> dict[str, Any]:
    data = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    if not isinstance(data, dict):
        raise ValueError("not a map")
    return data


def split(count: int, parts: int) -> list[int]:
    """`count` split into `parts` shares that differ by at most one."""
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


@dataclass
class Agent:
    """The controller's record of one agent."""

    identity: bytes
    host: str
    pid: int
    clients: int = 0
    status: str = "waiting"  # waiting | running | finished | lost
    last_heard: float = field(default_factory=time.monotonic)
    second: dict[str, Any] | None = None  # its latest SECOND
    totals: Counters = field(default_factory=Totals)  # Totals (echo) or ChatTotals (chat)
    seconds_latency: Histogram = field(default_factory=Histogram)  # merged from its SECONDs
    final_latency: Histogram | None = None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.pid}"

    def record(self) -> dict[str, Any]:
        return {"id": self.name, "status": self.status, "clients": self.clients,
                **self.totals.to_dict()}  # fmt: skip


# -- controller ------------------------------------------------------------------------------------


class Controller:
    def __init__(self, config: Config, listen: str, expected: int,
                 options: LoadOptions | ChatOptions, accounts: list[Account]) -> None:  # fmt: skip
        options.check()
        if len(accounts) < options.clients:
            raise ValueError(f"{options.clients} clients need {options.clients} accounts, "
                             f"the list has {len(accounts)}")  # fmt: skip
        if options.clients < expected:
            raise ValueError(f"{expected} agents need at least {expected} clients")
        self.config = config
        self.app = "chat" if isinstance(options, ChatOptions) else "echo"
        self.totals_type: type[Counters] = ChatTotals if self.app == "chat" else Totals
        self.listen = listen
        self.expected = expected
        self.options = options
        self.accounts = accounts
        self.context = zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.bind(listen)
        self.agents: dict[bytes, Agent] = {}
        self.stop = asyncio.Event()
        self.paused = False
        self.points: list[dict[str, Any]] = []  # the HTML report's seconds (merged views)

    def _send(self, agent: Agent, kind: bytes, data: dict[str, Any] | None = None) -> None:
        try:
            self.socket.send_multipart([agent.identity, kind, _pack(data or {})], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a lost agent; noticed by its silence

    async def _receive(self, timeout: float) -> tuple[bytes, bytes, dict[str, Any]] | None:
        if not await self.socket.poll(int(timeout * 1000)):
            return None
        frames = await self.socket.recv_multipart()
        if len(frames) < 3:
            return None
        try:
            return frames[0], frames[1], _unpack(frames[2])
        except ValueError:
            return None

    async def gather(self, timeout: float) -> None:
        """Wait until `expected` agents said HELLO."""
        deadline = time.monotonic() + timeout
        while len(self.agents) < self.expected:
            if self.stop.is_set():
                raise RuntimeError("interrupted while waiting for agents")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"only {len(self.agents)} of {self.expected} agents "
                                   f"connected to {self.listen} within {timeout:.0f}s")  # fmt: skip
            got = await self._receive(min(left, 0.5))
            if got is not None and got[1] == HELLO and got[0] not in self.agents:
                data = got[2]
                agent = Agent(got[0], str(data.get("host", "?")), int(data.get("pid", 0)))
                self.agents[got[0]] = agent
                log.info("agent %s connected (%d/%d)", agent.name, len(self.agents),
                         self.expected)  # fmt: skip

    def start_all(self) -> None:
        shares = split(self.options.clients, len(self.agents))
        first = 0
        for agent, share in zip(self.agents.values(), shares, strict=True):
            accounts = self.accounts[first : first + share]
            first += share
            agent.clients = share
            agent.status = "running"
            agent.last_heard = time.monotonic()
            # The controller ends the run (STOP); the agent's own clock is only a safety net.
            options = asdict(self.options) | {
                "clients": share,
                "duration": self.options.duration + CONTROLLER_TIMEOUT,
                "threads": min(self.options.threads, share),  # --threads is per agent
            }
            agent.totals = self.totals_type()
            self._send(agent, START, {"app": self.app, "options": options,
                                      "accounts": [list(a) for a in accounts]})  # fmt: skip

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        for agent in self.agents.values():
            if agent.status == "running":
                self._send(agent, b"PAUSE" if self.paused else b"RESUME")
        return self.paused

    def _view(self, elapsed: float, latency: Histogram) -> View | ChatView:
        totals = self.totals_type()
        maps = []
        lost = 0
        for agent in self.agents.values():
            totals.add(agent.totals)
            if agent.status == "lost":
                lost += 1
            elif agent.second is not None:
                maps.append(agent.second)
        kind = ChatView if self.app == "chat" else View
        return kind.from_maps(maps, totals, latency, elapsed, len(self.agents), lost)  # type: ignore[arg-type]

    async def run(self, console: Console) -> tuple[list[dict[str, Any]], float]:
        """Drive the run; returns the per-second rows and the duration."""
        rows: list[dict[str, Any]] = []
        started = time.monotonic()
        end = started + self.options.duration
        next_view = started + 1.0
        second_latency = Histogram()
        while not self.stop.is_set() and time.monotonic() < end:
            if not any(a.status == "running" for a in self.agents.values()):
                if all(a.status == "lost" for a in self.agents.values()):
                    log.error("every agent is lost; ending the run")
                break
            got = await self._receive(0.2)
            now = time.monotonic()
            if got is not None:
                self._handle(*got, second_latency)
            for agent in self.agents.values():
                if agent.status == "running" and now - agent.last_heard > AGENT_TIMEOUT:
                    agent.status = "lost"
                    log.error("agent %s lost (silent for %.0fs); the run goes on without it",
                              agent.name, now - agent.last_heard)  # fmt: skip
            if now >= next_view:
                next_view = now + 1.0
                for agent in self.agents.values():
                    if agent.status == "running":
                        self._send(agent, HB)
                view = self._view(now - started, second_latency)
                second_latency = Histogram()
                rows.append(view.row())
                self.points.append(html_report.point(view))
                console.show(view)
        duration = time.monotonic() - started
        await self._finish()
        return rows, duration

    def _handle(self, identity: bytes, kind: bytes, data: dict[str, Any],
                second_latency: Histogram) -> None:  # fmt: skip
        agent = self.agents.get(identity)
        if agent is None or agent.status == "lost":
            return
        agent.last_heard = time.monotonic()
        if kind == SECOND:
            agent.second = data
            agent.totals = self.totals_type.from_dict(data["totals"])
            latency = Histogram.from_dict(data["latency"])
            agent.seconds_latency.merge(latency)
            second_latency.merge(latency)
        elif kind == FINAL:
            agent.totals = self.totals_type.from_dict(data["totals"])
            agent.final_latency = Histogram.from_dict(data["latency"])
            agent.status = "finished"

    async def _finish(self) -> None:
        """STOP every running agent and collect its FINAL."""
        for agent in self.agents.values():
            if agent.status == "running":
                self._send(agent, STOP)
        deadline = time.monotonic() + FINAL_TIMEOUT
        while any(a.status == "running" for a in self.agents.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = await self._receive(min(left, 0.5))
            if got is not None:
                self._handle(*got, Histogram())
            now = time.monotonic()
            for agent in self.agents.values():
                if agent.status == "running" and now - agent.last_heard > FINAL_TIMEOUT / 2:
                    agent.status = "lost"
        for agent in self.agents.values():
            if agent.status == "running":
                agent.status = "lost"
                log.error("agent %s sent no final report", agent.name)

    def latency(self) -> Histogram:
        return Histogram.merged(
            a.final_latency if a.final_latency is not None else a.seconds_latency
            for a in self.agents.values()
        )

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


async def run_controller(
    config: Config, listen: str, expected: int, options: LoadOptions | ChatOptions,
    accounts: list[Account], report_path: Path | None,
    csv_path: Path | None, wait: float, html_path: Path | None = None,
) -> int:  # fmt: skip
    controller = Controller(config, listen, expected, options, accounts)
    watch = AcceptWatch(config)  # the accept figure comes from the monitor, once
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, controller.stop.set)
    chat = controller.app == "chat"
    try:
        log.info("waiting for %d agents on %s", expected, listen)
        await controller.gather(wait)
        await watch.start()
        controller.start_all()
        title = "Chat dummy controller" if chat else "Dummy controller"
        console = Console(title, controller.toggle_pause, controller.stop.set)
        with console.keys():
            rows, duration = await controller.run(console)
        accepted = await watch.finish()
        totals = controller.totals_type()
        for agent in controller.agents.values():
            totals.add(agent.totals)
        build = build_chat_report if chat else build_report
        report = build(
            totals, controller.latency(), duration=duration,  # type: ignore[arg-type]
            clients=options.clients, accept_total=accepted.total, accept_note=accepted.note,
            accept_gateways=accepted.gateways, options=asdict(options),
            agents=[a.record() for a in controller.agents.values()],
        )  # fmt: skip
        closing = chat_summary(report) if chat else summary(report)
        print(closing, flush=True)
        if report_path is not None:
            write_report(report_path, report)
        if csv_path is not None:
            write_csv(csv_path, rows)
        if html_path is not None:
            html_report.write_html(
                html_path, report, controller.points, totals.to_dict(),
                passed=exit_code(report) == 0, closing=closing,
                link_mode=config.cluster.link_mode,
            )  # fmt: skip
        return exit_code(report)
    finally:
        await watch.close()
        controller.close()


# -- agent -----------------------------------------------------------------------------------------


async def run_agent(controller_endpoint: str) -> int:
    """Serve one run for the controller at `controller_endpoint`, then exit."""
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(controller_endpoint)
    hello = _pack({"host": socket.gethostname(), "pid": os.getpid()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        log.info("agent: connecting to controller %s", controller_endpoint)
        start: dict[str, Any] | None = None
        while start is None and not stop.is_set():
            await sock.send_multipart([HELLO, hello])
            if await sock.poll(1000):
                kind, data = await sock.recv_multipart()
                if kind == START:
                    start = _unpack(data)
        if start is None:
            return 1
        engine = _engine(start)
        options = engine.options
        log.info("agent: running %d %s clients for %.0fs", options.clients,
                 start.get("app", "echo"), options.duration)  # fmt: skip
        last_heard = time.monotonic()

        def on_second(stats: SecondStats | ChatSecond) -> None:
            sock.send_multipart([SECOND, _pack(stats.to_map())])

        async def listen() -> None:
            nonlocal last_heard
            while not stop.is_set():
                if await sock.poll(500):
                    kind, _ = await sock.recv_multipart()
                    last_heard = time.monotonic()
                    if kind == STOP:
                        stop.set()
                    elif kind == b"PAUSE":
                        engine.paused = True
                    elif kind == b"RESUME":
                        engine.paused = False
                elif time.monotonic() - last_heard > CONTROLLER_TIMEOUT:
                    log.error("agent: controller silent for %.0fs; stopping", CONTROLLER_TIMEOUT)
                    stop.set()

        listener = asyncio.create_task(listen())
        totals: Counters = await engine.run(stop, on_second)
        listener.cancel()
        await sock.send_multipart(
            [FINAL, _pack({"totals": totals.to_dict(), "latency": engine.latency.to_dict()})]
        )
        log.info("agent: done (%d connects)", totals.connect_total)  # type: ignore[attr-defined]
        return 0
    finally:
        sock.close()
        context.term()


def _engine(start: dict[str, Any]) -> Engine | ChatEngine:
    """The engine a START message asks for."""
    app = start.get("app", "echo")
    accounts = [Account(int(no), str(uid), str(nick), bytes(key), str(password))
                for no, uid, nick, key, password in start["accounts"]]  # fmt: skip
    if app == "chat":
        return ChatEngine(ChatOptions(**start["options"]), accounts)
    if app != "echo":
        raise ValueError(f"unknown app {app!r}")
    return Engine(LoadOptions(**start["options"]), accounts)
