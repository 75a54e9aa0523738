"""The data link over plain TCP streams (the default; see :mod:`cluster.datalink`).

No ZeroMQ here: each hop through a ZeroMQ socket costs two I/O-thread hand-offs, which made up
most of a round trip's time. A link is one asyncio TCP connection from a game worker to a
gateway's data port (``stream://HOST:PORT``), carrying frames ``length:u32 kind:u8 payload``:

====  ==================  ==============================================================
kind  payload             meaning
====  ==================  ==============================================================
H     bus identity        worker -> gateway, first frame: who I am
B     -                   heartbeat, either way, every ``broker.heartbeat_interval``
D     body                session items (a msgpack array, as FROM / TO carry them)
====  ==================  ==============================================================

A send finds the link FULL when more than :data:`HIGH_WATER` bytes wait in its transport. The
data port applies ``security.allow_from`` to the addresses that connect.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from cluster.config import Config
from cluster.datalink import LinkBook, PortBook, Sent, advertise, data_bind
from cluster.security import address_allowed, networks

log = logging.getLogger("cluster.datalink")

FRAME = struct.Struct("<IB")
HELLO, BEAT, DATA = ord("H"), ord("B"), ord("D")
#: Bytes queued on one link before sends report FULL.
HIGH_WATER = 4 * 1024 * 1024
#: The largest frame a peer may send (a body is one loop iteration's items for one peer).
MAX_FRAME = 256 * 1024 * 1024


class FrameError(ValueError):
    """The peer broke the link's framing."""


class FrameBuffer:
    """Bytes in, whole ``(kind, payload)`` frames out; keeps a partial frame for later."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        pos, end = 0, len(buffer)
        unpack = FRAME.unpack_from
        while end - pos >= FRAME.size:
            length, kind = unpack(buffer, pos)
            if length > MAX_FRAME:
                raise FrameError(f"frame of {length} bytes")
            stop = pos + FRAME.size + length
            if stop > end:
                break
            frames.append((kind, bytes(buffer[pos + FRAME.size : stop])))
            pos = stop
        if pos:
            del buffer[:pos]
        return frames


def frame(kind: int, payload: bytes = b"") -> bytes:
    return FRAME.pack(len(payload), kind) + payload


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    if parts.hostname is None:
        raise ValueError(f"{endpoint!r} names no host")
    port = 0 if parts.netloc.endswith(":*") else parts.port or 0
    return parts.hostname, port


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _WorkerConnection(asyncio.Protocol):
    """One game worker's connection to the data port."""

    def __init__(self, port: StreamGatewayDataPort) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.identity: bytes | None = None
        self.frames = FrameBuffer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport; cast, not isinstance: uvloop's TCPTransport does not
        # derive from asyncio.Transport.
        self.transport = stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        if not self.port.allowed(peer[0] if peer else ""):
            self.port.counters["data_port_refused"] += 1
            log.warning("refused a data link from %s: not in security.allow_from", peer)
            stream.abort()
            return
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        port = self.port
        try:
            frames = self.frames.feed(data)
        except FrameError as exc:
            return self._bad(str(exc))
        for kind, payload in frames:
            if self.identity is None:
                if kind != HELLO or not payload:
                    return self._bad("no HELLO first")
                self.identity = payload
                port.joined(payload, self)
                continue
            port.workers[self.identity] = time.monotonic()
            if kind == DATA:
                port.on_items(self.identity, [payload])
            elif kind != BEAT:
                port.counters["bad_bus_message"] += 1
        return None

    def _bad(self, why: str) -> None:
        self.port.counters["bad_bus_message"] += 1
        log.warning("data link from %r broke the framing (%s); closed", self.identity, why)
        assert self.transport is not None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.identity is not None:
            self.port.left(self.identity, self)


