"""The gateway role: its bus link, data port, listening sockets, sweeps and graceful stop, as
hooks of the one role lifecycle (:mod:`cluster.role`).

Everything about sessions lives in :mod:`gateway.sessions`; this module only starts and stops it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter

import zmq

from cluster import role
from cluster.codec import Codec
from cluster.config import Config
from cluster.datalink import GatewayDataPort, data_bind, gateway_data_port
from cluster.db import Database, open_database
from cluster.dispatch import Dispatcher
from cluster.link import bus_link
from cluster.role import Role, StartupError
from cluster.security import SecurityError
from cluster.stats import ProcessSampler, Reporter
from gateway.sessions import Sessions, chat_rules, game_rules, login_rules
from gateway.whiteip import WhiteList

log = logging.getLogger("gateway")

#: File descriptors kept free for the bus, logs and the listening sockets.
FD_RESERVE = 256
#: How often idle and unanswered sessions are looked for (seconds).
SWEEP_INTERVAL = 1.0
#: How often a changed drop summary is logged (seconds).
STATS_INTERVAL = 10.0
#: Longest wait, at stop, for the logins in flight (seconds).
DRAIN_TIMEOUT = 15.0
#: What the periodic summary line shows.
LOG_KEYS = ("sessions", "sessions_login", "sessions_game", "accept_tps_login", "accept_tps_game",
            "recv_tps", "send_tps")  # fmt: skip


def session_limit(wanted: int) -> int:
    """`wanted`, lowered (with a warning) so that sessions never exhaust the fd limit.

    The soft RLIMIT_NOFILE is raised to the hard limit first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    ceiling = max(1, soft - FD_RESERVE)
    if wanted > ceiling:
        log.warning(
            "gateway.max_sessions %d exceeds the fd limit %d less %d reserved; using %d",
            wanted, soft, FD_RESERVE, ceiling,
        )  # fmt: skip
        return ceiling
    return wanted


def format_drops(drops: dict[str, int]) -> str:
    """``drops: reason=count ...`` in a stable order (parsed by operators and tests)."""
    return "drops: " + (" ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none")


