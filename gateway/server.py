"""The gateway process lifecycle: bus link, listening sockets, timers, graceful stop.

Everything about sessions lives in :mod:`gateway.sessions`; this module only starts and stops it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter

import zmq

from cluster import runtime
from cluster.codec import Codec
from cluster.config import Config
from cluster.datalink import data_bind, gateway_data_port
from cluster.db import Database, open_database
from cluster.dispatch import Dispatcher
from cluster.link import bus_link
from cluster.security import SecurityError
from cluster.stats import ProcessSampler, Reporter
from gateway.sessions import Sessions, game_rules, login_rules
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


async def run(config: Config) -> int:
    gw = config.gateway
    codec = Codec(config.protocol.code, config.protocol.key1, config.protocol.key2)
    counters: Counter[str] = Counter()
    handlers: list[Dispatcher] = []

    def on_bus(frames: list[bytes]) -> None:
        handlers[0](frames)

    db: Database | None = None
    whitelist: WhiteList | None = None
    if gw.whiteip == "enforce":
        db = await open_database(config)
        whitelist = WhiteList(db, gw.whiteip_refresh)
        if not await whitelist.load():
            log.error("gateway.whiteip = enforce and no list could be read: admitting nobody yet")
        whitelist.start()

    try:
        data = gateway_data_port(
            config, counters, lambda worker, bodies: handlers[0].deliver(worker, bodies),
            lambda worker, reason: sessions.worker_gone(worker, reason, tell_worker=True),
        )  # fmt: skip
        await data.start()
    except (OSError, zmq.ZMQError) as exc:
        log.error("cannot bind gateway.data_bind %s: %s", data_bind(config), exc)
        return 1
    except SecurityError as exc:
        log.error("%s", exc)
        return 1
    info = {
        "game": f"{gw.public_host}:{gw.game_port}",
        "login": f"{gw.host}:{gw.login_port}",
        "data": data.endpoint,
    }
    link = bus_link(config, "gateway", on_bus, info=info, counters=counters)
    sessions = Sessions(
        codec, link, session_limit(gw.max_sessions), (gw.public_host, gw.game_port),
        whitelist.admit if whitelist is not None else None,
        max_outbound=gw.max_outbound, login_rate=gw.login_rate, data=data,
        max_inflight=gw.max_inflight, max_per_address=gw.max_per_address,
        stall_timeout=gw.stall_timeout, counters=counters,
    )  # fmt: skip
    handlers.append(Dispatcher(
        counters, items=sessions.replies, unroutable=sessions.unroutable, gone=sessions.gone,
        evicted=sessions.evicted, reset=sessions.reset, encodes_replies=True,
    ))  # fmt: skip
    loop = asyncio.get_running_loop()
    stop = runtime.stop_event()
    servers = []
    for key, port, rules in (
        ("game_port", gw.game_port, game_rules(gw.heartbeat_timeout)),
        ("login_port", gw.login_port, login_rules()),
    ):
        try:
            servers.append(
                await loop.create_server(sessions.factory(rules), gw.host, port, backlog=4096)
            )
        except OSError as exc:
            log.error("cannot listen on gateway.%s %s:%d: %s", key, gw.host, port, exc)
            for server in servers:
                server.close()
            return 1
    reporter = Reporter(
        link, ProcessSampler(link.identity.decode(), "gateway", sessions.collect), LOG_KEYS, log
    )
    await link.start()
    reporter.start()
    registered = asyncio.create_task(link.registered.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({registered, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        runtime.announce_ready(
            role="gateway", login=f"{gw.host}:{gw.login_port}", game=f"{gw.host}:{gw.game_port}",
            loop=runtime.loop_name(),
        )  # fmt: skip
        await _serve(sessions, config, stop)
    registered.cancel()
    # Drain: accept nothing more, let the logins in flight be answered (bounded), then close.
    for server in servers:
        server.close()
    reporter.stop(final=True)  # its last sample counts every accept
    deadline = time.monotonic() + min(gw.reply_timeout, DRAIN_TIMEOUT)
    while sessions.waiting() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    for conn in list(sessions.table.values()):
        sessions.closed(conn, "gateway_shutdown")
        conn.finish()
    sessions.flush()
    data.close()
    await link.close()
    if whitelist is not None:
        whitelist.stop()
    if db is not None:
        await db.close()
    bus_counters = " ".join(f"{k}={v}" for k, v in sorted(sessions.counters.items()))
    holds = " ".join(f"{k}={v}" for k, v in sorted(sessions.holds.items()))
    log.info("bus: %s held: %s", bus_counters or "none", holds or "none")
    log.info("stopped: %s %s", _accepted(sessions), format_drops(sessions.drops))
    return 0


def _accepted(sessions: Sessions) -> str:
    return " ".join(f"accepted_{port}={n}" for port, n in sorted(sessions.accepted.items()))


async def _serve(sessions: Sessions, config: Config, stop: asyncio.Event) -> None:
    """Sweep timeouts every second and log a summary when the drops changed."""
    last_drops: dict[str, int] = {}
    next_stats = time.monotonic() + STATS_INTERVAL
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL)
        except TimeoutError:
            pass
        now = time.monotonic()
        sessions.sweep(now, config.gateway.reply_timeout, config.gateway.login_timeout)
        if now >= next_stats:
            next_stats = now + STATS_INTERVAL
            if dict(sessions.drops) != last_drops:
                last_drops = dict(sessions.drops)
                log.info(
                    "sessions=%d %s %s", len(sessions.table), _accepted(sessions),
                    format_drops(sessions.drops),
                )  # fmt: skip


def serve(config: Config) -> int:
    """Run a gateway in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return runtime.run(run(config))
