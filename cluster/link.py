"""A process's connection to the broker, driven by an asyncio loop.

:class:`BusLink` owns one DEALER socket. It registers (READY, until WELCOME), heartbeats every
interval, notices a silent broker after ``interval x liveness`` and reconnects with jittered
backoff under the same identity (so sessions bound to this process survive a broker restart),
and re-registers when the broker says RESET.

Reading is done by a :class:`cluster.zsocket.SocketReader` (no Future per message; a handler's
exception never leaves the socket unread). HB, WELCOME and RESET are handled here; every other
message is handed, frames and all, to the ``on_message`` callback (normally a
:class:`cluster.dispatch.Dispatcher`), plus two events that never travel on the wire:
``[REGISTERED, fresh]`` on each WELCOME and ``[EVICTED]`` when the same broker run had forgotten us.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from cluster import bus
from cluster.config import Config
from cluster.security import ClientKeys, client_keys
from cluster.zsocket import SocketReader, dealer

log = logging.getLogger("cluster.link")

#: Messages handled per drain before the loop gets a turn.
BURST = 2000
HWM = 200_000


def make_identity(role: str) -> bytes:
    """A readable, unique routing identity: ``role@host/pid/random``."""
    return f"{role}@{socket.gethostname()}/{os.getpid()}/{random.getrandbits(32):08x}".encode()


class BusLink:
    """The DEALER side of the bus for one process.

    ``on_message(frames)`` receives FROM, UNROUTABLE and GONE messages. ``load()`` (optional)
    returns the session count reported in heartbeats. ``registered`` is set while the broker
    knows us."""

    def __init__(
        self,
        endpoint: str,
        role: str,
        on_message: Callable[[list[bytes]], None],
        *,
        interval: float,
        liveness: int,
        info: dict[str, Any] | None = None,
        load: Callable[[], int] | None = None,
        context: zmq.Context[Any] | None = None,
        curve: ClientKeys | None = None,
        counters: Counter[str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.role = role
        self.identity = make_identity(role)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), **(info or {})}
        self.on_message = on_message
        self.interval = interval
        self.liveness = liveness
        self.load = load
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self.registered = asyncio.Event()
        #: set when the broker refused our READY (our settings differ from its); ``refusal`` says
        #: why. A refused link stops asking: its owner exits (see cluster.role).
        self.refused = asyncio.Event()
        self.refusal = ""
        self.socket: zmq.Socket[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_heard = 0.0
        self._reader: SocketReader | None = None
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._task: asyncio.Task[None] | None = None
        self._epoch: int | None = None  # the broker run we registered with

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and start heartbeating; returns at once (await ``registered`` for WELCOME)."""
        self._loop = asyncio.get_running_loop()
        self._connect()
        self._task = asyncio.create_task(self._heartbeat(), name=f"bus-heartbeat-{self.role}")

    async def close(self, say_bye: bool = True) -> None:
        """Stop heartbeating, say BYE (when registered) and close the socket."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self.socket is not None:
            if say_bye and self.registered.is_set():
                self.send([bus.DISCONNECT])
            self._disconnect(linger_ms=200)

    def _connect(self) -> None:
        assert self._loop is not None
        sock = dealer(self.context, self.identity, self.endpoint, HWM, self.curve)
        self.socket = sock
        self._last_heard = time.monotonic()
        self._reader = SocketReader(sock, self._handle, self.counters, BURST)
        self._send_ready()

    def _disconnect(self, linger_ms: int = 0) -> None:
        if self.socket is None:
            return
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.socket.close(linger=linger_ms)
        self.socket = None
        self.registered.clear()

    def _send_ready(self) -> None:
        if self.refused.is_set():
            return
        self.send([bus.READY, self.role.encode(), bus.pack_info(self.info)])

    async def _heartbeat(self) -> None:
        backoff = self.interval
        while True:
            await asyncio.sleep(self.interval)
            silent = time.monotonic() - self._last_heard
            if silent > self.interval * self.liveness:
                was = self.registered.is_set()
                log.warning("broker %s silent for %.1fs; reconnecting", self.endpoint, silent)
                self._disconnect()
                if was:
                    self.on_message([bus.RESET])
                await asyncio.sleep(random.uniform(0, backoff))
                backoff = min(backoff * 2, self.interval * 8)
                self._connect()
                continue
            backoff = self.interval
            if not self.registered.is_set():
                self._send_ready()
            elif self.load is not None:
                self.send([bus.HEARTBEAT, bus.pack_load(self.load())])
            else:
                self.send([bus.HEARTBEAT])

    # -- I/O -------------------------------------------------------------------------------------

    def _welcomed(self, frames: list[bytes]) -> bool:
        """Tell the owner EVICTED when the same broker run registers us anew. Returns whether
        the broker did not know us (a new broker run, or an eviction)."""
        try:
            info = bus.unpack_info(frames[1]) if len(frames) > 1 else {}
        except ValueError:
            info = {}
        epoch = info.get("epoch")
        known = bool(info.get("known", True))
        if self._epoch is not None and epoch == self._epoch and not known:
            log.warning("the broker had evicted us: our sessions elsewhere were closed")
            self.on_message([bus.EVICTED])
        self._epoch = epoch
        return not known

    def send(self, frames: list[bytes]) -> bool:
        """Queue one message for the broker. False when it cannot be queued (no broker link, or
        the queue is full): the caller still owns the message and must answer for it.

        Every send can consume the FD's edge for messages that arrived meanwhile, so each one is
        followed by an EVENTS check (a missed edge would stall this process's input)."""
        if self.socket is None:
            return False
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK)
            ok = True
        except zmq.Again:
            ok = False
        if self._reader is not None:
            self._reader.check()
        return ok

    def _handle(self, frames: list[bytes]) -> None:
        self._last_heard = time.monotonic()
        command = frames[0]
        if command == bus.HEARTBEAT:
            return
        if command == bus.WELCOME:
            if not self.registered.is_set():
                fresh = self._welcomed(frames)
                log.log(
                    logging.DEBUG if self.role == "cli" else logging.INFO,
                    "registered with broker %s as %s", self.endpoint, self.identity,
                )  # fmt: skip
                self.registered.set()
                self.on_message([bus.REGISTERED, b"1" if fresh else b"0"])
            return
        if command == bus.REFUSED:
            if not self.refused.is_set():
                reason = frames[1].decode("utf-8", "replace")[:2000] if len(frames) > 1 else "?"
                self.refusal = reason or "?"
                self.registered.clear()
                self.refused.set()
            return
        if self.refused.is_set():
            return  # refused: we are stopping, and the broker no longer knows us
        if command == bus.RESET:
            log.warning("broker asked us to register again")
            self.registered.clear()
            self._send_ready()
        self.on_message(frames)


def bus_link(config: Config, role: str, on_message: Callable[[list[bytes]], None],
             **options: Any) -> BusLink:  # fmt: skip
    """A :class:`BusLink` to the broker `config` names, with its heartbeat rules and, when
    ``[security] curve`` is on, the cluster's client keys (SecurityError when they are missing)."""
    if role != "cli":  # `cluster status` may look at any cluster, whatever its own config says
        options["info"] = {"settings": bus.settings(config), **options.get("info", {})}
    return BusLink(
        config.broker.endpoint, role, on_message,
        interval=config.broker.heartbeat_interval, liveness=config.broker.heartbeat_liveness,
        curve=client_keys(config), **options,
    )  # fmt: skip
