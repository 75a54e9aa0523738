"""The one worker runtime: sessions in AUTH then GAME mode, run by an auth loop and a game loop,
for whichever app (:mod:`workers.apps`) the worker runs: the echo game on ``game`` workers, the
sector chat on ``chat`` workers, or a user's own.

As in the original MMOServer model, every session has an inbox of received packets, and two
loops share this process's single thread (the original ran them on two threads):

- the **auth loop** handles AUTH-mode sessions: the app's opening request only (the app's own
  pre-checks, such as the echo game's version, then the :mod:`key check <workers.keycheck>` of the
  link mode, then, for an app that tracks them, the account's status row); a session that logs
  in moves to AUTH_TO_GAME. It also sends HOLD / FREE and answers the auth workers' link items;
- the **game loop** moves AUTH_TO_GAME sessions to GAME (the app's ``joined``) and hands
  GAME-mode packets to the app's handlers, then calls the app's ``end_frame``.

Each loop is scheduled on its own: one of its frames runs in the next event-loop iteration once
it has work (a login, an admission's answer, a link item for the auth loop; game packets,
sessions joining, an app's :meth:`Host.wake` for the game loop), and at least every
``frame_interval`` of the role's section on its own timer. AuthFPS counts the auth loop's frames
per second and GameFPS (the chat's Update TPS) the game loop's, so under echo traffic alone
GameFPS rises while AuthFPS stays at its timer's pace, and a burst of refused logins does the
opposite. A session's packets are handled in arrival order, and a packet is judged in the mode
the session is in when it is handled. A frame's output goes out at its end as one bus message per
destination, in the order it was made (an auth frame followed, in the same iteration, by a game
frame leaves its output to that game frame, so a login reply and the first replies of the game go
out together).

An account has at most one session on the workers of a role, and the broker sends every login of
an account to the worker of that role that holds it (this worker says HOLD / FREE as that
changes), so a second login of an account is refused whichever gateway it came through.

In systemlink mode auth workers push keys (SS_REQ_NEW_CLIENT_LOGIN); the worker stores them
(:mod:`workers.pending_keys`) and ACKs at once with the same Parameter.

Once its login is answered OK, a session is *relayed* by its gateway: its packets arrive as they
came from the client (PACKETS items, masked, whole packets) and are decoded here with the shared
codec and the app's message table, and its replies go back encoded (one ANSWER item per session
and frame, which also says how many of its packets were handled: the gateway's ``max_inflight``
counts them). So the codec's work on the hot path is the workers', which scale out, not the
gateway's. Output for other sessions (a chat message's receivers) goes as DELIVER items: one
encoded packet and the list of sessions of one gateway to write it to.

A violation (a message not allowed in the session's mode, a handler's :class:`Violation`, a
failed login, a relayed packet that breaks the wire protocol) answers the gateway with a CLOSE
item naming the reason; the gateway closes the client (after the replies before it). The close is
counted here, in this worker's ``drops`` (the gateway counts it in ``worker_closes`` only).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable
from enum import IntEnum
from typing import Any

from cluster import bus
from cluster.bus import Item
from cluster.codec import Codec, RemoteProtocolError, StreamDecoder
from cluster.config import Config
from cluster.datalink import WorkerDataLinks, worker_data_links
from cluster.db import Database, open_database
from cluster.dispatch import Dispatcher, Roster
from cluster.link import BusLink, bus_link
from cluster.outbox import Outbox, worker_delivery
from cluster.role import Role, StartupError
from cluster.stats import ProcessSampler, Rates, Reporter
from workers.apps import App, AppError, Violation, load_app
from workers.keycheck import AcceptAnyKey, KeyCheck, PendingKeyCheck, StoredKeyCheck
from workers.pending_keys import PendingKeys
from workers.status_rows import StatusRows

log = logging.getLogger("workers.host")

CLOSE, CANCEL_KEY, ACCEPTED = bus.Control.CLOSE, bus.Control.CANCEL_KEY, bus.Control.ACCEPTED
IN_GAME, PACKETS, ANSWER = bus.Control.IN_GAME, bus.Control.PACKETS, bus.Control.ANSWER
DELIVER = bus.Control.DELIVER
PUSH, ACK = bus.LinkType.REQ_NEW_CLIENT_LOGIN, bus.LinkType.RES_NEW_CLIENT_LOGIN
#: What the summary line in the log shows.
LOG_KEYS = ("sessions", "session_auth", "session_game", "auth_fps", "game_fps", "recv_tps",
            "send_tps", "login_tps")  # fmt: skip
#: Seconds a stopping worker waits for its status rows to be reset.
SHUTDOWN_GRACE = 5.0


class Mode(IntEnum):
    """Session modes of the original's MMOServer that matter here."""

    AUTH = 1
    AUTH_TO_GAME = 2
    GAME = 3


