"""The monitor role: every process's 1-second samples in one place (one monitor per cluster).

It keeps the latest sample of every process (they arrive over the bus as STATS, through the
broker); a process that sent nothing for :data:`GONE_AFTER` seconds is shown as gone, and
forgotten after :data:`FORGET_AFTER`. From that table it:

- writes ``status_server`` rows every ``[monitor] db_interval`` seconds: one ``battle`` row per
  game worker, one ``chat`` row per chat worker, one ``login`` row per auth worker, one
  ``hardware`` row per host, each with the latest sample's values and the process (or host) it
  describes in ``writer``;
- answers STATUS queries on the bus (``cluster status``, the console screens of ``cluster up``);
- keeps the last ``[monitor] history_seconds`` of the charted figures in memory
  (:mod:`cluster.dashboard.history`);
- serves the live dashboard at ``GET /``, its JSON API (``/api/series``, ``/api/history``),
  ``GET /metrics`` (Prometheus text) and ``GET /status.json`` on
  ``[monitor] metrics_host:metrics_port`` (:mod:`cluster.dashboard.server`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from cluster import bus, monitor_tool, role
from cluster.bus import Item
from cluster.config import Config
from cluster.dashboard import server as web
from cluster.dashboard.history import History
from cluster.db import (
    BattleSample,
    ChatSample,
    Database,
    DatabaseError,
    HardwareSample,
    LoginSample,
    open_database,
)
from cluster.dispatch import Dispatcher
from cluster.link import BusLink, bus_link
from cluster.role import Role, StartupError
from cluster.stats import SAMPLE_INTERVAL, ProcessSampler, Sample

log = logging.getLogger("cluster.monitor")

GONE_AFTER = 3 * SAMPLE_INTERVAL
FORGET_AFTER = 300.0
STATUS = bus.Control.STATUS


@dataclass
class Entry:
    sample: Sample
    received_at: float  # monotonic


class Monitor:
    """The table of latest samples and what is derived from it."""

    def __init__(self, history_seconds: int = 3600) -> None:
        self.entries: dict[str, Entry] = {}
        self.link: BusLink | None = None
        self.counters: Counter[str] = Counter()
        self.history = History(history_seconds)

    def dispatcher(self) -> Dispatcher:
        """The bus dispatcher that feeds this monitor."""
        return Dispatcher(self.counters, stats=self.stats, items=self.items)

    def record(self, sample: Sample) -> None:
        """Keep `sample` as its process's latest, and chart it (ignored without a string ``id``
        and ``role``)."""
        ident = sample.get("id")
        if isinstance(ident, str) and isinstance(sample.get("role"), str):
            self.entries[ident] = Entry(sample, time.monotonic())
            self.history.record(sample)

    def live(self) -> list[Sample]:
        return [e.sample for e in self._aged() if e.sample["heartbeat_age_s"] <= GONE_AFTER]

    def gone(self) -> list[Sample]:
        return [e.sample for e in self._aged() if e.sample["heartbeat_age_s"] > GONE_AFTER]

    def _aged(self) -> list[Entry]:
        now = time.monotonic()
        for ident in [i for i, e in self.entries.items() if now - e.received_at > FORGET_AFTER]:
            del self.entries[ident]
        aged = []
        for entry in self.entries.values():
            sample = dict(entry.sample, heartbeat_age_s=round(now - entry.received_at, 3))
            aged.append(Entry(sample, entry.received_at))
        return sorted(aged, key=lambda e: (_ROLE_ORDER.get(e.sample["role"], 9), e.sample["id"]))

    def snapshot(self) -> dict[str, Any]:
        """What STATUS and /status.json answer: live processes and gone ones."""
        return {"processes": self.live(), "gone": self.gone(), "time": time.time()}

    def stats(self, source: bytes, sample: dict[str, Any]) -> None:
        """A process's 1-second sample, relayed by the broker."""
        try:
            self.record(sample)
        except (KeyError, TypeError, ValueError):
            self.counters["bad_sample"] += 1
            log.warning("malformed sample from %r", source[:64])

    def items(self, source: bytes, items: list[Item]) -> None:
        """A STATUS question (from `cluster status`): answer with the snapshot."""
        if any(mtype == STATUS for _, mtype, _ in items):
            assert self.link is not None
            reply = bus.pack_body([[0, STATUS, self.snapshot()]])
            self.link.send([bus.TO, source, reply])

    async def write_rows(self, db: Database) -> int:
        """One status_server row per live game worker, chat worker, auth worker and host;
        returns how many. A login row's SessionAll is the sessions on the login ports of the
        whole cluster (the live gateways' ``sessions_login`` added up), the same figure in each
        auth worker's row: the original had one login server, which counted its sessions."""
        written = 0
        hosts: dict[str, Sample] = {}
        live = self.live()
        login_sessions = sum(_int(s, "sessions_login") for s in live if s["role"] == "gateway")
        for sample in live:
            host = str(sample.get("host", ""))
            if isinstance(sample.get("hw"), dict) and (
                host not in hosts or sample["time"] > hosts[host]["time"]
            ):
                hosts[host] = sample
            common = {
                "cpu_usage": _int(sample, "cpu_percent"),
                "commit_memory": _int(sample, "memory_mb"),
                "packet_pool": _int(sample, "packet_pool"),
                "writer": sample["id"],
            }
            if sample["role"] == "game":
                await db.insert_battle(BattleSample(
                    auth_fps=_int(sample, "auth_fps"), game_fps=_int(sample, "game_fps"),
                    session_all=_int(sample, "sessions"),
                    session_auth=_int(sample, "session_auth"),
                    session_game=_int(sample, "session_game"), **common,
                ))  # fmt: skip
                written += 1
            elif sample["role"] == "chat":
                await db.insert_chat(ChatSample(
                    session_all=_int(sample, "sessions"),
                    session_login=_int(sample, "session_login"), **common,
                ))  # fmt: skip
                written += 1
            elif sample["role"] == "auth":
                await db.insert_login(LoginSample(
                    session_all=login_sessions,
                    login_success_tps=_int(sample, "login_success_tps"), **common,
                ))  # fmt: skip
                written += 1
        for host, sample in hosts.items():
            hw = sample["hw"]
            await db.insert_hardware(HardwareSample(
                cpu_usage=_int(hw, "cpu_total"), available_mbytes=_int(hw, "available_mb"),
                nonpaged_mbytes=_int(hw, "nonpaged_mb"), writer=host,
            ))  # fmt: skip
            written += 1
        return written


