"""Reading a ZeroMQ socket from an asyncio loop without a Future per message.

A :class:`SocketReader` watches the socket's FD with ``loop.add_reader`` and drains it with
NOBLOCK until EAGAIN (docs/operations.md: 2.4-3.8x faster than ``zmq.asyncio``). That FD is
edge-triggered: any send on the socket can consume the edge of messages that arrived meanwhile,
so the owner calls :meth:`SocketReader.check` after sending outside a drain, and a drain that
stops early (its burst used up, or :meth:`pause`) re-checks ``EVENTS`` before it returns.

Every message goes to the ``handle(frames)`` callback. An exception from the handler is logged
and counted (``counters["bus_handler_error"]``) and the drain goes on: one bad message never
leaves the socket unread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from cluster.security import ClientKeys, secure_client

log = logging.getLogger("cluster.zsocket")

#: Messages handled per drain before the loop gets a turn.
BURST = 2000


def dealer(context: zmq.Context[Any], identity: bytes, endpoint: str, hwm: int,
           curve: ClientKeys | None) -> zmq.Socket[Any]:  # fmt: skip
    """A DEALER with this process's routing `identity`, `hwm` messages each way, no linger, a
    CURVE client when `curve` is given, connected to `endpoint`."""
    sock: zmq.Socket[Any] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    secure_client(sock, curve)
    sock.connect(endpoint)
    return sock


class SocketReader:
    """Drains one socket into ``handle`` from the running loop; :meth:`close` stops watching."""

    def __init__(
        self,
        socket: zmq.Socket[Any],
        handle: Callable[[list[bytes]], None],
        counters: Counter[str],
        burst: int = BURST,
    ) -> None:
        self.socket = socket
        self.handle = handle
        self.counters = counters
        self.burst = burst
        self.paused = False
        self._loop = asyncio.get_running_loop()
        self._fd = socket.fileno()  # ZMQ_FD, as an int
        self._scheduled = False
        self._closed = False
        self._loop.add_reader(self._fd, self.drain)

    def close(self) -> None:
        """Stop watching (the socket itself is the owner's to close)."""
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)

    def pause(self) -> None:
        """Stop reading: messages wait in the socket (and, past its HWM, at the sender)."""
        self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._schedule()

    def check(self) -> None:
        """Schedule a drain if messages are waiting (call after a send outside a drain)."""
        if self._scheduled or self.paused or self._closed:
            return
        events = self.socket.getsockopt(zmq.EVENTS)  # an int; typed int | bytes for any option
        if isinstance(events, int) and events & zmq.POLLIN:
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        self._scheduled = False
        if self._closed or self.paused:
            return
        recv = self.socket.recv_multipart
        handle = self.handle
        for _ in range(self.burst):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError:  # closed under us by a handler
                return
            try:
                handle(frames)
            except Exception:
                self.counters["bus_handler_error"] += 1
                log.exception("a bus message could not be handled (%d frames); dropped",
                              len(frames))  # fmt: skip
            if self._closed or self.paused:
                break
        else:
            self._schedule()  # burst used up: let the loop breathe, then go on
            return
        self.check()
