"""The gateway's game port: client connections bound to game workers over the bus.

A :class:`GameConnection` (an ``asyncio.Protocol``) decodes its client's packets with the shared
codec and hands the messages to :class:`GamePort`, which:

- places a new session with its first message, which must be CS_GAME_REQ_LOGIN: the login goes
  to the broker as PLACE (keyed by AccountNo) and the broker picks the game worker;
- binds the session to the worker whose reply comes back first, and from then on forwards
  its messages to that worker (TO); messages that arrive while the login is in flight are held
  and forwarded, in order, once bound;
- gathers everything of one event-loop iteration into one bus message per destination, and
  writes every reply a client got in one bus drain with a single ``transport.write``;
- closes exactly one client on each violation, counting it by reason in ``drops``, and closes
  every client of a worker the broker reports GONE.

The mode rules after login (echo only in GAME mode, AccountNo must match) are the worker's: it
owns the session state and answers a violation with a CLOSE item, which is counted here too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from cluster import bus
from cluster.codec import Codec, LocalProtocolError, RemoteProtocolError
from cluster.link import BusLink
from cluster.messages import GAME_CLIENT_MESSAGES, GameReqLogin

log = logging.getLogger("gateway.game")

CLOSE = bus.Control.CLOSE


class GameConnection(asyncio.Protocol):
    """One client on the game port."""

    __slots__ = (
        "backlog",
        "closed",
        "decoder",
        "last_recv",
        "pending",
        "placed_at",
        "port",
        "sid",
        "transport",
        "worker",
    )

    def __init__(self, port: GamePort) -> None:
        self.port = port
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.decoder = port.codec.decoder(GAME_CLIENT_MESSAGES)
        self.worker: bytes | None = None  # game worker holding this session, once bound
        self.placed_at = 0.0  # when the login was sent for placement (0: not yet)
        self.backlog: list[list[Any]] = []  # items received while the login is in flight
        self.pending: list[bytes] = []  # encoded replies not yet written
        self.last_recv = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port.opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_recv = time.monotonic()
        try:
            messages = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            self.port.drop(self, exc.reason)
            return
        if messages:
            self.port.from_client(self, messages)

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.closed(self, "client_closed")


class GamePort:
    """The session table of the game port and its side of the bus."""

    def __init__(self, codec: Codec, link: BusLink, max_sessions: int) -> None:
        self.codec = codec
        self.link = link
        self.max_sessions = max_sessions
        self.sessions: dict[int, GameConnection] = {}
        self.by_worker: dict[bytes, set[int]] = {}
        self.drops: Counter[str] = Counter()
        self.accepted = 0
        self._next_sid = 0
        self._outbox: dict[bytes, list[list[Any]]] = {}
        self._placements: list[tuple[int, list[Any]]] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_event_loop()

    def protocol(self) -> GameConnection:
        """Protocol factory for ``loop.create_server``."""
        return GameConnection(self)

    # -- client side -----------------------------------------------------------------------------

    def opened(self, conn: GameConnection) -> None:
        self.accepted += 1
        if len(self.sessions) >= self.max_sessions:
            self.drops["max_sessions"] += 1
            conn.closed = True
            assert conn.transport is not None
            conn.transport.abort()
            return
        self._next_sid += 1
        conn.sid = self._next_sid
        self.sessions[conn.sid] = conn

    def from_client(self, conn: GameConnection, messages: list[Any]) -> None:
        if conn.closed:
            return
        sid = conn.sid
        for message in messages:
            item = [sid, message.TYPE, *message]
            if conn.worker is not None:
                outbox = self._outbox.get(conn.worker)
                if outbox is None:
                    self._outbox[conn.worker] = outbox = []
                outbox.append(item)
            elif conn.placed_at:
                conn.backlog.append(item)
            elif message.TYPE == GameReqLogin.TYPE:
                conn.placed_at = time.monotonic()
                self._placements.append((message.account_no, item))
            else:
                self.drop(conn, "not_logged_in")
                return
        self._schedule_flush()

    def drop(self, conn: GameConnection, reason: str, tell_worker: bool = True) -> None:
        """Close one client at once for a violation or a failure; counted under `reason`."""
        if conn.closed:
            return
        self._count(conn, reason)
        self.closed(conn, reason, tell_worker)
        assert conn.transport is not None
        conn.transport.abort()

    def _count(self, conn: GameConnection, reason: str) -> None:
        self.drops[reason] += 1
        log.debug("session %d closed: %s", conn.sid, reason)

    def closed(self, conn: GameConnection, reason: str, tell_worker: bool = True) -> None:
        """Forget a session (idempotent) and, if it was bound and `tell_worker`, tell its worker
        that it is over."""
        if conn.closed:
            return
        conn.closed = True
        self.sessions.pop(conn.sid, None)
        if conn.worker is not None:
            bound = self.by_worker.get(conn.worker)
            if bound is not None:
                bound.discard(conn.sid)
            if tell_worker:
                self._outbox.setdefault(conn.worker, []).append([conn.sid, CLOSE, reason])
                self._schedule_flush()

    def sweep(self, now: float, heartbeat_timeout: float, reply_timeout: float) -> None:
        """Drop clients silent for `heartbeat_timeout` (0: never) and logins unanswered for
        `reply_timeout`."""
        silent_before = now - heartbeat_timeout
        unanswered_before = now - reply_timeout
        for conn in list(self.sessions.values()):
            if heartbeat_timeout and conn.last_recv < silent_before:
                self.drop(conn, "heartbeat_timeout")
            elif conn.worker is None and conn.placed_at and conn.placed_at < unanswered_before:
                self.drop(conn, "reply_timeout")

    # -- bus side --------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what this loop iteration gathered: one TO per worker, one PLACE for logins."""
        self._flush_scheduled = False
        if self._outbox:
            outbox, self._outbox = self._outbox, {}
            for worker, items in outbox.items():
                if not self.link.send([bus.TO, worker, bus.pack_body(items)]):
                    self._undeliverable(items, "bus_unavailable")
        if self._placements:
            placements, self._placements = self._placements, []
            keys = bus.pack_keys([account for account, _ in placements])
            bodies = [bus.pack_body([item]) for _, item in placements]
            if not self.link.send([bus.PLACE, b"game", keys, *bodies]):
                self._undeliverable([item for _, item in placements], "bus_unavailable")

    def on_bus(self, frames: list[bytes]) -> None:
        """Handle FROM / UNROUTABLE / GONE / RESET from the link."""
        command = frames[0]
        if command == bus.FROM and len(frames) >= 3:
            self._replies(frames[1], frames[2:])
        elif command == bus.UNROUTABLE and len(frames) >= 2:
            reason = "no_game_worker" if frames[1] == b"game" else "worker_gone"
            for body in frames[2:]:
                self._undeliverable(self._items(body), reason)
        elif command == bus.GONE and len(frames) >= 2:
            self.worker_gone(frames[1])

    def worker_gone(self, worker: bytes) -> None:
        """Close every client bound to `worker`."""
        sids = self.by_worker.pop(worker, set())
        if sids:
            log.warning("game worker %s gone: closing its %d sessions", worker, len(sids))
        for sid in sids:
            conn = self.sessions.get(sid)
            if conn is not None:
                self.drop(conn, "worker_gone", tell_worker=False)

    def _items(self, body: bytes) -> list[Any]:
        try:
            return bus.unpack_body(body)
        except ValueError:
            self.drops["bad_bus_body"] += 1
            return []

    def _undeliverable(self, items: list[Any], reason: str) -> None:
        for item in items:
            conn = self.sessions.get(item[0])
            if conn is not None and item[1] != CLOSE:
                self.drop(conn, reason)

    def _replies(self, worker: bytes, bodies: list[bytes]) -> None:
        touched: list[GameConnection] = []
        to_close: list[tuple[GameConnection, str]] = []
        encode = self.codec.encode_fields
        for body in bodies:
            for item in self._items(body):
                conn = self.sessions.get(item[0])
                if conn is None:
                    if item[1] != CLOSE:  # the client left while the worker answered
                        self._outbox.setdefault(worker, []).append([item[0], CLOSE, "gone"])
                        self._schedule_flush()
                    continue
                if conn.worker is None:
                    self._bind(conn, worker)
                if item[1] == CLOSE:
                    to_close.append((conn, str(item[2])))
                    continue
                try:
                    data = encode(item[1], item[2:])
                except LocalProtocolError as exc:
                    log.error("worker %s sent an unencodable reply: %s", worker, exc)
                    self.drops["bad_reply"] += 1
                    continue
                if not conn.pending:
                    touched.append(conn)
                conn.pending.append(data)
        for conn in touched:
            if not conn.closed:
                assert conn.transport is not None
                conn.transport.write(b"".join(conn.pending))
            conn.pending.clear()
        for conn, reason in to_close:
            if not conn.closed:
                self._count(conn, reason)
                self.closed(conn, reason, tell_worker=False)  # the worker closed it itself
                assert conn.transport is not None
                conn.transport.close()  # lets the replies above go out first

    def _bind(self, conn: GameConnection, worker: bytes) -> None:
        conn.worker = worker
        self.by_worker.setdefault(worker, set()).add(conn.sid)
        if conn.backlog:
            self._outbox.setdefault(worker, []).extend(conn.backlog)
            conn.backlog = []
            self._schedule_flush()
