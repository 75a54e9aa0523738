"""The data link over ZeroMQ (used when ``[security] curve`` is on: CurveZMQ encrypts it).

The gateway binds one ROUTER (:class:`ZmqGatewayDataPort`); every game worker connects one DEALER
to it (:class:`ZmqWorkerDataLinks`) with its bus identity as routing id and says HELLO first.
Frames: ``[HELLO]``, ``[HB]``, ``[DATA, body...]``. Both sockets have a small HWM
(:data:`DATA_HWM` messages): a send past it reports FULL. With CURVE the data port is a CURVE
server with the cluster's server key (so a gateway host needs ``broker.key_secret`` too) and
admits only the cluster's client keys. See :mod:`cluster.datalink` for the contract.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from cluster import bus
from cluster.config import Config
from cluster.datalink import LinkBook, PortBook, Sent, advertise, data_bind
from cluster.security import Gatekeeper, client_keys, secure_server
from cluster.zsocket import SocketReader, dealer

log = logging.getLogger("cluster.datalink")

#: Messages (batches of items) queued per direction of one link before sends report FULL.
DATA_HWM = 1000


class ZmqGatewayDataPort(PortBook):
    """The gateway's end: one bound ROUTER that every game worker connects to.

    ``on_items(worker, bodies)`` receives DATA; ``on_lost(worker, reason)`` is called once when a
    worker that said HELLO goes silent or unreachable. ``workers`` holds the workers that said
    HELLO (those the gateway may address) and when each was last heard."""

    def __init__(
        self,
        config: Config,
        counters: Counter[str],
        on_items: Callable[[bytes, list[bytes]], None],
        on_lost: Callable[[bytes, str], None],
        context: zmq.Context[Any] | None = None,
    ) -> None:
        super().__init__(counters, on_items, on_lost)
        self.interval = config.broker.heartbeat_interval
        self.silence = self.interval * config.broker.heartbeat_liveness
        context = context or zmq.Context.instance()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.SNDHWM, DATA_HWM)
        sock.setsockopt(zmq.RCVHWM, DATA_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        self.gatekeeper: Gatekeeper | None = None
        if config.security.curve or config.security.allow_from:
            self.gatekeeper = Gatekeeper(context, config)
            self.gatekeeper.start()
        secure_server(sock, config)
        sock.bind(data_bind(config))
        self.socket = sock
        self.endpoint = advertise(sock.getsockopt_string(zmq.LAST_ENDPOINT), config)
        self._reader: SocketReader | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = SocketReader(self.socket, self._handle, self.counters)
        self._task = asyncio.create_task(self._heartbeat(), name="data-port-heartbeat")

    def close(self, linger_ms: int = 200) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._reader is not None:
            self._reader.close()
        self.socket.close(linger=linger_ms)
        if self.gatekeeper is not None:
            self.gatekeeper.stop()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self.counters["bad_bus_message"] += 1
            return
        worker, command = frames[0], frames[1]
        if command == bus.DATA:
            self.workers[worker] = time.monotonic()
            self.on_items(worker, frames[2:])
        elif command == bus.HEARTBEAT or command == bus.HELLO:
            if worker not in self.workers:
                log.info("worker %s joined the data port", worker.decode(errors="replace"))
            self.workers[worker] = time.monotonic()
        else:
            self.counters["bad_bus_message"] += 1

    def send(self, worker: bytes, body: bytes) -> Sent:
        """Queue one body of items for `worker` (which must have said HELLO)."""
        try:
            self.socket.send_multipart([worker, bus.DATA, body], zmq.NOBLOCK)
            result = Sent.OK
        except zmq.Again:
            result = Sent.FULL
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            result = Sent.UNREACHABLE
        if self._reader is not None:
            self._reader.check()
        return result

    def forget(self, worker: bytes) -> None:
        """The broker says `worker` is gone: stop addressing it."""
        self.workers.pop(worker, None)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for worker, heard in list(self.workers.items()):
                if now - heard > self.silence:
                    self._lose(worker, "data_link_silent")
                    continue
                try:
                    self.socket.send_multipart([worker, bus.HEARTBEAT], zmq.NOBLOCK)
                except zmq.Again:
                    pass  # a full queue is traffic enough
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    self._lose(worker, "data_link_lost")
            if self._reader is not None:
                self._reader.check()


class _Link:
    __slots__ = ("endpoint", "heard", "reader", "socket")

    def __init__(self, sock: zmq.Socket[Any], reader: SocketReader, endpoint: str) -> None:
        self.socket = sock
        self.reader = reader
        self.endpoint = endpoint
        self.heard = time.monotonic()


class ZmqWorkerDataLinks(LinkBook):
    """A game worker's end: one DEALER per gateway data port.

    ``on_items(gateway, bodies)`` receives DATA; ``on_lost(gateway)`` is called once when a
    gateway's link stays silent past the liveness rule (the link is closed then)."""

    scheme = "tcp://"

    def __init__(
        self,
        config: Config,
        identity: bytes,
        counters: Counter[str],
        on_items: Callable[[bytes, list[bytes]], None],
        on_lost: Callable[[bytes], None],
        context: zmq.Context[Any] | None = None,
    ) -> None:
        super().__init__(counters)
        self.identity = identity
        self.on_items = on_items
        self.on_lost = on_lost
        self.interval = config.broker.heartbeat_interval
        self.silence = self.interval * config.broker.heartbeat_liveness
        self.curve = client_keys(config)
        self.context = context or zmq.Context.instance()
        self.links: dict[bytes, _Link] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="data-links-heartbeat")

    def close(self, linger_ms: int = 200) -> None:
        if self._task is not None:
            self._task.cancel()
        for gateway in list(self.links):
            self._close(gateway, linger_ms)

    def _connect(self, gateway: bytes, endpoint: str) -> None:
        sock = dealer(self.context, self.identity, endpoint, DATA_HWM, self.curve)
        reader = SocketReader(sock, lambda frames: self._handle(gateway, frames), self.counters)
        if self.paused:
            reader.pause()
        self.links[gateway] = _Link(sock, reader, endpoint)
        sock.send_multipart([bus.HELLO], zmq.NOBLOCK)
        log.info("data link to gateway %s at %s", gateway.decode(errors="replace"), endpoint)

    def _handle(self, gateway: bytes, frames: list[bytes]) -> None:
        link = self.links.get(gateway)
        if link is None:
            return
        link.heard = time.monotonic()
        command = frames[0]
        if command == bus.DATA:
            self.on_items(gateway, frames[1:])
        elif command != bus.HEARTBEAT:
            self.counters["bad_bus_message"] += 1

    def send(self, gateway: bytes, body: bytes) -> bool:
        """Queue one body for `gateway` (whose link must exist); False when its queue is full."""
        link = self.links[gateway]
        try:
            link.socket.send_multipart([bus.DATA, body], zmq.NOBLOCK)
            ok = True
        except zmq.Again:
            ok = False
        link.reader.check()
        return ok

    def pause(self) -> None:
        """Stop reading every link (the worker's inbox is full); senders see FULL soon."""
        self.paused = True
        for link in self.links.values():
            link.reader.pause()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            for link in self.links.values():
                link.reader.resume()

    def _close(self, gateway: bytes, linger_ms: int = 0) -> None:
        link = self.links.pop(gateway, None)
        if link is not None:
            link.reader.close()
            link.socket.close(linger=linger_ms)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            for gateway, link in list(self.links.items()):
                if self._gave_up(gateway, link, now):
                    continue
                try:
                    link.socket.send_multipart([bus.HEARTBEAT], zmq.NOBLOCK)
                except zmq.Again:
                    pass
                link.reader.check()