class GatewayRole(Role):
    """The gateway: its data port, its session table, its listening ports (login, game, and chat
    when ``[chat] enabled``; see
    :mod:`cluster.role` for the order its hooks run in)."""

    name = "gateway"
    final_sample = True  # its last sample counts every accept

    def __init__(self, config: Config) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self.db: Database | None = None
        self.whitelist: WhiteList | None = None
        self.data: GatewayDataPort | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.sessions: Sessions | None = None

    async def open(self) -> None:
        config, gw = self.config, self.config.gateway
        codec = Codec(config.protocol.code, config.protocol.key1, config.protocol.key2)
        dispatch: list[Dispatcher] = []  # the dispatcher needs the sessions, which need the link
        if gw.whiteip == "enforce":
            self.db = await open_database(config)
            self.whitelist = WhiteList(self.db, gw.whiteip_refresh)
            if not await self.whitelist.load():
                log.error("gateway.whiteip = enforce and no list could be read: admitting nobody")
            self.whitelist.start()
        try:
            self.data = gateway_data_port(
                config, self.counters, lambda worker, bodies: dispatch[0].deliver(worker, bodies),
                lambda worker, reason: sessions.worker_gone(worker, reason, tell_worker=True),
            )  # fmt: skip
            await self.data.start()
        except (OSError, zmq.ZMQError) as exc:
            raise StartupError(
                f"cannot bind gateway.data_bind {data_bind(config)}: {exc}"
            ) from None
        except SecurityError as exc:
            raise StartupError(str(exc)) from None
        chat = config.chat.enabled
        info = {
            "game": f"{gw.public_host}:{gw.game_port}",
            "login": f"{gw.host}:{gw.login_port}",
            "data": self.data.endpoint,
        }
        if chat:
            info["chat"] = f"{gw.public_host}:{gw.chat_port}"
        self.link = bus_link(
            config, "gateway", lambda frames: dispatch[0](frames), info=info,
            counters=self.counters,
        )  # fmt: skip
        sessions = self.sessions = Sessions(
            codec, self.link, session_limit(gw.max_sessions), (gw.public_host, gw.game_port),
            self.whitelist.admit if self.whitelist is not None else None,
            max_outbound=gw.max_outbound, login_rate=gw.login_rate, data=self.data,
            max_inflight=gw.max_inflight, fair_inflight=gw.fair_inflight,
            max_per_address=gw.max_per_address,
            stall_timeout=gw.stall_timeout, counters=self.counters,
            chat_address=(gw.public_host, gw.chat_port) if chat else None,
        )  # fmt: skip
        dispatch.append(Dispatcher(
            self.counters, items=sessions.replies, unroutable=sessions.unroutable,
            gone=sessions.gone, evicted=sessions.evicted, reset=sessions.reset,
            encodes_replies=True,
        ))  # fmt: skip
        loop = asyncio.get_running_loop()
        ports = [
            ("game_port", gw.game_port, game_rules(gw.heartbeat_timeout)),
            ("login_port", gw.login_port, login_rules()),
        ]
        if chat:
            ports.append(("chat_port", gw.chat_port, chat_rules(gw.heartbeat_timeout)))
        for key, port, rules in ports:
            try:
                server = await loop.create_server(
                    sessions.factory(rules), gw.host, port, backlog=4096
                )
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on gateway.{key} {gw.host}:{port}: {exc}"
                ) from None
            self.servers.append(server)
        self.reporter = Reporter(
            self.link, ProcessSampler(self.link.identity.decode(), "gateway", sessions.collect),
            LOG_KEYS, log,
        )  # fmt: skip

    def ready_fields(self) -> dict[str, object]:
        gw = self.config.gateway
        fields: dict[str, object] = {
            "login": f"{gw.host}:{gw.login_port}", "game": f"{gw.host}:{gw.game_port}",
        }  # fmt: skip
        if self.config.chat.enabled:
            fields["chat"] = f"{gw.host}:{gw.chat_port}"
        return fields

    async def serve(self, stop: asyncio.Event) -> None:
        """Sweep timeouts every second and log a summary when the closes changed (its own
        drops and the closes its workers asked for, together)."""
        assert self.sessions is not None
        sessions, gw = self.sessions, self.config.gateway
        last_drops: dict[str, int] = {}
        next_stats = time.monotonic() + STATS_INTERVAL
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL)
            except TimeoutError:
                pass
            now = time.monotonic()
            sessions.sweep(now, gw.reply_timeout, gw.login_timeout)
            if now >= next_stats:
                next_stats = now + STATS_INTERVAL
                closes = dict(sessions.all_closes())
                if closes != last_drops:
                    last_drops = closes
                    log.info(
                        "sessions=%d %s %s", len(sessions.table), _accepted(sessions),
                        format_drops(closes),
                    )  # fmt: skip

    async def drain(self) -> None:
        """Accept nothing more, let the logins in flight be answered (bounded), then close
        every client."""
        for server in self.servers:
            server.close()
        sessions = self.sessions
        assert sessions is not None
        deadline = time.monotonic() + min(self.config.gateway.reply_timeout, DRAIN_TIMEOUT)
        while sessions.waiting() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(sessions.table.values()):
            sessions.closed(conn, "gateway_shutdown")
            conn.finish()
        sessions.flush()

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        if self.data is not None:
            self.data.close()
        await super().close()
        if self.whitelist is not None:
            self.whitelist.stop()
        if self.db is not None:
            await self.db.close()
        sessions = self.sessions
        if sessions is not None:
            bus_counters = " ".join(f"{k}={v}" for k, v in sorted(sessions.counters.items()))
            holds = " ".join(f"{k}={v}" for k, v in sorted(sessions.holds.items()))
            log.info("bus: %s held: %s", bus_counters or "none", holds or "none")
            closes = dict(sessions.all_closes())
            log.info("stopped: %s %s", _accepted(sessions), format_drops(closes))


def _accepted(sessions: Sessions) -> str:
    """``accepted_game=N accepted_login=M`` (``accepted=none`` before the first accept)."""
    per_port = sorted(sessions.accepted.items())
    return " ".join(f"accepted_{port}={n}" for port, n in per_port) or "accepted=none"


def serve(config: Config) -> int:
    """Run a gateway in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return role.serve(GatewayRole(config))
