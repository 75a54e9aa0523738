"""The data link: bound sessions' traffic straight between a gateway and a game worker.

The broker is the registry, the placement authority, the login path and the control plane; it
is not on the path of a session once the session is bound. Every gateway opens one *data port*
(a :class:`GatewayDataPort`) and names it in its READY info; the broker's ROSTER passes the names
on, and every game worker links to each gateway's data port (:class:`WorkerDataLinks`),
identifying itself by its bus identity. Items then go:

- gateway -> worker: a new session's opening request through the broker (PLACE, which picks the
  worker); everything after the worker's ACCEPTED over the data link (the worker said HELLO
  first on the same link, so the gateway can address it);
- worker -> gateway: everything over the data link (it queues until connected, so the ACCEPTED
  and RES_LOGIN of a login can never be overtaken by a later reply).

So a broker that is killed, restarted or paused costs bound sessions nothing. Each side
heartbeats the other on the link every ``broker.heartbeat_interval`` and gives it up after
``heartbeat_interval x heartbeat_liveness`` of silence, or at once when the connection is lost:
the gateway then closes that worker's clients, the worker releases that gateway's sessions,
whether or not the broker is there to say GONE.

Flow control: a send that finds the link's queue full reports :attr:`Sent.FULL`; the caller
keeps the items, in order, and stops reading from whoever produces them (the gateway pauses the
clients bound to that worker; see gateway.sessions); a worker whose inbox is full pauses reading
its links, which fills them.

Two transports, one contract: plain TCP streams (:mod:`cluster.datalink_stream`, the default:
no I/O threads, about half the round-trip time) and, when ``[security] curve`` is on, CurveZMQ
(:mod:`cluster.datalink_zmq`: encrypted and authenticated like the rest of the bus). Endpoints
say which: ``stream://HOST:PORT`` or ``tcp://HOST:PORT``.
"""

from __future__ import annotations

import logging
import socket as pysocket
from collections import Counter
from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol
from urllib.parse import urlsplit

from cluster.config import Config

log = logging.getLogger("cluster.datalink")


class Sent(Enum):
    """What became of one send on a data link."""

    OK = 0
    FULL = 1  # the link's queue is full: keep the items, try again soon
    UNREACHABLE = 2  # no connection to that peer


class GatewayDataPort(Protocol):
    """The gateway's end. ``workers`` maps the workers that said HELLO (those the gateway may
    address) to when each was last heard; ``endpoint`` is what workers connect to (after
    :meth:`start`)."""

    workers: dict[bytes, float]
    endpoint: str

    async def start(self) -> None: ...
    def close(self, linger_ms: int = 200) -> None: ...
    def send(self, worker: bytes, body: bytes) -> Sent: ...
    def forget(self, worker: bytes) -> None: ...


class WorkerDataLinks(Protocol):
    """A game worker's end: one link per gateway data port."""

    paused: bool

    def start(self) -> None: ...
    def close(self, linger_ms: int = 200) -> None: ...
    def learn(self, endpoints: dict[str, str]) -> None: ...
    def reachable(self, gateway: bytes) -> bool: ...
    def send(self, gateway: bytes, body: bytes) -> bool: ...
    def forget(self, gateway: bytes) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...


class PortBook:
    """What both gateway-side transports keep: the workers that said HELLO and when each was
    last heard, and the one way a worker is given up (counted, logged, ``on_lost``)."""

    def __init__(
        self,
        counters: Counter[str],
        on_items: Callable[[bytes, list[bytes]], None],
        on_lost: Callable[[bytes, str], None],
    ) -> None:
        self.counters = counters
        self.on_items = on_items
        self.on_lost = on_lost
        self.workers: dict[bytes, float] = {}

    def _lose(self, worker: bytes, reason: str) -> None:
        if self.workers.pop(worker, None) is not None:
            self.counters[reason] += 1
            log.warning("worker %s lost on the data port (%s)",
                        worker.decode(errors="replace"), reason)  # fmt: skip
            self.on_lost(worker, reason)


