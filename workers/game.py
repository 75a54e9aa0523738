"""The game (echo) worker: sessions in AUTH then GAME mode, run by an auth loop and a game loop.

As in the original MMOServer model, every session has an inbox of received packets, and two
loops take turns on this process's single thread:

- the **auth frame** handles AUTH-mode sessions: CS_GAME_REQ_LOGIN only (version check, then the
  pluggable :mod:`key check <workers.keycheck>`); a session that logs in moves to AUTH_TO_GAME;
- the **game frame** moves AUTH_TO_GAME sessions to GAME and handles GAME-mode packets: echo
  (AccountNo must be the session's) and heartbeat.

A frame runs as soon as packets are waiting (in the next event-loop iteration) and at least every
``[game] frame_interval``; AuthFPS and GameFPS count frames per second. A session's packets are
handled in arrival order, and a packet is judged in the mode the session is in when it is handled.
All replies of one frame go out as one bus message per gateway.

A violation (a message not allowed in the session's mode, an AccountNo mismatch, a failed login)
answers the gateway with a CLOSE item naming the reason; the gateway closes the client and counts
it.
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

from cluster import bus, runtime
from cluster.config import Config
from cluster.counters import PerSecond
from cluster.link import BusLink
from cluster.messages import (
    GameLoginStatus,
    GameReqEcho,
    GameReqHeartbeat,
    GameReqLogin,
    GameResEcho,
    GameResLogin,
)
from workers.keycheck import AcceptAnyKey, KeyCheck, NoKeySource

log = logging.getLogger("workers.game")

CLOSE = bus.Control.CLOSE
#: Seconds between two summary lines in the log.
REPORT_INTERVAL = 10.0
LOGIN, ECHO, HEARTBEAT = GameReqLogin.TYPE, GameReqEcho.TYPE, GameReqHeartbeat.TYPE
RES_LOGIN, RES_ECHO = GameResLogin.TYPE, GameResEcho.TYPE


class Mode(IntEnum):
    """Session modes of the original's MMOServer that matter here."""

    AUTH = 1
    AUTH_TO_GAME = 2
    GAME = 3


class PlayerSession:
    """One client session held by this worker (keyed by its gateway and the gateway's id)."""

    __slots__ = (
        "account_no",
        "gateway",
        "inbox",
        "mode",
        "released",
        "sid",
        "verdict",
        "verifying",
    )

    def __init__(self, gateway: bytes, sid: int) -> None:
        self.gateway = gateway
        self.sid = sid
        self.account_no = 0
        self.mode = Mode.AUTH
        self.inbox: deque[list[Any]] = deque()
        self.verifying = False  # an awaitable key check is running
        self.verdict: bool | None = None  # its answer, for the next auth frame
        self.released = False


