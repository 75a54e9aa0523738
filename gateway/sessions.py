"""The gateway's client sessions on both ports, and their side of the bus.

A :class:`ClientConnection` (an ``asyncio.Protocol``) decodes its client's packets with the shared
codec and hands the messages to :class:`Sessions`, the one session table of this gateway, which:

- places a new session with its first message, which must be the port's opening request
  (CS_GAME_REQ_LOGIN on the game port, CS_LOGIN_REQ_LOGIN on the login port): it goes to the
  broker as PLACE, keyed by AccountNo, and the broker picks the worker (game or auth service);
- binds the session to the worker that takes it (its ACCEPTED, or first reply), and from then on
  forwards its messages to that worker (TO); messages that arrive while the login is in flight
  are held and forwarded, in order, once bound (the login port takes one request per connection);
- gathers everything of one event-loop iteration into one bus message per destination, and
  writes every reply a client got in one bus drain with a single ``transport.write``;
- closes exactly one client on each violation, counting it by reason in ``drops``, and closes
  every client of a worker the broker reports GONE (a login in flight there is answered);
- enforces the limits: ``max_sessions``, the login deadline after accept, the per-address login
  rate, and ``max_outbound`` bytes queued for a client that does not read.

The mode rules after login (echo only in GAME mode, AccountNo must match) are the worker's: it
owns the session state and answers a violation with a CLOSE item naming the reason, which is
counted here too. A CLOSE with an empty reason is a normal end (the login port after RES_LOGIN).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster import bus
from cluster.codec import Codec, LocalProtocolError, RemoteProtocolError
from cluster.link import BusLink
from cluster.messages import (
    GAME_CLIENT_MESSAGES,
    LOGIN_CLIENT_MESSAGES,
    GameLoginStatus,
    GameReqLogin,
    GameResLogin,
    LoginReqLogin,
    LoginResLogin,
    LoginStatus,
)
from cluster.stats import Rates

log = logging.getLogger("gateway.sessions")

CLOSE, ACCEPTED = bus.Control.CLOSE, bus.Control.ACCEPTED
RES_LOGIN = LoginResLogin.TYPE


@dataclass(frozen=True)
class PortRules:
    """What distinguishes the login port from the game port."""

    name: str  # "game" | "login"
    service: bytes  # the worker pool that serves it
    accept: frozenset[int]  # client message types admitted
    opening: int  # the type the first message must have
    single_request: bool  # the login port takes one request per connection
    idle_timeout: float  # seconds of client silence before the connection is dropped; 0 = off
    idle_reason: str  # the drop reason counted for it


def game_rules(heartbeat_timeout: float) -> PortRules:
    return PortRules(
        "game", b"game", GAME_CLIENT_MESSAGES, GameReqLogin.TYPE, False,
        heartbeat_timeout, "heartbeat_timeout",
    )  # fmt: skip


def login_rules() -> PortRules:
    """The login port: one request per connection, answered, then closed (no idle rule: the
    request must come within login_timeout of accept, like the game port's login)."""
    return PortRules(
        "login", b"auth", LOGIN_CLIENT_MESSAGES, LoginReqLogin.TYPE, True, 0.0, "",
    )  # fmt: skip


class ClientConnection(asyncio.Protocol):
    """One client on the game or login port."""

    __slots__ = (
        "account_no",
        "backlog",
        "closed",
        "decoder",
        "ip",
        "last_recv",
        "opened_at",
        "pending",
        "placed_at",
        "rules",
        "sessions",
        "sid",
        "transport",
        "worker",
    )

    def __init__(self, sessions: Sessions, rules: PortRules) -> None:
        self.sessions = sessions
        self.rules = rules
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.decoder = sessions.codec.decoder(rules.accept)
        self.worker: bytes | None = None  # worker holding this session, once bound
        self.placed_at = 0.0  # when the opening request was sent for placement (0: not yet)
        self.backlog: list[list[Any]] = []  # items received while the opening request is in flight
        self.pending: list[bytes] = []  # encoded replies not yet written
        self.last_recv = self.opened_at = time.monotonic()
        self.account_no = 0  # of the opening request
        self.ip = ""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sessions.opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_recv = time.monotonic()
        try:
            messages = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            self.sessions.drop(self, exc.reason)
            return
        if messages:
            self.sessions.from_client(self, messages)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.closed(self, "client_closed")


class Sessions:
    """The session table of one gateway (both ports) and its side of the bus.

    ``admit(ip)`` (optional) decides at accept time whether an address may connect (whiteip)."""

    def __init__(
        self,
        codec: Codec,
        link: BusLink,
        max_sessions: int,
        game_address: tuple[str, int],
        admit: Callable[[str], bool] | None = None,
        max_outbound: int = 1 << 20,
        login_rate: float = 0.0,
    ) -> None:
        self.codec = codec
        self.link = link
        self.max_sessions = max_sessions
        self.game_address = game_address  # this gateway's public game address
        self.admit = admit
        self.max_outbound = max_outbound
        self.login_rate = login_rate
        self._login_buckets: dict[str, list[float]] = {}  # ip -> [tokens, refreshed at]
        self.table: dict[int, ClientConnection] = {}
        self.by_worker: dict[bytes, set[int]] = {}
        self.drops: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()  # per port
        self.received = 0  # client packets decoded
        self.sent = 0  # client packets encoded
        self._rates = Rates()
        self._next_sid = 0
        self._outbox: dict[bytes, list[list[Any]]] = {}
        self._placements: dict[bytes, list[tuple[int, list[Any]]]] = {}
        self._flush_scheduled = False
        self._loop = asyncio.get_event_loop()

    def factory(self, rules: PortRules) -> Callable[[], ClientConnection]:
        """Protocol factory for ``loop.create_server`` on the port `rules` describe."""
        return lambda: ClientConnection(self, rules)

    # -- client side -----------------------------------------------------------------------------

    def opened(self, conn: ClientConnection) -> None:
        self.accepted[conn.rules.name] += 1
        assert conn.transport is not None
        peer = conn.transport.get_extra_info("peername")
        conn.ip = peer[0] if peer else ""
        reason = None
        if len(self.table) >= self.max_sessions:
            reason = "max_sessions"
        elif self.admit is not None and not self.admit(conn.ip):
            reason = "not_whitelisted"
        if reason is not None:
            self.drops[reason] += 1
            conn.closed = True
            conn.transport.abort()
            return
        self._next_sid += 1
        conn.sid = self._next_sid
        self.table[conn.sid] = conn

    def from_client(self, conn: ClientConnection, messages: list[Any]) -> None:
        if conn.closed:
            return
        sid, rules = conn.sid, conn.rules
        self.received += len(messages)
        for message in messages:
            item = [sid, message.TYPE, *message]
            if conn.worker is not None and not rules.single_request:
                outbox = self._outbox.get(conn.worker)
                if outbox is None:
                    self._outbox[conn.worker] = outbox = []
                outbox.append(item)
            elif conn.placed_at:
                if rules.single_request:
                    self.drop(conn, "extra_request")
                    return
                conn.backlog.append(item)
            elif message.TYPE == rules.opening:
                conn.account_no = message.account_no
                if self.login_rate and not self._login_allowed(conn.ip):
                    self._refuse(conn, "login_rate_limited")
                    return
                conn.placed_at = time.monotonic()
                self._placements.setdefault(rules.service, []).append((message.account_no, item))
            else:
                self.drop(conn, "not_logged_in")
                return
        self._schedule_flush()

    def _login_allowed(self, ip: str) -> bool:
        """A token bucket per client address: `login_rate` per second, burst the same."""
        now = time.monotonic()
        bucket = self._login_buckets.get(ip)
        if bucket is None:
            bucket = self._login_buckets[ip] = [self.login_rate, now]
        bucket[0] = min(self.login_rate, bucket[0] + (now - bucket[1]) * self.login_rate)
        bucket[1] = now
        if bucket[0] < 1:
            return False
        bucket[0] -= 1
        return True

    def login_reply(self, account_no: int, status: int) -> LoginResLogin:
        """A RES_LOGIN this gateway answers itself (no auth worker could)."""
        host, port = self.game_address
        return LoginResLogin(account_no, status, "", "", host, port, host, port)

    def _refuse(self, conn: ClientConnection, reason: str) -> None:
        """Answer a login with a failure status of its port, then close (counted)."""
        if conn.rules.single_request:
            reply: Any = self.login_reply(conn.account_no, LoginStatus.NOSERVER)
        else:
            reply = GameResLogin(GameLoginStatus.FAIL, conn.account_no)
        assert conn.transport is not None
        conn.transport.write(self.codec.encode(reply))
        self._count(conn, reason)
        self.closed(conn, reason, tell_worker=False)
        conn.transport.close()

    def drop(self, conn: ClientConnection, reason: str, tell_worker: bool = True) -> None:
        """Close one client at once for a violation or a failure; counted under `reason`."""
        if conn.closed:
            return
        self._count(conn, reason)
        self.closed(conn, reason, tell_worker)
        assert conn.transport is not None
        conn.transport.abort()

    def _count(self, conn: ClientConnection, reason: str) -> None:
        self.drops[reason] += 1
        log.debug("%s session %d closed: %s", conn.rules.name, conn.sid, reason)

    def closed(self, conn: ClientConnection, reason: str, tell_worker: bool = True) -> None:
        """Forget a session (idempotent) and, if it was bound and `tell_worker`, tell its worker
        that it is over."""
        if conn.closed:
            return
        conn.closed = True
        self.table.pop(conn.sid, None)
        if conn.worker is not None:
            bound = self.by_worker.get(conn.worker)
            if bound is not None:
                bound.discard(conn.sid)
            if tell_worker:
                self._outbox.setdefault(conn.worker, []).append([conn.sid, CLOSE, reason])
                self._schedule_flush()

    @staticmethod
    def _waiting(conn: ClientConnection) -> bool:
        """Its opening request is forwarded and not yet answered."""
        return bool(conn.placed_at) and (conn.worker is None or conn.rules.single_request)

    def waiting(self) -> int:
        """Sessions whose opening request is forwarded and not yet answered."""
        return sum(1 for conn in self.table.values() if self._waiting(conn))

    def sweep(self, now: float, reply_timeout: float, login_timeout: float) -> None:
        """Drop connections whose opening request did not arrive within `login_timeout` of
        accept, requests unanswered for `reply_timeout`, and game clients silent for the
        heartbeat timeout. Also forgets idle login-rate buckets."""
        for conn in list(self.table.values()):
            rules = conn.rules
            if self._waiting(conn):
                if conn.placed_at < now - reply_timeout:
                    self.drop(conn, "reply_timeout")
            elif not conn.placed_at:
                if conn.opened_at < now - login_timeout:
                    self.drop(conn, "login_timeout")
            elif rules.idle_timeout and conn.last_recv < now - rules.idle_timeout:
                self.drop(conn, rules.idle_reason)
        for ip in [ip for ip, (_, at) in self._login_buckets.items() if at < now - 60]:
            del self._login_buckets[ip]

    def collect(self) -> dict[str, Any]:
        """This gateway's fields of its 1-second sample (see cluster.stats)."""
        per_port: Counter[str] = Counter()
        held = sum(len(items) for items in self._outbox.values())
        held += sum(len(entries) for entries in self._placements.values())
        for conn in self.table.values():
            per_port[conn.rules.name] += 1
            held += len(conn.backlog)
        rates = self._rates.update({
            "accept_tps_login": self.accepted["login"], "accept_tps_game": self.accepted["game"],
            "recv_tps": self.received, "send_tps": self.sent,
        })  # fmt: skip
        return {
            "sessions": len(self.table),
            "sessions_login": per_port["login"],
            "sessions_game": per_port["game"],
            "accept_total_login": self.accepted["login"],
            "accept_total_game": self.accepted["game"],
            "packet_pool": held,
            "drops": dict(self.drops),
            **rates,
        }

    # -- bus side --------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what this loop iteration gathered: one TO per worker, one PLACE per service."""
        self._flush_scheduled = False
        if self._outbox:
            outbox, self._outbox = self._outbox, {}
            for worker, items in outbox.items():
                if not self.link.send([bus.TO, worker, bus.pack_body(items)]):
                    self._undeliverable(items, "bus_unavailable")
        if self._placements:
            placements, self._placements = self._placements, {}
            for service, entries in placements.items():
                keys = bus.pack_keys([account for account, _ in entries])
                bodies = [bus.pack_body([item]) for _, item in entries]
                if not self.link.send([bus.PLACE, service, keys, *bodies]):
                    self._undeliverable([item for _, item in entries], "bus_unavailable")

    def on_bus(self, frames: list[bytes]) -> None:
        """Handle FROM / UNROUTABLE / GONE from the link."""
        command = frames[0]
        if command == bus.FROM and len(frames) >= 3:
            self._replies(frames[1], frames[2:])
        elif command == bus.UNROUTABLE and len(frames) >= 2:
            reason = {b"game": "no_game_worker", b"auth": "no_auth_worker"}.get(
                frames[1], "worker_gone"
            )
            for body in frames[2:]:
                self._undeliverable(self._items(body), reason)
        elif command == bus.GONE and len(frames) >= 2:
            self.worker_gone(frames[1])
        elif command == bus.EVICTED:  # every worker released our sessions when we were evicted
            for worker in list(self.by_worker):
                self.worker_gone(worker)

    def worker_gone(self, worker: bytes) -> None:
        """Close every client bound to `worker`."""
        sids = self.by_worker.pop(worker, set())
        if sids:
            log.warning("worker %s gone: closing its %d sessions", worker, len(sids))
        for sid in sids:
            conn = self.table.get(sid)
            if conn is None:
                continue
            if conn.rules.single_request:  # a login in flight on a dead auth worker: answer it
                self._refuse(conn, "worker_gone")
            else:
                self.drop(conn, "worker_gone", tell_worker=False)

    def _items(self, body: bytes) -> list[Any]:
        try:
            return bus.unpack_body(body)
        except ValueError:
            self.drops["bad_bus_body"] += 1
            return []

    def _undeliverable(self, items: list[Any], reason: str) -> None:
        for item in items:
            conn = self.table.get(item[0])
            if conn is None or item[1] == CLOSE:
                continue
            if item[1] == conn.rules.opening:
                # A login nobody could take is answered with the port's failure status (as the
                # original's login server answered NOSERVER), not left to a silent close.
                self._refuse(conn, reason)
            else:
                self.drop(conn, reason)

    def _replies(self, worker: bytes, bodies: list[bytes]) -> None:
        touched: list[ClientConnection] = []
        to_close: list[tuple[ClientConnection, str]] = []
        encode = self.codec.encode_fields
        for body in bodies:
            for item in self._items(body):
                conn = self.table.get(item[0])
                if conn is None:
                    if item[1] != CLOSE:  # the client left while the worker answered
                        self._outbox.setdefault(worker, []).append([item[0], CLOSE, "gone"])
                        self._schedule_flush()
                    continue
                if conn.worker is None:
                    self._bind(conn, worker)
                if item[1] == ACCEPTED:
                    continue
                if item[1] == CLOSE:
                    to_close.append((conn, str(item[2])))
                    continue
                if item[1] == RES_LOGIN and len(item) == 10:
                    # Clients go on to the game port of the gateway they logged in through.
                    host, port = self.game_address
                    item[6:10] = (host, port, host, port)
                try:
                    data = encode(item[1], item[2:])
                except LocalProtocolError as exc:
                    log.error("worker %s sent an unencodable reply: %s", worker, exc)
                    self.drops["bad_reply"] += 1
                    continue
                if not conn.pending:
                    touched.append(conn)
                conn.pending.append(data)
                self.sent += 1
        for conn in touched:
            if not conn.closed:
                transport = conn.transport
                assert transport is not None
                transport.write(b"".join(conn.pending))
                if transport.get_write_buffer_size() > self.max_outbound:
                    self.drop(conn, "slow_reader")  # it does not read; nobody else waits for it
            conn.pending.clear()
        for conn, reason in to_close:
            if not conn.closed:
                if reason:
                    self._count(conn, reason)
                self.closed(conn, reason, tell_worker=False)  # the worker closed it itself
                assert conn.transport is not None
                conn.transport.close()  # lets the replies above go out first

    def _bind(self, conn: ClientConnection, worker: bytes) -> None:
        conn.worker = worker
        self.by_worker.setdefault(worker, set()).add(conn.sid)
        if conn.backlog:
            self._outbox.setdefault(worker, []).extend(conn.backlog)
            conn.backlog = []
            self._schedule_flush()