class LinkBook:
    """What both worker-side transports keep: every gateway's data port (from the roster) and
    the open links, keyed by gateway identity. A subclass provides ``_connect`` and ``_close``
    and the endpoint ``scheme`` it speaks."""

    scheme = ""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self.endpoints: dict[bytes, str] = {}
        self.links: dict[bytes, Any] = {}
        self.paused = False
        self.silence = 0.0  # seconds of silence after which a link is given up (subclass sets)
        self.on_lost: Callable[[bytes], None] = lambda gateway: None

    def learn(self, endpoints: dict[str, str]) -> None:
        """The roster's gateways: connect to new ones (links to others stay until lost or GONE:
        a restarted broker's first rosters may not list every gateway yet)."""
        for name, endpoint in endpoints.items():
            if not endpoint.startswith(self.scheme):
                self.counters["data_transport_mismatch"] += 1
                log.error(
                    "gateway %s offers data port %s, but this worker speaks %s "
                    "(is security.curve the same on every host?)", name, endpoint, self.scheme,
                )  # fmt: skip
                continue
            gateway = name.encode()
            self.endpoints[gateway] = endpoint
            link = self.links.get(gateway)
            if link is not None and link.endpoint != endpoint:
                self._close(gateway)
            if gateway not in self.links:
                self._connect(gateway, endpoint)

    def reachable(self, gateway: bytes) -> bool:
        """Whether items for `gateway` go over a data link (connecting one if its port is
        known); False: the gateway has no data port, use the broker."""
        if gateway in self.links:
            return True
        endpoint = self.endpoints.get(gateway)
        if endpoint is None:
            return False
        self._connect(gateway, endpoint)
        return True

    def forget(self, gateway: bytes) -> None:
        """The broker says `gateway` is gone."""
        self.endpoints.pop(gateway, None)
        self._close(gateway)

    def _gave_up(self, gateway: bytes, link: Any, now: float) -> bool:
        """The liveness rule at each heartbeat: a link silent for longer than ``silence`` is
        closed and its gateway reported lost (``on_lost``). While this worker does not read its
        links (paused), their silence is its own doing and does not count."""
        if self.paused:
            link.heard = now
            return False
        if now - link.heard <= self.silence:
            return False
        self.counters["data_link_silent"] += 1
        log.warning("gateway %s silent on the data link for %.1fs",
                    gateway.decode(errors="replace"), now - link.heard)  # fmt: skip
        self._close(gateway)
        self.on_lost(gateway)
        return True

    def _connect(self, gateway: bytes, endpoint: str) -> None:
        raise NotImplementedError

    def _close(self, gateway: bytes) -> None:
        raise NotImplementedError


def advertised_host(config: Config) -> str:
    """The address of this host that bus peers reach it on: the one it uses to reach the
    broker (loopback when the broker is local or an ipc:// endpoint)."""
    parts = urlsplit(config.broker.endpoint)
    host = parts.hostname or ""
    if parts.scheme != "tcp" or host in ("", "*", "localhost") or host.startswith("127."):
        return "127.0.0.1"
    family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
    try:
        with pysocket.socket(family, pysocket.SOCK_DGRAM) as probe:
            probe.connect((host, parts.port or 5555))  # UDP: picks a route, sends nothing
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def data_bind(config: Config) -> str:
    """What the gateway's data port binds: ``gateway.data_bind``, or this host's address that
    reaches the broker on any free port (``tcp://HOST:*``)."""
    return config.gateway.data_bind or f"tcp://{advertised_host(config)}:*"


def advertise(bound: str, config: Config) -> str:
    """The endpoint workers connect to for a bound one (a wildcard host is replaced)."""
    parts = urlsplit(bound)
    if parts.hostname in ("0.0.0.0", "::", "*"):
        return f"{parts.scheme}://{advertised_host(config)}:{parts.port}"
    return bound


def gateway_data_port(
    config: Config,
    counters: Counter[str],
    on_items: Callable[[bytes, list[bytes]], None],
    on_lost: Callable[[bytes, str], None],
) -> GatewayDataPort:
    """The data port the configuration asks for (raises OSError / zmq.ZMQError when it cannot
    be bound, SecurityError when CURVE keys are missing)."""
    if config.security.curve:
        from cluster.datalink_zmq import ZmqGatewayDataPort

        return ZmqGatewayDataPort(config, counters, on_items, on_lost)
    from cluster.datalink_stream import StreamGatewayDataPort

    return StreamGatewayDataPort(config, counters, on_items, on_lost)


def worker_data_links(
    config: Config,
    identity: bytes,
    counters: Counter[str],
    on_items: Callable[[bytes, list[bytes]], None],
    on_lost: Callable[[bytes], None],
) -> WorkerDataLinks:
    """The worker's end for the configured transport."""
    if config.security.curve:
        from cluster.datalink_zmq import ZmqWorkerDataLinks

        return ZmqWorkerDataLinks(config, identity, counters, on_items, on_lost)
    from cluster.datalink_stream import StreamWorkerDataLinks

    return StreamWorkerDataLinks(config, identity, counters, on_items, on_lost)