class PlayerSession:
    """One client session held by this worker (keyed by its gateway and the gateway's id).
    ``state`` is the app's (the chat keeps the player's sector and names there)."""

    __slots__ = (
        "account_no",
        "decoder",
        "entered",
        "gateway",
        "inbox",
        "mode",
        "refusal",
        "relayed",
        "released",
        "replacing",
        "sid",
        "state",
        "verdict",
        "verifying",
    )

    def __init__(self, gateway: bytes, sid: int) -> None:
        self.gateway = gateway
        self.sid = sid
        self.account_no: int | None = None  # set by its opening request
        self.mode = Mode.AUTH
        self.inbox: deque[Item] = deque()
        #: Its relayed packets, decoded: ``(type, fields, packet)``; they follow all of `inbox`.
        self.relayed: deque[tuple[int, tuple[Any, ...], bytes]] = deque()
        self.decoder: StreamDecoder | None = None  # its relayed packets' decoder, once relayed
        self.verifying = False  # an awaitable admission is running
        self.verdict: bool | None = None  # its answer, for the next auth frame
        self.entered = False  # its status row was set to 1
        self.released = False
        #: the session of the same account this login takes over once its key is proven
        self.replacing: PlayerSession | None = None
        self.refusal = ""  # why its admission was refused, when not for its key
        self.state: Any = None