_ROLE_ORDER = {"broker": 0, "monitor": 1, "gateway": 2, "auth": 3, "game": 4, "chat": 5}


def _int(values: dict[str, Any], key: str) -> int:
    value = values.get(key, 0)
    return round(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


async def _rows_forever(monitor: Monitor, db: Database, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            written = await monitor.write_rows(db)
        except DatabaseError as exc:
            log.warning("status_server rows not written (next try in %.0fs): %s", interval, exc)
            continue
        log.info("wrote %d status_server rows", written)


async def _sample_self(monitor: Monitor, sampler: ProcessSampler) -> None:
    while True:
        await asyncio.sleep(SAMPLE_INTERVAL)
        monitor.record(sampler.sample())


class MonitorRole(Role):
    """The monitor process: its bus link, its metrics HTTP port, its DB rows (see
    :mod:`cluster.role` for the order its hooks run in). It samples itself (no reporter)."""

    name = "monitor"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.monitor = Monitor(config.monitor.history_seconds)
        self.server: asyncio.AbstractServer | None = None
        self.tool_server: asyncio.AbstractServer | None = None
        self.db: Database | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        mon, monitor = self.config.monitor, self.monitor
        self.link = monitor.link = bus_link(
            self.config, "monitor", monitor.dispatcher(), counters=monitor.counters
        )
        site = web.Site(monitor)
        try:
            self.server = await asyncio.start_server(
                lambda r, w: web.handle(site, r, w),
                mon.metrics_host,
                mon.metrics_port,
                limit=web.MAX_LINE,
            )
        except OSError as exc:
            raise StartupError(
                f"cannot listen on monitor.metrics_port {mon.metrics_host}:{mon.metrics_port}: "
                f"{exc}"
            ) from None
        self.tool_server = await monitor_tool.open_tool_port(self.config, monitor)
        self.db = site.db = await open_database(self.config)
        sampler = ProcessSampler(self.link.identity.decode(), "monitor", lambda: {
            "processes": len(monitor.live()),
            **monitor_tool.sample_fields(monitor.counters),
        })  # fmt: skip
        self.tasks = [
            asyncio.create_task(_rows_forever(monitor, self.db, mon.db_interval)),
            asyncio.create_task(_sample_self(monitor, sampler)),
        ]

    def ready_fields(self) -> dict[str, object]:
        mon = self.config.monitor
        host = mon.metrics_host
        base = f"http://{f'[{host}]' if ':' in host else host}:{mon.metrics_port}"
        return {"metrics": f"{base}/metrics", "dashboard": f"{base}/"}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for server in (self.server, self.tool_server):
            if server is not None:
                server.close()
        await super().close()
        if self.db is not None:
            await self.db.close()


def serve(config: Config) -> int:
    """Run the monitor in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return role.serve(MonitorRole(config))
