"""The gateway's client sessions on its ports (login, game, chat), and their side of the bus.

A :class:`ClientConnection` (an ``asyncio.Protocol``) decodes its client's packets with the shared
codec and hands the messages to :class:`Sessions`, the one session table of this gateway, which:

- places a new session with its first message, which must be the port's opening request
  (CS_GAME_REQ_LOGIN on the game port, CS_LOGIN_REQ_LOGIN on the login port, CS_CHAT_REQ_LOGIN
  on the chat port): it goes to the broker as PLACE, keyed by AccountNo, and the broker picks the
  worker (game, auth or chat service);
- binds the session to the worker that takes it (its ACCEPTED, or first reply), and from then on
  forwards its messages to that worker (TO); messages that arrive while the login is in flight
  are held and forwarded, in order, once bound (the login port takes one request per connection);
- gathers everything of one event-loop iteration into one bus message per destination, and
  writes every reply a client got in one bus drain with a single ``transport.write``;
- closes exactly one client on each violation, counting it by reason in ``drops``, and closes
  every client of a worker the broker reports GONE (a login in flight there is answered); a
  close a worker asks for (its CLOSE item) is counted by that worker, so here it goes to
  ``worker_closes``, not ``drops``: each close is in exactly one process's ``drops``;
- enforces the limits: ``max_sessions`` and ``max_per_address`` connections, the login deadline
  after accept, the per-address login rate, ``max_inflight`` requests unanswered per session, and
  ``stall_timeout`` / ``max_outbound`` for a client that does not read its replies.

Flow control: a client's socket is read only while nothing holds it back. What can
(:class:`Hold`): its own requests unanswered reaching ``max_inflight`` (reading resumes when
replies bring it to half; while the gateway is congested, ``fair_inflight`` instead: see
:meth:`Sessions.inflight_cap`, counted as the hold ``fair``), its share of one loop iteration
(``TURN_BUDGET`` messages) used up (resumes next iteration, so a flooding client never starves
the others), its replies piling up unread (the transport's ``pause_writing``; dropped as
``slow_reader`` when it reads none of them for ``stall_timeout``), or the link to its worker
being full (every client of that worker waits; nothing is failed). Bytes read past a limit stay
undecoded in the connection's decoder (one read at most). So per client the gateway holds at most
one read (256 KiB with uvloop) plus one partial packet, ``max_inflight`` requests on the bus, and
``max_outbound`` bytes of replies (the kernel keeps at most ``CLIENT_SNDBUF`` more).

Bound sessions' items go straight to their worker over the data port (:mod:`cluster.datalink`);
only opening requests go through the broker, which places them. Once a game or chat login is
answered OK (the port's ``admitted`` reply) the session is *relayed*: its packets are no longer
decoded here, only framed (header walk: code and length checked, whole packets counted), and go to
the worker as they came (a PACKETS item per session and turn); the worker decodes them and answers
with encoded replies (ANSWER), written to the client as they are. A chat message reaches its
receivers as DELIVER items: one encoded packet and the sessions to write it to. Whole packets
still refresh the idle timer here, heartbeats included.

The mode rules after login (echo only in GAME mode, AccountNo must match) and the checks of a
relayed packet's payload (mask, checksum, type, size) are the worker's: it owns the session state
and answers a violation with a CLOSE item naming the reason, which it counts in its own ``drops``
(and this gateway in ``worker_closes``, for its log). A CLOSE with an empty reason is a normal end
(the login port after RES_LOGIN).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cluster import bus
from cluster.bus import Item
from cluster.codec import Codec, LocalProtocolError, RemoteProtocolError
from cluster.datalink import GatewayDataPort, Sent
from cluster.link import BusLink
from cluster.messages import (
    CHAT_CLIENT_MESSAGES,
    GAME_CLIENT_MESSAGES,
    LOGIN_CLIENT_MESSAGES,
    ChatReqLogin,
    ChatResLogin,
    GameLoginStatus,
    GameReqLogin,
    GameResLogin,
    LoginReqLogin,
    LoginResLogin,
    LoginStatus,
)
from cluster.outbox import Outbox
from cluster.stats import Rates

log = logging.getLogger("gateway.sessions")

CLOSE, ACCEPTED = bus.Control.CLOSE, bus.Control.ACCEPTED
PACKETS, ANSWER = bus.Control.PACKETS, bus.Control.ANSWER
LOGIN_RESULT, DELIVER = bus.Control.LOGIN_RESULT, bus.Control.DELIVER
RES_LOGIN, GAME_RES_LOGIN = LoginResLogin.TYPE, GameResLogin.TYPE
CHAT_RES_LOGIN = ChatResLogin.TYPE
#: Client requests that a worker answers (what ``max_inflight`` counts).
ANSWERED = bus.COUNTED
#: Messages decoded for one client per turn (loop iteration): a pipelining client waits for the
#: next iteration for more, so one with hundreds in flight cannot delay everyone's iteration.
TURN_BUDGET = 32
#: The gateway is *congested* while its sessions have more than this many times
#: ``max_inflight`` requests unanswered in all; each session may then have only
#: ``gateway.fair_inflight`` unanswered (see :meth:`Sessions.inflight_cap`).
CONGESTED_FACTOR = 2
#: Seconds between two log lines about unencodable replies (each one is counted).
BAD_REPLY_LOG_EVERY = 10.0
#: Kernel send buffer per client socket: replies a client does not read pile up in our transport
#: (where pause_writing sees them) instead of in megabytes of autotuned kernel memory.
CLIENT_SNDBUF = 64 * 1024


class Hold:
    """Why a client's socket is not being read (bits of ``ClientConnection.held``)."""

    INFLIGHT = 1  # max_inflight requests unanswered
    TURN = 2  # its share of this loop iteration is used up
    UNREAD = 4  # its replies pile up unread (transport pause_writing)
    BUS = 8  # the link to its worker is full

    NAMES = {INFLIGHT: "inflight", TURN: "turn", UNREAD: "unread", BUS: "bus"}