class Host:
    """The session table and the two loops, running `app`. ``link`` must be attached before
    :meth:`start`. `role` is the bus role (``game``, ``chat``) and names the config section
    (frame_interval, max_inbox). `status_rows` is None when accounts are not tracked in the DB."""

    def __init__(
        self,
        config: Config,
        role: str,
        app: App,
        key_check: KeyCheck,
        pending: PendingKeys | None = None,
        status_rows: StatusRows | None = None,
    ) -> None:
        section = config.chat if role == "chat" else config.game
        protocol = config.protocol
        self.role = role
        self.app = app
        self.codec = Codec(protocol.code, protocol.key1, protocol.key2)
        self.frame_interval = section.frame_interval
        self.max_inbox = section.max_inbox
        self.key_check = key_check
        self.pending = pending
        self.status_rows = status_rows
        self.link: BusLink | None = None
        self.data: WorkerDataLinks | None = None
        self.outbox: Outbox | None = None
        self.identity = b""
        #: The other workers of this role (per the broker's ROSTER), for :meth:`cast`.
        self.peers: list[bytes] = []
        self._queued = 0  # items received since the last frame
        self.gateways: dict[bytes, dict[int, PlayerSession]] = {}
        self.by_account: dict[int, PlayerSession] = {}
        self.session_count = 0
        self.counters: Counter[str] = Counter()
        self.received = 0  # session items and relayed packets in (PacketProc)
        self.sent = 0  # packets to clients out (a delivery to n sessions counts n)
        self._rates = Rates()
        self._next_expiry = 0.0
        self._auth_ready: dict[PlayerSession, None] = {}  # ordered set
        self._game_ready: dict[PlayerSession, None] = {}
        self._joining: list[PlayerSession] = []
        self._hold: set[int] = set()
        self._free: set[int] = set()
        self._admitting: set[asyncio.Future[None]] = set()
        self._auth_scheduled = False
        self._game_scheduled = False
        self._auth_timer: asyncio.TimerHandle | None = None
        self._game_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()
        #: The session whose relayed packets are being handled, and its replies so far.
        self._current: PlayerSession | None = None
        self._replies: list[bytes] = []
        self.draining = False
        #: Closes this worker decided, by reason: its sample's ``drops`` (its gateway closes
        #: the client and does not count it again).
        self.closes: Counter[str] = Counter()
        app.bind(self)

    def attach(self, link: BusLink, data: WorkerDataLinks | None = None) -> None:
        """Wire the broker link and (when gateways have data ports) the data links."""
        self.link = link
        self.identity = link.identity
        self.data = data
        self.outbox = Outbox(worker_delivery(link, self.counters, data), self.counters)

    # -- what apps call --------------------------------------------------------------------------

    def deliver(
        self, gateway: bytes, sids: bytes, receivers: int, packets: bytes, count: int
    ) -> None:
        """Write `packets` (`count` whole encoded packets) to the `receivers` sessions of
        `gateway` whose ids `sids` packs (little-endian int64 each), after everything already
        queued for them (the replies of the session being handled included)."""
        if self._current is not None and self._replies:
            self._flush_replies(self._current, 0)
        self.outbox_add(gateway, [0, DELIVER, packets, count, sids])
        self.sent += receivers * count

    def wake(self) -> None:
        """Run a game frame soon (an app that queued output outside a frame, e.g. in
        peer_item)."""
        self._schedule_game()

    def cast(self, item: list[Any]) -> None:
        """Send `item` to every other worker of this role (their app's ``peer_item``)."""
        for peer in self.peers:
            self.outbox_add(peer, item)

    def close(self, session: PlayerSession, reason: str) -> None:
        """Close a session for `reason` (counted), telling its gateway."""
        self._close(session, reason)

    # -- bus side --------------------------------------------------------------------------------

    def dispatcher(self) -> Dispatcher:
        """The bus dispatcher that feeds this worker (the broker link and the data links)."""
        return Dispatcher(
            self.counters, items=self.received_items, unroutable=self.unroutable,
            gone=self.gone, roster=self.roster, evicted=self.evicted,
            registered=self.registered,
        )  # fmt: skip

    def gone(self, identity: bytes, role: str) -> None:
        if role == self.role:
            if self.status_rows is not None:
                self.status_rows.release_owner(identity.decode(errors="replace"))
            if identity in self.peers:
                self.peers.remove(identity)
            if self.outbox is not None:
                self.outbox.forget(identity)
        else:
            if self.data is not None:
                self.data.forget(identity)
            self.peer_gone(identity)

    def unroutable(self, dest: bytes, items: list[Item]) -> None:
        if self.app.peer_types and all(mtype in self.app.peer_types for _, mtype, _ in items):
            self.counters["cast_lost"] += len(items)  # that worker is gone: its sessions too
            return
        self.peer_gone(dest)

    def evicted(self) -> None:
        """Every gateway was told we are gone: so are our sessions."""
        for gateway in list(self.gateways):
            self.peer_gone(gateway)

    def roster(self, roster: Roster) -> None:
        me = self.identity.decode(errors="replace")
        self.peers = [name.encode() for name in roster.of(self.role) if name != me]
        if self.data is not None:
            self.data.learn(roster.data)

    def registered(self, fresh: bool) -> None:
        """(Re-)registered with the broker: tell it every account held here, so that a
        restarted broker places their logins and key pushes here again."""
        held = set(self.by_account)
        if self.pending is not None:
            held.update(self.pending.accounts())
        if held:
            self._free.difference_update(held)
            self._hold.update(held)
            self._schedule_auth()

    def received_items(self, source: bytes, items: list[Item]) -> None:
        table = self.gateways.get(source)
        if table is None:
            table = self.gateways[source] = {}
        received = len(items)
        login_type, peer_types = self.app.login_type, self.app.peer_types
        for item in items:
            sid, mtype, fields = item
            session = table.get(sid)
            if session is None:
                if mtype == login_type and self.draining:
                    self.outbox_add(source, [sid, CLOSE, "worker_draining"])
                    continue
                if mtype == login_type:
                    session = table[sid] = PlayerSession(source, sid)
                    self.session_count += 1
                    self.outbox_add(source, [sid, ACCEPTED])  # the gateway binds it to us
                elif mtype in (PUSH, CANCEL_KEY, IN_GAME):
                    self._link_item(source, item)
                    continue
                elif mtype in peer_types:
                    self.app.peer_item(source, mtype, fields)
                    continue
                else:
                    if mtype != CLOSE:  # the session ended here before this arrived
                        self.outbox_add(source, [sid, CLOSE, "unknown_session"])
                    continue
            elif mtype == PACKETS:
                received += self._relayed(session, fields[0]) - 1
                continue
            elif mtype == CLOSE:
                self.release(session)
                continue
            session.inbox.append(item)
            if session.mode is Mode.GAME:
                self._game_ready[session] = None
            else:
                self._auth_ready[session] = None
        if not table:
            del self.gateways[source]
        self.received += received
        self._queued += received
        if self._queued > self.max_inbox and self.data is not None and not self.data.paused:
            self.counters["inbox_full"] += 1
            self.data.pause()  # resumed once both loops have worked the inbox off
        if self._game_ready or self._joining:
            self._schedule_game()
        if self._auth_ready or self._hold or self._free or not self._game_scheduled:
            self._schedule_auth()  # its work, or output to send (ACCEPTED, ACKs, closes)

    def _relayed(self, session: PlayerSession, packets: bytes) -> int:
        """Decode a relayed session's packets into its inbox; the number decoded."""
        decoder = session.decoder
        if decoder is None:
            if session.mode is Mode.AUTH:  # a gateway out of step: no login was answered OK
                self._close(session, "not_logged_in")
                return 0
            decoder = session.decoder = self.codec.decoder(
                self.app.messages, records=False, packets=True
            )
        try:
            messages = decoder.feed(packets)
        except RemoteProtocolError as exc:
            self._close(session, exc.reason)
            return 0
        session.relayed.extend(messages)
        self._game_ready[session] = None
        return len(messages)

    def _link_item(self, source: bytes, item: Item) -> None:
        """From an auth worker: SS_REQ_NEW_CLIENT_LOGIN and its cancel (systemlink), and the
        IN_GAME question (both modes)."""
        parameter, mtype, fields = item
        account_no = fields[0]
        if mtype == IN_GAME:
            here = account_no in self.by_account
            self.outbox_add(source, [parameter, IN_GAME, account_no, int(here)])
            if not here:
                self._maybe_free(account_no)  # the question placed it here; we do not hold it
            return
        if self.pending is None:
            # No pushed keys here (non-systemlink: the key is read from the DB; verify_key off:
            # any key is admitted): nothing to keep, and nothing a push could add to the check,
            # so it is ACKed at once and the login port does not wait for a timeout.
            if mtype == PUSH:
                self.counters["push_unchecked"] += 1
                self.outbox_add(source, [parameter, ACK, account_no, parameter])
            return
        if mtype == PUSH:
            self.pending.push(account_no, fields[1], parameter)
            self._holding(account_no)
            self.counters["key_pushed"] += 1
            self.outbox_add(source, [parameter, ACK, account_no, parameter])
        elif self.pending.cancel(account_no, parameter):
            self.counters["key_cancelled"] += 1
            self._maybe_free(account_no)

    def outbox_add(self, dest: bytes, item: list[Any]) -> None:
        assert self.outbox is not None
        self.outbox.add(dest, item)

    def peer_gone(self, gateway: bytes) -> None:
        """Release every session of a gateway that left."""
        table = self.gateways.pop(gateway, None)
        assert self.outbox is not None
        self.outbox.forget(gateway)
        if table:
            log.warning("gateway %s gone: releasing its %d sessions", gateway, len(table))
            for session in list(table.values()):
                self.release(session)

    def release(self, session: PlayerSession) -> None:
        """Forget a session (it left, was closed, or its gateway died)."""
        if session.released:
            return
        session.released = True
        session.inbox.clear()
        session.relayed.clear()
        self.session_count -= 1
        table = self.gateways.get(session.gateway)
        if table is not None:
            table.pop(session.sid, None)
        if session.mode is Mode.GAME:
            self.app.left(session)
        account = session.account_no
        if account is not None and self.by_account.get(account) is session:
            del self.by_account[account]
            if session.entered and self.status_rows is not None:
                self.status_rows.leave(account)
            self._maybe_free(account)
        self.counters["released"] += 1

    def _close(self, session: PlayerSession, reason: str) -> None:
        if session.released:
            return
        self.counters[reason] += 1
        self.closes[reason] += 1
        if session is self._current and self._replies:
            self._flush_replies(session, 0)  # what it was answered before the violation
        self.outbox_add(session.gateway, [session.sid, CLOSE, reason])
        self.release(session)

    def _holding(self, account_no: int) -> None:
        self._free.discard(account_no)
        self._hold.add(account_no)

    def _maybe_free(self, account_no: int) -> None:
        if account_no not in self.by_account and (
            self.pending is None or account_no not in self.pending
        ):
            self._hold.discard(account_no)
            self._free.add(account_no)

    def flush(self) -> None:
        """Send this frame's output: HOLD / FREE first (so the broker knows where an account
        lives before anyone hears about it), then one bus message per destination."""
        assert self.link is not None and self.outbox is not None
        if self._hold:
            self.link.send([bus.HOLD, bus.pack_keys(list(self._hold))])
            self._hold.clear()
        if self._free:
            self.link.send([bus.FREE, bus.pack_keys(list(self._free))])
            self._free.clear()
        self.outbox.flush()

    # -- the loops -------------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        """This worker's fields of its 1-second sample (see cluster.stats), the app's included."""
        assert self.outbox is not None
        in_game = inbox = 0
        for table in self.gateways.values():
            for session in table.values():
                inbox += len(session.inbox) + len(session.relayed)
                if session.mode is Mode.GAME:
                    in_game += 1
        rates = self._rates.update({
            "auth_fps": self.counters["auth_frames"], "game_fps": self.counters["game_frames"],
            "recv_tps": self.received, "send_tps": self.sent,
            "login_tps": self.counters["login_ok"],
        })  # fmt: skip
        return {
            "sessions": self.session_count,
            "session_auth": self.session_count - in_game,
            "session_game": in_game,
            "packet_pool": inbox + self.outbox.pending,
            "pending_keys": len(self.pending) if self.pending is not None else 0,
            "drops": dict(self.closes),
            **rates,
            **self.app.collect(),
        }

    def start(self) -> None:
        """Start both loops' timers (a frame of each at least every frame_interval)."""
        self._auth_timer = self._loop.call_later(self.frame_interval, self._auth_tick)
        self._game_timer = self._loop.call_later(self.frame_interval, self._game_tick)

    def stop(self) -> None:
        for timer in (self._auth_timer, self._game_timer):
            if timer is not None:
                timer.cancel()

    def _auth_tick(self) -> None:
        self.run_auth_frame()
        now = time.monotonic()
        if self.pending is not None and now >= self._next_expiry:
            self._next_expiry = now + 1.0
            for account in self.pending.expire(now):
                self.counters["key_expired"] += 1
                self._maybe_free(account)
        self._auth_timer = self._loop.call_later(self.frame_interval, self._auth_tick)

    def _game_tick(self) -> None:
        self.run_game_frame()
        self._game_timer = self._loop.call_later(self.frame_interval, self._game_tick)

    def _schedule_auth(self) -> None:
        if not self._auth_scheduled:
            self._auth_scheduled = True
            self._loop.call_soon(self.run_auth_frame)

    def _schedule_game(self) -> None:
        if not self._game_scheduled:
            self._game_scheduled = True
            self._loop.call_soon(self.run_game_frame)

    def run_auth_frame(self) -> None:
        """One frame of the auth loop, then its output (left to the game frame when one is
        due in this iteration)."""
        self._auth_scheduled = False
        self.auth_frame()
        if self._joining:
            self._schedule_game()
        if not self._game_scheduled:
            self.flush()
        self._frame_done()

    def run_game_frame(self) -> None:
        """One frame of the game loop, the app's end of frame, then the output."""
        self._game_scheduled = False
        self.game_frame()
        self.app.end_frame()
        self.flush()
        self._frame_done()

    def _frame_done(self) -> None:
        """Once neither loop has a frame due, everything received was worked off: reading from
        the gateways resumes if the inbox had filled up."""
        if self._auth_scheduled or self._game_scheduled:
            return
        self._queued = 0
        if self.data is not None and self.data.paused:
            self.data.resume()

    def auth_frame(self) -> None:
        self.counters["auth_frames"] += 1
        if not self._auth_ready:
            return
        ready, self._auth_ready = self._auth_ready, {}
        for session in ready:
            if session.verdict is not None:
                self._finish_login(session, session.verdict)
            while (
                session.inbox
                and session.mode is Mode.AUTH
                and not session.verifying
                and not session.released
            ):
                self._auth_packet(session, session.inbox.popleft())
            if session.mode is Mode.AUTH_TO_GAME:
                self._joining.append(session)

    def game_frame(self) -> None:
        self.counters["game_frames"] += 1
        if self._joining:
            joining, self._joining = self._joining, []
            for session in joining:
                if not session.released:
                    session.mode = Mode.GAME
                    self.app.joined(session)
                    if session.inbox:
                        self._game_ready[session] = None
        if not self._game_ready:
            return
        ready, self._game_ready = self._game_ready, {}
        for session in ready:
            inbox = session.inbox
            while inbox and not session.released:
                self._game_packet(session, inbox.popleft())
            if session.relayed and not session.released:
                self._game_relayed(session)

    def _auth_packet(self, session: PlayerSession, item: Item) -> None:
        _, mtype, fields = item
        if mtype != self.app.login_type:
            self._close(session, "not_logged_in")
            return
        account_no, session_key, refusal = self.app.login(session, fields)
        session.account_no = account_no
        if refusal:
            self._reply_login(session, refusal)
            self._close(session, refusal)
            return
        held = self.by_account.get(account_no)
        if held is not None:
            if held.mode is Mode.AUTH or held.replacing is not None:
                # Its login is still being decided: this one waits its turn as a refusal.
                self._reply_login(session, "duplicate_login")
                self._close(session, "duplicate_login")
                return
            session.replacing = held  # takes it over if its key is proven (see _finish_login)
        else:
            self.by_account[account_no] = session
            self._holding(account_no)
        verdict = self.key_check(account_no, session_key)
        if self.status_rows is None and not inspect.isawaitable(verdict):
            self._finish_login(session, bool(verdict))
            return
        self._start_admission(session, verdict)

    def _start_admission(self, session: PlayerSession, verdict: bool | Awaitable[bool]) -> None:
        """Run :meth:`_admit` for `session` (its answer comes back in a later auth frame)."""
        session.verifying = True
        task = asyncio.ensure_future(self._admit(session, verdict))
        self._admitting.add(task)
        task.add_done_callback(self._admitting.discard)

    async def _admit(self, session: PlayerSession, verdict: bool | Awaitable[bool]) -> None:
        """Finish an admission that needs I/O: the key check, then the status row."""
        account = session.account_no
        assert account is not None
        try:
            admitted = bool(await verdict) if inspect.isawaitable(verdict) else bool(verdict)
            old = session.replacing
            taking_over = old is not None and old.entered and self.by_account.get(account) is old
            if (
                admitted
                and self.status_rows is not None
                and not session.released
                and not taking_over  # it passes its row, already 1 with this worker as owner
            ):
                refusal = await self.status_rows.enter(account)
                admitted = not refusal
                if admitted:
                    session.entered = True
                    if session.released:  # left while the row was written
                        self.status_rows.leave(account)
                elif refusal == "login_failed":
                    self.counters["login_db_unavailable"] += 1
                else:
                    session.refusal = refusal  # no status row, or an operator's lock
        except Exception:
            log.exception("admission of account %d failed", account)
            admitted = False
        session.verifying = False
        session.verdict = admitted
        if not session.released:
            self._auth_ready[session] = None
            self._schedule_auth()

    def _reply_login(self, session: PlayerSession, reason: str) -> None:
        assert session.account_no is not None
        self.sent += 1
        reply = self.app.login_reply(session.account_no, reason)
        self.outbox_add(session.gateway, [session.sid, *reply])

    def _finish_login(self, session: PlayerSession, admitted: bool) -> None:
        session.verdict = None
        old, session.replacing = session.replacing, None
        if session.released:
            return
        if admitted and old is not None and not self._take_over(session, old):
            return  # its status row is being written first
        if admitted:
            self.counters["login_ok"] += 1
            self._reply_login(session, "")
            session.mode = Mode.AUTH_TO_GAME
        else:
            reason = session.refusal or "login_failed"
            self._reply_login(session, reason)
            self._close(session, reason)

    def _take_over(self, session: PlayerSession, old: PlayerSession) -> bool:
        """A new login of an account held by `old` proved its key: `old` is closed (counted as
        ``replaced``), and the new session holds the account and its status row. Two TCP
        connections have no order between them: a client whose connection died often logs in
        again before its gateway has seen the old one go. False when the new session must
        first write its own status row (`old` left, its row reset, while the key was checked):
        that runs now and the login is answered by a later frame."""
        account = session.account_no
        assert account is not None
        if not old.released and self.by_account.get(account) is old:
            session.entered, old.entered = old.entered, False  # the row passes to the new one
            self._close(old, "replaced")
        self.by_account[account] = session
        self._holding(account)
        if self.status_rows is not None and not session.entered:
            self._start_admission(session, True)
            return False
        return True

    def _game_packet(self, session: PlayerSession, item: Item) -> None:
        """A message of a session in game that came as a decoded item (sent by its client
        before the gateway knew the login was answered OK)."""
        _, mtype, fields = item
        handler = self.app.handlers.get(mtype)
        if handler is None:
            login = mtype == self.app.login_type
            self._close(session, "login_in_game" if login else "not_allowed_in_game")
            return
        self._current = session
        try:
            reply = handler(session, fields, None)
        except Violation as exc:
            self._close(session, exc.reason)
            return
        finally:
            self._current = None
        # The gateway counted it in max_inflight if it is a request it forwards as answered.
        consumed = int(mtype in bus.COUNTED)
        if reply is not None:
            self._replies.append(reply)
        if self._replies or consumed:
            self._flush_replies(session, consumed)

    def _flush_replies(self, session: PlayerSession, handled: int) -> None:
        """One ANSWER item: the replies queued for `session`, and `handled` packets."""
        replies = self._replies
        self.outbox_add(session.gateway, [session.sid, ANSWER, b"".join(replies), handled,
                                          len(replies)])  # fmt: skip
        self.sent += len(replies)
        replies.clear()

    def _game_relayed(self, session: PlayerSession) -> None:
        """The game frame of a relayed session: hand every relayed packet waiting to its
        handler, then answer with one ANSWER item: the encoded replies and how many packets
        were handled (before a CLOSE, when one ends it)."""
        inbox, handlers = session.relayed, self.app.handlers
        replies = self._replies
        self._current = session
        handled = 0
        reason = ""
        try:
            while inbox:
                mtype, fields, packet = inbox.popleft()
                handled += 1
                handler = handlers.get(mtype)
                if handler is None:
                    login = mtype == self.app.login_type
                    reason = "login_in_game" if login else "not_allowed_in_game"
                    break
                reply = handler(session, fields, packet)
                if reply is not None:
                    replies.append(reply)
        except Violation as exc:
            reason = exc.reason
        finally:
            self._current = None
        self._flush_replies(session, handled)
        if reason:
            self._close(session, reason)

    def close_all(self, reason: str) -> None:
        """Close every session (shutdown), telling each gateway."""
        for table in list(self.gateways.values()):
            for session in list(table.values()):
                self._close(session, reason)
        self.flush()