class GameWorker:
    """The session table and the two loops. ``link`` must be attached before :meth:`start`."""

    def __init__(self, config: Config, key_check: KeyCheck) -> None:
        self.version = config.game.version
        self.frame_interval = config.game.frame_interval
        self.key_check = key_check
        self.link: BusLink | None = None
        self.gateways: dict[bytes, dict[int, PlayerSession]] = {}
        self.session_count = 0
        self.counters: Counter[str] = Counter()
        #: AuthFPS, GameFPS and packet rates, refreshed once a second.
        self.rates = PerSecond(self.counters, ("auth_frames", "game_frames", "echo", "login_ok"))
        self._next_sample = 0.0
        self._next_report = 0.0
        self._auth_ready: dict[PlayerSession, None] = {}  # ordered set
        self._game_ready: dict[PlayerSession, None] = {}
        self._joining: list[PlayerSession] = []
        self._replies: dict[bytes, list[list[Any]]] = {}
        self._verifying: set[asyncio.Future[None]] = set()
        self._frame_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_event_loop()

    # -- bus side --------------------------------------------------------------------------------

    def on_bus(self, frames: list[bytes]) -> None:
        command = frames[0]
        if command == bus.FROM and len(frames) >= 3:
            self._received(frames[1], frames[2:])
        elif (command == bus.GONE and len(frames) >= 2) or (
            command == bus.UNROUTABLE and len(frames) >= 2
        ):
            self.gateway_gone(frames[1])

    def _received(self, gateway: bytes, bodies: list[bytes]) -> None:
        table = self.gateways.get(gateway)
        if table is None:
            table = self.gateways[gateway] = {}
        for body in bodies:
            try:
                items = bus.unpack_body(body)
            except ValueError:
                self.counters["bad_bus_body"] += 1
                continue
            for item in items:
                try:
                    sid, mtype = item[0], item[1]
                except (IndexError, TypeError, KeyError):
                    self.counters["bad_item"] += 1
                    continue
                session = table.get(sid)
                if mtype == CLOSE:
                    if session is not None:
                        self.release(session)
                    continue
                if session is None:
                    if mtype != LOGIN:
                        self._reply(gateway, [sid, CLOSE, "unknown_session"])
                        continue
                    session = table[sid] = PlayerSession(gateway, sid)
                    self.session_count += 1
                session.inbox.append(item)
                if session.mode is Mode.GAME:
                    self._game_ready[session] = None
                else:
                    self._auth_ready[session] = None
        self._schedule_frame()

    def gateway_gone(self, gateway: bytes) -> None:
        """Release every session of a gateway that left."""
        table = self.gateways.pop(gateway, None)
        self._replies.pop(gateway, None)
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
        table = self.gateways.get(session.gateway)
        if table is not None and table.pop(session.sid, None) is not None:
            self.session_count -= 1
        self.counters["released"] += 1

    def _reply(self, gateway: bytes, item: list[Any]) -> None:
        replies = self._replies.get(gateway)
        if replies is None:
            replies = self._replies[gateway] = []
        replies.append(item)

    def _close(self, session: PlayerSession, reason: str) -> None:
        self.counters[reason] += 1
        self._reply(session.gateway, [session.sid, CLOSE, reason])
        self.release(session)

    def flush(self) -> None:
        """Send this frame's replies: one bus message per gateway."""
        if not self._replies:
            return
        replies, self._replies = self._replies, {}
        assert self.link is not None
        for gateway, items in replies.items():
            if not self.link.send([bus.TO, gateway, bus.pack_body(items)]):
                self.counters["reply_not_sent"] += len(items)

    # -- the loops -------------------------------------------------------------------------------

    def start(self) -> None:
        self._next_report = time.monotonic() + 1.5  # the first summary has a full second of rates
        self._timer = self._loop.call_later(self.frame_interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _tick(self) -> None:
        self.frame()
        now = time.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + 1.0
            rates = self.rates.sample(now)
            if now >= self._next_report:
                self._next_report = now + REPORT_INTERVAL
                log.info(
                    "sessions=%d auth_fps=%.0f game_fps=%.0f echo_tps=%.0f login_tps=%.0f",
                    self.session_count,
                    rates["auth_frames"],
                    rates["game_frames"],
                    rates["echo"],
                    rates["login_ok"],
                )
        self._timer = self._loop.call_later(self.frame_interval, self._tick)

    def _schedule_frame(self) -> None:
        if not self._frame_scheduled:
            self._frame_scheduled = True
            self._loop.call_soon(self.frame)

    def frame(self) -> None:
        """One auth frame, one game frame, then the replies."""
        self._frame_scheduled = False
        self.auth_frame()
        self.game_frame()
        self.flush()

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
                    if session.inbox:
                        self._game_ready[session] = None
        if not self._game_ready:
            return
        ready, self._game_ready = self._game_ready, {}
        for session in ready:
            inbox = session.inbox
            while inbox and not session.released:
                self._game_packet(session, inbox.popleft())

    def _auth_packet(self, session: PlayerSession, item: list[Any]) -> None:
        if item[1] != LOGIN or len(item) != 5:
            self._close(session, "not_logged_in")
            return
        _, _, account_no, session_key, version = item
        session.account_no = account_no
        if version != self.version:
            self.counters["version_miss"] += 1
            self._reply(
                session.gateway, [session.sid, RES_LOGIN, GameLoginStatus.VERSION_MISS, account_no]
            )
            self._close(session, "version_miss")
            return
        verdict = self.key_check(account_no, session_key)
        if inspect.isawaitable(verdict):
            session.verifying = True
            task = asyncio.ensure_future(self._await_verdict(session, verdict))
            self._verifying.add(task)
            task.add_done_callback(self._verifying.discard)
        else:
            self._finish_login(session, bool(verdict))

    async def _await_verdict(self, session: PlayerSession, verdict: Awaitable[bool]) -> None:
        try:
            result = bool(await verdict)
        except Exception:
            log.exception("key check failed for account %d", session.account_no)
            result = False
        session.verifying = False
        session.verdict = result
        if not session.released:
            self._auth_ready[session] = None
            self._schedule_frame()

    def _finish_login(self, session: PlayerSession, admitted: bool) -> None:
        session.verdict = None
        if session.released:
            return
        if admitted:
            self.counters["login_ok"] += 1
            self._reply(
                session.gateway, [session.sid, RES_LOGIN, GameLoginStatus.OK, session.account_no]
            )
            session.mode = Mode.AUTH_TO_GAME
        else:
            self._reply(
                session.gateway, [session.sid, RES_LOGIN, GameLoginStatus.FAIL, session.account_no]
            )
            self._close(session, "login_failed")

    def _game_packet(self, session: PlayerSession, item: list[Any]) -> None:
        mtype = item[1]
        if mtype == ECHO and len(item) == 4:
            if item[2] != session.account_no:
                self._close(session, "account_mismatch")
                return
            item[1] = RES_ECHO
            self._reply(session.gateway, item)
            self.counters["echo"] += 1
        elif mtype == HEARTBEAT:
            self.counters["heartbeat"] += 1
        elif mtype == LOGIN:
            self._close(session, "login_in_game")
        else:
            self._close(session, "not_allowed_in_game")

    def close_all(self, reason: str) -> None:
        """Close every session (shutdown), telling each gateway."""
        for table in list(self.gateways.values()):
            for session in list(table.values()):
                self._close(session, reason)
        self.flush()


def key_check_for(config: Config) -> KeyCheck:
    """The key check `config` asks for (issue 3 adds the DB and pushed-key checks)."""
    if not config.game.verify_key:
        return AcceptAnyKey()
    return NoKeySource()


async def run(config: Config) -> int:
    key_check = key_check_for(config)
    if not config.game.verify_key:
        log.warning("game.verify_key = false: every login is accepted (raw echo load tests only)")
    worker = GameWorker(config, key_check)
    link = BusLink(
        config.broker.endpoint,
        "game",
        worker.on_bus,
        interval=config.broker.heartbeat_interval,
        liveness=config.broker.heartbeat_liveness,
        load=lambda: worker.session_count,
        info={"key_check": key_check.name},
    )
    worker.link = link
    stop = runtime.stop_event()
    await link.start()
    worker.start()
    registered = asyncio.create_task(link.registered.wait())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({registered, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        runtime.announce_ready(role="game", id=link.identity.decode(), loop=runtime.loop_name())
        await stop.wait()
    registered.cancel()
    worker.stop()
    worker.close_all("worker_shutdown")
    await link.close()
    log.info("stopped; counters: %s", dict(worker.counters))
    return 0


def serve(config: Config) -> int:
    """Run one game worker in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return runtime.run(run(config))