@dataclass(frozen=True)
class PortRules:
    """What distinguishes the login, game and chat ports."""

    name: str  # "game" | "login" | "chat"
    service: bytes  # the worker pool that serves it
    accept: frozenset[int]  # client message types admitted (decoded here until relayed)
    opening: int  # the type the first message must have
    single_request: bool  # the login port takes one request per connection
    idle_timeout: float  # seconds of client silence before the connection is dropped; 0 = off
    idle_reason: str  # the drop reason counted for it
    #: The reply that admits a session (type, first field): it is relayed from then on.
    admitted: tuple[int, int] | None = None
    #: The failure reply to a login this gateway answers itself (game and chat ports).
    refusal: Callable[[int], Any] | None = None


def game_rules(heartbeat_timeout: float) -> PortRules:
    return PortRules(
        "game", b"game", GAME_CLIENT_MESSAGES, GameReqLogin.TYPE, False,
        heartbeat_timeout, "heartbeat_timeout", (GAME_RES_LOGIN, GameLoginStatus.OK),
        lambda account_no: GameResLogin(GameLoginStatus.FAIL, account_no),
    )  # fmt: skip


def chat_rules(heartbeat_timeout: float) -> PortRules:
    """The chat port: as the game port, with the chat protocol (status 1 is OK, 0 a failure)."""
    return PortRules(
        "chat", b"chat", CHAT_CLIENT_MESSAGES, ChatReqLogin.TYPE, False,
        heartbeat_timeout, "heartbeat_timeout", (CHAT_RES_LOGIN, 1),
        lambda account_no: ChatResLogin(0, account_no),
    )  # fmt: skip


def login_rules() -> PortRules:
    """The login port: one request per connection, answered, then closed (no idle rule: the
    request must come within login_timeout of accept, like the game port's login)."""
    return PortRules(
        "login", b"auth", LOGIN_CLIENT_MESSAGES, LoginReqLogin.TYPE, True, 0.0, "",
    )  # fmt: skip