def key_check_for(config: Config, db: Database | None, pending: PendingKeys | None) -> KeyCheck:
    """The key check the link mode asks for (``[game] verify_key`` governs every role)."""
    if not config.game.verify_key:
        return AcceptAnyKey()
    if config.cluster.link_mode == "systemlink":
        assert pending is not None
        return PendingKeyCheck(pending)
    assert db is not None
    return StoredKeyCheck(db, dummy_below=config.auth.dummy_accounts_below)


class WorkerRole(Role):
    """A worker process of role `name` (``game``, ``chat``) running the app its config section
    names (see :mod:`cluster.role` for the order its hooks run in)."""

    def __init__(self, config: Config, name: str) -> None:
        self.config = config
        self.name = name
        self.db: Database | None = None
        self.data: WorkerDataLinks | None = None
        self.host: Host | None = None

    async def open(self) -> None:
        config, name = self.config, self.name
        section = config.chat if name == "chat" else config.game
        try:
            app = load_app(section.app, config, f"{name}.app")
        except AppError as exc:
            raise StartupError(str(exc)) from None
        pending: PendingKeys | None = None
        if config.game.verify_key:
            self.db = await open_database(config)
            if config.cluster.link_mode == "systemlink":
                pending = PendingKeys(section.pending_key_ttl)
        else:
            log.warning("game.verify_key = false: every login is accepted (raw load tests only)")
        self.key_check = key_check_for(config, self.db, pending)
        if config.auth.dummy_accounts_below and isinstance(self.key_check, StoredKeyCheck):
            log.warning("auth.dummy_accounts_below = %d: accounts below it log in with any key "
                        "(load tests only)", config.auth.dummy_accounts_below)  # fmt: skip
        host = self.host = Host(config, name, app, self.key_check, pending)
        dispatch = host.dispatcher()
        self.link = bus_link(
            config, name, dispatch, load=lambda: host.session_count,
            info={"key_check": self.key_check.name, "app": app.name}, counters=host.counters,
        )  # fmt: skip
        self.data = worker_data_links(
            config, self.link.identity, host.counters, dispatch.deliver, host.peer_gone
        )
        host.attach(self.link, self.data)
        if self.db is not None and app.tracks_status:
            host.status_rows = StatusRows(self.db, self.link.identity.decode(), host.counters)
            host.status_rows.start()
        self.reporter = Reporter(
            self.link, ProcessSampler(self.link.identity.decode(), name, host.collect),
            LOG_KEYS, logging.getLogger(f"workers.{name}"),
        )  # fmt: skip
        self.data.start()
        host.start()

    def ready_fields(self) -> dict[str, object]:
        assert self.host is not None
        return {"id": self.link.identity.decode(), "app": self.host.app.name,
                "key_check": self.key_check.name.split()[0]}  # fmt: skip

    async def drain(self) -> None:
        """Nothing new is placed here from now on; every session is closed cleanly (replies
        already queued go out first) and its status row reset, within SHUTDOWN_GRACE."""
        host = self.host
        assert host is not None
        host.draining = True
        self.link.send([bus.DRAIN])
        host.stop()
        host.close_all("worker_shutdown")
        host.flush()

    async def close(self) -> None:
        if self.data is not None:
            self.data.close()
        await super().close()
        host = self.host
        if host is not None and host.status_rows is not None:
            await host.status_rows.close(SHUTDOWN_GRACE)
        if self.db is not None:
            await self.db.close()
        if host is not None:
            counters = {**host.counters, **host.app.totals()}
            log.info("%s stopped; counters: %s", self.name, counters)
