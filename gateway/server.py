"""The gateway process lifecycle: bus link, listening sockets, timers, graceful stop.

Everything about sessions lives in the port modules; this module only starts and stops them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time

from cluster import runtime
from cluster.codec import Codec
from cluster.config import Config
from cluster.link import BusLink
from gateway.game_port import GamePort

log = logging.getLogger("gateway")

#: File descriptors kept free for the bus, logs and the listening sockets.
FD_RESERVE = 256
#: How often idle and unanswered sessions are looked for (seconds).
SWEEP_INTERVAL = 1.0
#: How often a changed drop summary is logged (seconds).
STATS_INTERVAL = 10.0


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
            wanted,
            soft,
            FD_RESERVE,
            ceiling,
        )
        return ceiling
    return wanted


async def run(config: Config) -> int:
    gw = config.gateway
    codec = Codec(config.protocol.code, config.protocol.key1, config.protocol.key2)
    port: GamePort | None = None

    def on_bus(frames: list[bytes]) -> None:
        assert port is not None
        port.on_bus(frames)

    link = BusLink(
        config.broker.endpoint,
        "gateway",
        on_bus,
        interval=config.broker.heartbeat_interval,
        liveness=config.broker.heartbeat_liveness,
        info={"game": f"{gw.public_host}:{gw.game_port}"},
    )
    port = GamePort(codec, link, session_limit(gw.max_sessions))
    loop = asyncio.get_running_loop()
    stop = runtime.stop_event()
    try:
        server = await loop.create_server(port.protocol, gw.host, gw.game_port, backlog=4096)
    except OSError as exc:
        log.error("cannot listen on gateway.game_port %s:%d: %s", gw.host, gw.game_port, exc)
        return 1
    await link.start()
    registered = asyncio.create_task(link.registered.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({registered, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        registered.cancel()
        server.close()
        await link.close()
        return 0
    runtime.announce_ready(
        role="gateway", game=f"{gw.host}:{gw.game_port}", loop=runtime.loop_name()
    )

    last_drops: dict[str, int] = {}
    next_stats = time.monotonic() + STATS_INTERVAL
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL)
        except TimeoutError:
            pass
        now = time.monotonic()
        port.sweep(now, gw.heartbeat_timeout, gw.reply_timeout)
        if now >= next_stats:
            next_stats = now + STATS_INTERVAL
            if dict(port.drops) != last_drops:
                last_drops = dict(port.drops)
                log.info(
                    "sessions=%d accepted=%d %s",
                    len(port.sessions),
                    port.accepted,
                    format_drops(port.drops),
                )

    server.close()
    for conn in list(port.sessions.values()):
        port.closed(conn, "gateway_shutdown")
        if conn.transport is not None:
            conn.transport.close()
    port.flush()
    await link.close()
    log.info("stopped: sessions=0 accepted=%d %s", port.accepted, format_drops(port.drops))
    return 0


def format_drops(drops: dict[str, int]) -> str:
    """``drops: reason=count ...`` in a stable order (parsed by operators and tests)."""
    return "drops: " + (" ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "none")


def serve(config: Config) -> int:
    """Run a gateway in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return runtime.run(run(config))