class ClientConnection(asyncio.Protocol):
    """One client on the game or login port: its decoder, its flow control, its writes."""

    __slots__ = (
        "account_no",
        "backlog",
        "closed",
        "decoder",
        "held",
        "in_game",
        "inflight",
        "ip",
        "last_recv",
        "opened_at",
        "pending",
        "placed_at",
        "rules",
        "sessions",
        "sid",
        "transport",
        "unread_since",
        "unread_size",
        "worker",
    )

    def __init__(self, sessions: Sessions, rules: PortRules) -> None:
        self.sessions = sessions
        self.rules = rules
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.decoder = sessions.codec.decoder(rules.accept, records=False)
        self.worker: bytes | None = None  # worker holding this session, once bound
        self.placed_at = 0.0  # when the opening request was sent for placement (0: not yet)
        self.backlog: list[list[Any]] = []  # items received while the opening request is in flight
        self.pending: list[bytes] = []  # encoded replies not yet written
        self.last_recv = self.opened_at = time.monotonic()  # last complete packet
        self.account_no = 0  # of the opening request
        self.ip = ""
        self.closed = False
        self.inflight = 0  # requests forwarded and not answered yet
        self.held = 0  # Hold bits: reading is paused while any is set
        self.in_game = False  # its game login was answered OK: relayed as PACKETS from now on
        self.unread_since = 0.0  # since when it read none of its replies (while UNREAD)
        self.unread_size = 0  # its write buffer then

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)
        self.sessions.opened(self)

    def data_received(self, data: bytes) -> None:
        if not self.closed:
            self.sessions.pump(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sessions.closed(self, "client_closed")

    def pause_writing(self) -> None:
        self.unread_since = time.monotonic()
        self.unread_size = self.transport.get_write_buffer_size() if self.transport else 0
        self.hold(Hold.UNREAD)

    def stalled(self, now: float, timeout: float) -> bool:
        """Whether it has read none of its replies for `timeout` seconds (while UNREAD, nothing
        new is read from it, so its write buffer only shrinks when it reads)."""
        assert self.transport is not None
        size = self.transport.get_write_buffer_size()
        if size < self.unread_size:
            self.unread_since = now
        self.unread_size = size  # compared at the next sweep (replies in flight may add to it)
        return self.unread_since < now - timeout

    def resume_writing(self) -> None:
        self.release(Hold.UNREAD)

    # -- its operations --------------------------------------------------------------------------

    def hold(self, why: int) -> None:
        """Stop reading the socket for reason `why` (a :class:`Hold` bit); counted."""
        if self.held & why:
            return
        if not self.held and not self.closed and self.transport is not None:
            self.transport.pause_reading()
        self.held |= why
        self.sessions.holds[Hold.NAMES[why]] += 1

    def release(self, why: int) -> None:
        """Lift reason `why`; reading resumes when no reason is left (after what is already
        buffered is decoded, if a whole packet is)."""
        if self.held & why:
            self.held &= ~why
            if not self.held and not self.closed and self.transport is not None:
                if self.decoder.has_packet():  # stays paused: decode those first
                    self.held = Hold.TURN
                    self.sessions.take_turn(self)
                else:
                    self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def queue(self, data: bytes) -> bool:
        """Queue encoded replies for this iteration's one write; True when it is the first
        (the caller then writes it out with :meth:`write_queued`)."""
        first = not self.pending
        self.pending.append(data)
        return first

    def write_queued(self) -> int:
        """Write the queued replies in one go; the bytes now waiting in the transport."""
        assert self.transport is not None
        self.transport.write(b"".join(self.pending))
        self.pending.clear()
        return self.transport.get_write_buffer_size()

    def forwarded(self, count: int) -> None:
        """`count` requests went to its worker: unanswered until :meth:`answered`."""
        self.inflight += count
        self.sessions.inflight_total += count

    def answered(self, count: int, low: int) -> bool:
        """`count` requests in flight were answered; True when that lifts an INFLIGHT hold
        (fewer than `low` left): the caller reads on from it."""
        count = min(count, self.inflight)
        self.inflight -= count
        self.sessions.inflight_total -= count
        return bool(self.held & Hold.INFLIGHT) and self.inflight <= low

    def refuse(self, reply: bytes) -> None:
        """Answer with `reply` (a login failure) and close once it is written."""
        self.write(reply)
        self.finish()

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        assert self.transport is not None
        self.transport.abort()

    def finish(self) -> None:
        """Close after what is queued has been written."""
        assert self.transport is not None
        self.transport.close()


class Sessions:
    """The session table of one gateway (both ports) and its side of the bus.

    ``admit(ip)`` (optional) decides at accept time whether an address may connect (whiteip).
    ``data`` is the gateway's data port (None: everything goes through the broker). Its handlers
    for bus input are :meth:`replies`, :meth:`unroutable`, :meth:`gone`, :meth:`evicted` and
    :meth:`reset` (see :class:`cluster.dispatch.Dispatcher`)."""

    def __init__(
        self,
        codec: Codec,
        link: BusLink,
        max_sessions: int,
        game_address: tuple[str, int],
        admit: Callable[[str], bool] | None = None,
        max_outbound: int = 1 << 20,
        login_rate: float = 0.0,
        *,
        data: GatewayDataPort | None = None,
        max_inflight: int = 256,
        fair_inflight: int = 32,
        max_per_address: int = 0,
        stall_timeout: float = 10.0,
        counters: Counter[str] | None = None,
        chat_address: tuple[str, int] | None = None,
    ) -> None:
        self.codec = codec
        self.link = link
        self.data = data
        self.max_sessions = max_sessions
        self.game_address = game_address  # this gateway's public game address
        #: this gateway's public chat address (RES_LOGIN's chat fields); the game's by default
        self.chat_address = chat_address or game_address
        self.admit = admit
        self.max_outbound = max_outbound
        self.login_rate = login_rate
        self.max_inflight = max_inflight
        self.fair_inflight = min(fair_inflight, max_inflight) if fair_inflight else max_inflight
        self.congested_at = CONGESTED_FACTOR * max_inflight
        self.inflight_total = 0  # requests unanswered, all sessions together
        self.max_per_address = max_per_address
        self.stall_timeout = stall_timeout
        self._login_buckets: dict[str, list[float]] = {}  # ip -> [tokens, refreshed at]
        self._per_address: Counter[str] = Counter()
        self.table: dict[int, ClientConnection] = {}
        self.by_worker: dict[bytes, set[int]] = {}
        self.drops: Counter[str] = Counter()  # closes this gateway decided, by reason
        #: closes its workers asked for (their CLOSE items), by reason: the workers count them
        self.worker_closes: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()  # per port
        #: bus-side events (see cluster.dispatch), shared with the links that count into it
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self.holds: Counter[str] = Counter()  # times a client's reading was held, by Hold name
        self.received = 0  # client packets decoded
        self.sent = 0  # client packets encoded
        self._rates = Rates()
        self._next_sid = 0
        self.outbox = Outbox(self._send, self.counters, self._hold_clients, self._release_clients)
        self._placements: dict[bytes, list[tuple[int, list[Any]]]] = {}
        self._turns: list[ClientConnection] = []  # connections to read on in the next iteration
        self._flush_scheduled = False
        self._turns_scheduled = False
        self._bad_reply_logged = 0.0
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
        elif self.max_per_address and self._per_address[conn.ip] >= self.max_per_address:
            reason = "max_per_address"
        elif self.admit is not None and not self.admit(conn.ip):
            reason = "not_whitelisted"
        if reason is not None:
            self.drops[reason] += 1
            conn.closed = True
            conn.abort()
            return
        self._next_sid += 1
        conn.sid = self._next_sid
        self.table[conn.sid] = conn
        self._per_address[conn.ip] += 1
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CLIENT_SNDBUF)

    def pump(self, conn: ClientConnection, data: bytes = b"") -> None:
        """Decode what `conn` sent (and had buffered) within its budget, forward it, and decide
        whether its socket may be read on. Nothing is decoded while its replies go unread or
        its worker's link is full (the data stays buffered: one read at most)."""
        # inflight_cap(), inline: this runs for every read of every client
        cap = self.fair_inflight if self.inflight_total > self.congested_at else self.max_inflight
        budget = cap - conn.inflight - len(conn.backlog)
        if budget > TURN_BUDGET:
            budget = TURN_BUDGET
        elif budget < 0:
            budget = 0
        if conn.held & (Hold.UNREAD | Hold.BUS):
            budget = 0
        try:
            if conn.in_game:
                packets, count = conn.decoder.split(data, budget)
                if count:
                    conn.last_recv = time.monotonic()  # only whole packets count as activity
                    self.relay(conn, packets, count)
            else:
                messages = conn.decoder.feed(data, budget)
                if messages:
                    conn.last_recv = time.monotonic()
                    self.from_client(conn, messages)
                    if conn.closed:
                        return
        except RemoteProtocolError as exc:
            self.drop(conn, exc.reason)
            return
        if conn.held & (Hold.UNREAD | Hold.BUS):
            return  # lifting those decodes the rest
        if not conn.decoder.has_packet():
            conn.release(Hold.INFLIGHT | Hold.TURN)
        elif conn.inflight + len(conn.backlog) >= cap:
            if cap < self.max_inflight and not conn.held & Hold.INFLIGHT:
                self.holds["fair"] += 1  # held at its fair share of a congested gateway
            conn.hold(Hold.INFLIGHT)  # replies lift it (see replies)
        else:
            conn.hold(Hold.TURN)
            self.take_turn(conn)

    def inflight_cap(self) -> int:
        """How many requests one session may have unanswered now: ``max_inflight``, or
        ``fair_inflight`` while the gateway is congested (all sessions together have more than
        ``CONGESTED_FACTOR x max_inflight`` unanswered). A few pipelining clients then cannot
        fill the workers' queues in front of everybody else's requests: the queue every request
        waits in stays about ``CONGESTED_FACTOR x max_inflight`` long, and the pipelining
        clients get a fair share of the workers instead of nearly all of them (README,
        Performance: bench/abuse.py)."""
        if self.inflight_total > self.congested_at:
            return self.fair_inflight
        return self.max_inflight

    def take_turn(self, conn: ClientConnection) -> None:
        """Decode more of what `conn` sent in the next loop iteration."""
        self._turns.append(conn)
        if not self._turns_scheduled:
            self._turns_scheduled = True
            self._loop.call_soon(self._next_turns)

    def _next_turns(self) -> None:
        self._turns_scheduled = False
        turns, self._turns = self._turns, []
        for conn in turns:
            if not conn.closed:
                self.pump(conn)

    def relay(self, conn: ClientConnection, packets: bytes, count: int) -> None:
        """Forward `count` whole packets of a session in game to its worker, undecoded: the
        worker decodes and checks them and answers with encoded replies (ANSWER). Every packet
        counts against ``max_inflight`` until the worker says it handled it."""
        worker = conn.worker
        assert worker is not None  # relayed sessions are bound
        self.received += count
        conn.forwarded(count)
        self.outbox.add(worker, [conn.sid, PACKETS, packets])
        self._schedule_flush()

    def from_client(self, conn: ClientConnection, messages: list[Any]) -> None:
        """Decoded messages of a session not (yet) in game: its opening request is placed, what
        follows it before the login is answered waits (backlog) or goes to its worker."""
        sid, rules = conn.sid, conn.rules
        self.received += len(messages)
        for mtype, fields in messages:
            if conn.worker is not None and not rules.single_request:
                self.outbox.add(conn.worker, [sid, mtype, *fields])
                if mtype in ANSWERED:
                    conn.forwarded(1)
            elif conn.placed_at:
                if rules.single_request:
                    self.drop(conn, "extra_request")
                    return
                conn.backlog.append([sid, mtype, *fields])
            elif mtype == rules.opening:
                conn.account_no = account_no = fields[0]  # both openings lead with AccountNo
                if self.login_rate and not self._login_allowed(conn.ip):
                    self._refuse(conn, "login_rate_limited")
                    return
                conn.placed_at = time.monotonic()
                conn.forwarded(1)
                self._placements.setdefault(rules.service, []).append(
                    (account_no, [sid, mtype, *fields])
                )
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
        (host, port), (chat_host, chat_port) = self.game_address, self.chat_address
        return LoginResLogin(account_no, status, "", "", host, port, chat_host, chat_port)

    def _refuse(self, conn: ClientConnection, reason: str) -> None:
        """Answer a login with a failure status of its port, then close (counted)."""
        if conn.rules.refusal is None:
            reply: Any = self.login_reply(conn.account_no, LoginStatus.NOSERVER)
        else:
            reply = conn.rules.refusal(conn.account_no)
        self._count(conn, reason)
        self.closed(conn, reason, tell_worker=False)
        conn.refuse(self.codec.encode(reply))

    def drop(self, conn: ClientConnection, reason: str, tell_worker: bool = True) -> None:
        """Close one client at once for a violation or a failure; counted under `reason`."""
        if conn.closed:
            return
        self._count(conn, reason)
        self.closed(conn, reason, tell_worker)
        conn.abort()

    def _count(self, conn: ClientConnection, reason: str) -> None:
        self.drops[reason] += 1
        log.debug("%s session %d closed: %s", conn.rules.name, conn.sid, reason)

    def closed(self, conn: ClientConnection, reason: str, tell_worker: bool = True) -> None:
        """Forget a session (idempotent) and, if it was bound and `tell_worker`, tell its worker
        that it is over."""
        if conn.closed:
            return
        conn.closed = True
        self.inflight_total -= conn.inflight  # its answers, if any come, find no session
        conn.inflight = 0
        if self.table.pop(conn.sid, None) is not None:
            self._per_address[conn.ip] -= 1
            if self._per_address[conn.ip] <= 0:
                del self._per_address[conn.ip]
        if conn.worker is not None:
            bound = self.by_worker.get(conn.worker)
            if bound is not None:
                bound.discard(conn.sid)
            if tell_worker:
                self.outbox.add(conn.worker, [conn.sid, CLOSE, reason])
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
        accept, requests unanswered for `reply_timeout`, game clients silent (no whole packet)
        for the heartbeat timeout, and clients that left their replies unread for
        `stall_timeout`. Also forgets idle login-rate buckets."""
        for conn in list(self.table.values()):
            rules = conn.rules
            if conn.held & Hold.UNREAD and conn.stalled(now, self.stall_timeout):
                self.drop(conn, "slow_reader")
            elif self._waiting(conn):
                if conn.placed_at < now - reply_timeout:
                    self.drop(conn, "reply_timeout")
            elif not conn.placed_at:
                if conn.opened_at < now - login_timeout:
                    self.drop(conn, "login_timeout")
            elif rules.idle_timeout and conn.last_recv < now - rules.idle_timeout:
                self.drop(conn, rules.idle_reason)
        for ip in [ip for ip, (_, at) in self._login_buckets.items() if at < now - 60]:
            del self._login_buckets[ip]

    def all_closes(self) -> Counter[str]:
        """Every client this gateway closed, by reason: its own drops and the closes its
        workers asked for (the log's ``drops:`` summary)."""
        return self.drops + self.worker_closes

    def collect(self) -> dict[str, Any]:
        """This gateway's fields of its 1-second sample (see cluster.stats)."""
        per_port: Counter[str] = Counter()
        held = self.outbox.pending
        held += sum(len(entries) for entries in self._placements.values())
        paused = inflight = 0
        for conn in self.table.values():
            per_port[conn.rules.name] += 1
            held += len(conn.backlog)
            inflight += conn.inflight
            paused += bool(conn.held)
        rates = self._rates.update({
            "accept_tps_login": self.accepted["login"], "accept_tps_game": self.accepted["game"],
            "accept_tps_chat": self.accepted["chat"],
            "recv_tps": self.received, "send_tps": self.sent,
        })  # fmt: skip
        return {
            "sessions": len(self.table),
            "sessions_login": per_port["login"],
            "sessions_game": per_port["game"],
            "sessions_chat": per_port["chat"],
            "accept_total_chat": self.accepted["chat"],
            "sessions_paused": paused,
            "inflight": inflight,
            "accept_total_login": self.accepted["login"],
            "accept_total_game": self.accepted["game"],
            "packet_pool": held,
            "drops": dict(self.drops),
            "worker_closes": dict(self.worker_closes),
            "bus_errors": dict(self.counters),
            "holds": dict(self.holds),
            **rates,
        }

    # -- bus side --------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what this loop iteration gathered: one message per worker (over the data port
        when the worker is on it, else TO through the broker), one PLACE per service. Items for
        a worker whose link is full wait, in order, and its clients are held."""
        self._flush_scheduled = False
        self.outbox.flush()
        if self._placements:
            placements, self._placements = self._placements, {}
            for service, entries in placements.items():
                keys = bus.pack_keys([account for account, _ in entries])
                bodies = [bus.pack_body([item]) for _, item in entries]
                if not self.link.send([bus.PLACE, service, keys, *bodies]):
                    self._undeliverable([item for _, item in entries], "bus_unavailable")

    def _send(self, worker: bytes, items: list[list[Any]]) -> bool:
        """The outbox's delivery: hand `items` to `worker`'s link (its data link, else TO through
        the broker); False when that link is full (they wait, in order). Items that can never
        be delivered (the worker's link is lost, no broker) are answered here."""
        body = bus.pack_body(items)
        if self.data is not None and worker in self.data.workers:
            sent = self.data.send(worker, body)
            if sent is Sent.OK:
                self.counters["data_messages"] += 1
                self.counters["data_items"] += len(items)
                return True
            if sent is Sent.UNREACHABLE:
                self.data.forget(worker)
                self.worker_gone(worker, "data_link_lost", tell_worker=False)
                return True
        elif self.link.send([bus.TO, worker, body]):
            return True
        elif self.link.socket is None:  # no broker right now: these items cannot be routed
            self._undeliverable(items, "bus_unavailable")
            return True
        return False

    def _hold_clients(self, worker: bytes) -> None:
        """The link to `worker` is full: stop reading every client of it."""
        for sid in self.by_worker.get(worker, ()):
            conn = self.table.get(sid)
            if conn is not None:
                conn.hold(Hold.BUS)

    def _release_clients(self, worker: bytes) -> None:
        for sid in self.by_worker.get(worker, ()):
            conn = self.table.get(sid)
            if conn is not None:
                conn.release(Hold.BUS)

    def gone(self, identity: bytes, role: str) -> None:
        """The broker says a peer left or was evicted."""
        if self.data is not None:
            self.data.forget(identity)
        self.worker_gone(identity, "worker_gone", tell_worker=False)

    def evicted(self) -> None:
        """The broker had evicted us: every worker released our sessions."""
        for worker in list(self.by_worker):
            self.worker_gone(worker, "worker_gone", tell_worker=False)

    def reset(self) -> None:
        """The broker link was lost or the broker forgot us: the opening requests in flight
        through it may be lost, so they are answered now (the client may try again)."""
        for conn in list(self.table.values()):
            if conn.placed_at and conn.worker is None:
                self._refuse(conn, "broker_lost")

    def unroutable(self, dest: bytes, items: list[Item]) -> None:
        reason = {b"game": "no_game_worker", b"auth": "no_auth_worker",
                  b"chat": "no_chat_worker"}.get(dest, "worker_gone")  # fmt: skip
        self._undeliverable([[sid, mtype] for sid, mtype, _ in items], reason)

    def worker_gone(self, worker: bytes, reason: str = "worker_gone",
                    tell_worker: bool = False) -> None:  # fmt: skip
        """Close every client bound to `worker` (telling it, when it may still be there)."""
        self.outbox.forget(worker)
        sids = self.by_worker.pop(worker, set())
        if sids:
            log.warning("worker %s gone (%s): closing its %d sessions", worker, reason, len(sids))
        for sid in sids:
            conn = self.table.get(sid)
            if conn is None:
                continue
            if tell_worker:
                self.outbox.add(worker, [sid, CLOSE, reason])
                self._schedule_flush()
            if conn.rules.single_request:  # a login in flight on a dead auth worker: answer it
                self._refuse(conn, reason)
            else:
                self.drop(conn, reason, tell_worker=False)

    def _undeliverable(self, items: list[list[Any]], reason: str) -> None:
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

    def replies(self, worker: bytes, items: list[Item]) -> None:
        """Items from a worker (FROM or the data port): bind, answer, close."""
        touched: list[ClientConnection] = []
        to_close: list[tuple[ClientConnection, str]] = []
        relieved: dict[ClientConnection, None] = {}  # ordered set
        encode = self.codec.encode_fields
        low = self.inflight_cap() // 2
        for item in items:
            sid, mtype, fields = item
            if mtype == DELIVER:
                self._deliver(worker, fields[0], fields[1], fields[2], touched)
                continue
            conn = self.table.get(sid)
            if conn is None:
                if mtype != CLOSE:  # the client left while the worker answered
                    self.outbox.add(worker, [sid, CLOSE, "gone"])
                    self._schedule_flush()
                continue
            if conn.worker is None:
                self._bind(conn, worker)
            elif conn.worker != worker:
                self.counters["foreign_item"] += 1  # not the worker holding this session
                continue
            if mtype == ANSWER:
                packets, consumed, count = fields
                if consumed and conn.answered(consumed, low):
                    relieved[conn] = None
                if count:
                    if conn.queue(packets):
                        touched.append(conn)
                    self.sent += count
                continue
            if mtype == ACCEPTED:
                continue
            if mtype == CLOSE:
                to_close.append((conn, fields[0]))
                continue
            if mtype == LOGIN_RESULT:
                # Clients go on to the game and chat ports of the gateway they logged in through.
                (host, port), (chat_host, chat_port) = self.game_address, self.chat_address
                mtype, fields = RES_LOGIN, [*fields, host, port, chat_host, chat_port]
            try:
                data = encode(mtype, fields)  # also the check of the item's fields
            except LocalProtocolError as exc:
                self.drops["bad_reply"] += 1
                now = time.monotonic()
                if now - self._bad_reply_logged > BAD_REPLY_LOG_EVERY:
                    self._bad_reply_logged = now
                    log.error("worker %s sent an unencodable reply (counted in bad_reply): %s",
                              worker, exc)  # fmt: skip
                continue
            admitted = conn.rules.admitted
            if admitted is not None and mtype == admitted[0] and fields[0] == admitted[1]:
                conn.in_game = True
            if conn.answered(1, low):
                relieved[conn] = None
            if conn.queue(data):
                touched.append(conn)
            self.sent += 1
        for conn in touched:
            if conn.closed:
                conn.pending.clear()
            elif conn.write_queued() > self.max_outbound:
                self.drop(conn, "slow_reader")  # it does not read; nobody else waits for it
        for conn, reason in to_close:
            if not conn.closed:
                if reason:
                    self.worker_closes[reason] += 1
                    log.debug("%s session %d closed: %s (by its worker)", conn.rules.name,
                              conn.sid, reason)  # fmt: skip
                self.closed(conn, reason, tell_worker=False)  # the worker closed it itself
                conn.finish()  # lets the replies above go out first
        for conn in relieved:
            if not conn.closed:
                self.pump(conn)

    def _deliver(self, worker: bytes, packets: bytes, count: int, packed: bytes,
                 touched: list[ClientConnection]) -> None:  # fmt: skip
        """A DELIVER item: `packets` (`count` packets) for every session of `worker` listed in
        `packed`. Sessions that left meanwhile are skipped (their worker hears of it by their
        CLOSE)."""
        if len(packed) % 8:
            self.counters["bad_bus_item"] += 1
            return
        sids = array("q")
        sids.frombytes(packed)
        table = self.table
        delivered = 0
        for sid in sids:
            conn = table.get(sid)
            if conn is None:
                continue
            if conn.worker != worker:
                self.counters["foreign_item"] += 1  # not the worker holding this session
                continue
            pending = conn.pending
            if not pending:
                touched.append(conn)
            pending.append(packets)
            delivered += 1
        self.sent += delivered * count

    def _bind(self, conn: ClientConnection, worker: bytes) -> None:
        conn.worker = worker
        self.by_worker.setdefault(worker, set()).add(conn.sid)
        if self.outbox.stalled(worker):
            conn.hold(Hold.BUS)
        if conn.backlog:
            backlog, conn.backlog = conn.backlog, []
            conn.forwarded(sum(1 for item in backlog if item[1] in ANSWERED))
            for item in backlog:
                self.outbox.add(worker, item)
            self._schedule_flush()
            if conn.held & Hold.INFLIGHT:  # the backlog counted against it; it may read again
                conn.release(Hold.INFLIGHT)
                self.take_turn(conn)