class StreamGatewayDataPort(PortBook):
    """The gateway's end: a TCP server that every game worker connects to."""

    def __init__(
        self,
        config: Config,
        counters: Counter[str],
        on_items: Callable[[bytes, list[bytes]], None],
        on_lost: Callable[[bytes, str], None],
    ) -> None:
        self.config = config
        super().__init__(counters, on_items, on_lost)
        self.interval = config.broker.heartbeat_interval
        self.silence = self.interval * config.broker.heartbeat_liveness
        self.networks = networks(config.security.allow_from)
        self.endpoint = ""
        self._conns: dict[bytes, _WorkerConnection] = {}
        self._server: asyncio.AbstractServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Listen (raises OSError when the address cannot be bound) and start heartbeating."""
        host, port = _host_port(data_bind(self.config))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _WorkerConnection(self), host, port)
        bound = self._server.sockets[0].getsockname()[1]
        self.endpoint = advertise(f"stream://{host}:{bound}", self.config)
        self._task = asyncio.create_task(self._heartbeat(), name="data-port-heartbeat")

    def close(self, linger_ms: int = 200) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()  # what is queued still goes out

    def allowed(self, address: str) -> bool:
        return address_allowed(self.networks, address)

    def joined(self, worker: bytes, conn: _WorkerConnection) -> None:
        old = self._conns.get(worker)
        if old is not None and old is not conn and old.transport is not None:
            old.identity = None  # replaced by a new connection of the same worker
            old.transport.abort()
        self._conns[worker] = conn
        self.workers[worker] = time.monotonic()
        log.info("worker %s joined the data port", worker.decode(errors="replace"))

    def left(self, worker: bytes, conn: _WorkerConnection) -> None:
        if self._conns.get(worker) is conn and not self._closing:
            del self._conns[worker]
            self._lose(worker, "data_link_lost")

    def send(self, worker: bytes, body: bytes) -> Sent:
        conn = self._conns.get(worker)
        transport = conn.transport if conn is not None else None
        if transport is None or transport.is_closing():
            return Sent.UNREACHABLE
        if transport.get_write_buffer_size() > HIGH_WATER:
            return Sent.FULL
        transport.writelines((FRAME.pack(len(body), DATA), body))
        return Sent.OK

    def forget(self, worker: bytes) -> None:
        """The broker says `worker` is gone: stop addressing it."""
        self.workers.pop(worker, None)
        conn = self._conns.pop(worker, None)
        if conn is not None and conn.transport is not None:
            conn.transport.abort()

    async def _heartbeat(self) -> None:
        beat = frame(BEAT)
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for worker, conn in list(self._conns.items()):
                if now - self.workers.get(worker, now) > self.silence:
                    self._lose(worker, "data_link_silent")
                    self._conns.pop(worker, None)
                    if conn.transport is not None:
                        conn.transport.abort()
                elif conn.transport is not None and not conn.transport.is_closing():
                    conn.transport.write(beat)


class _GatewayLink(asyncio.Protocol):
    """A game worker's connection to one gateway's data port."""

    def __init__(self, links: StreamWorkerDataLinks, gateway: bytes, endpoint: str) -> None:
        self.links = links
        self.gateway = gateway
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # frames sent before the connection was made
        self.heard = time.monotonic()
        self.frames = FrameBuffer()
        self.dropped = False  # closed on purpose: not a loss to report

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's TCPTransport does not derive from asyncio.Transport
        self.transport = stream = cast(asyncio.Transport, transport)
        _nodelay(stream)
        self.heard = time.monotonic()
        stream.writelines([frame(HELLO, self.links.identity), *self.pending])
        self.pending = []
        if self.links.paused:
            stream.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        try:
            frames = self.frames.feed(data)
        except FrameError as exc:
            self.links.counters["bad_bus_message"] += 1
            log.warning("data link to %s broke the framing (%s)", self.endpoint, exc)
            assert self.transport is not None
            self.transport.abort()
            return
        for kind, payload in frames:
            if kind == DATA:
                self.links.on_items(self.gateway, [payload])
            elif kind != BEAT:
                self.links.counters["bad_bus_message"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.links.dropped(self)


class StreamWorkerDataLinks(LinkBook):
    """A game worker's end: one TCP connection per gateway data port."""

    scheme = "stream://"

    def __init__(
        self,
        config: Config,
        identity: bytes,
        counters: Counter[str],
        on_items: Callable[[bytes, list[bytes]], None],
        on_lost: Callable[[bytes], None],
    ) -> None:
        super().__init__(counters)
        self.identity = identity
        self.on_items = on_items
        self.on_lost = on_lost
        self.interval = config.broker.heartbeat_interval
        self.silence = self.interval * config.broker.heartbeat_liveness
        self.links: dict[bytes, _GatewayLink] = {}
        self._task: asyncio.Task[None] | None = None
        self._opening: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="data-links-heartbeat")

    def close(self, linger_ms: int = 200) -> None:
        if self._task is not None:
            self._task.cancel()
        for gateway in list(self.links):
            self._close(gateway, flush=True)

    def _connect(self, gateway: bytes, endpoint: str) -> None:
        link = _GatewayLink(self, gateway, endpoint)
        self.links[gateway] = link
        task = asyncio.create_task(self._open(link))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self, link: _GatewayLink) -> None:
        host, port = _host_port(link.endpoint)
        try:
            await asyncio.get_running_loop().create_connection(lambda: link, host, port)
        except OSError as exc:
            log.warning("cannot reach gateway %s's data port %s: %s",
                        link.gateway.decode(errors="replace"), link.endpoint, exc)  # fmt: skip
            self.dropped(link)
            return
        log.info("data link to gateway %s at %s", link.gateway.decode(errors="replace"),
                 link.endpoint)  # fmt: skip

    def send(self, gateway: bytes, body: bytes) -> bool:
        link = self.links[gateway]
        transport = link.transport
        if transport is None:
            link.pending += (FRAME.pack(len(body), DATA), body)
            return True
        if transport.get_write_buffer_size() > HIGH_WATER:
            return False
        transport.writelines((FRAME.pack(len(body), DATA), body))
        return True

    def dropped(self, link: _GatewayLink) -> None:
        """A link closed or could not be opened."""
        if self.links.get(link.gateway) is link:
            del self.links[link.gateway]
        if not link.dropped:
            link.dropped = True
            self.counters["data_link_lost"] += 1
            self.on_lost(link.gateway)

    def pause(self) -> None:
        self.paused = True
        for link in self.links.values():
            if link.transport is not None:
                link.transport.pause_reading()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            for link in self.links.values():
                if link.transport is not None:
                    link.transport.resume_reading()

    def _close(self, gateway: bytes, flush: bool = False) -> None:
        link = self.links.pop(gateway, None)
        if link is not None:
            link.dropped = True
            if link.transport is not None:
                if flush:
                    link.transport.close()
                else:
                    link.transport.abort()

    async def _heartbeat(self) -> None:
        beat = frame(BEAT)
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for gateway, link in list(self.links.items()):
                if link.transport is None:
                    continue
                if self._gave_up(gateway, link, now):
                    continue
                if not link.transport.is_closing():
                    link.transport.write(beat)
