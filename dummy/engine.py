"""The load engine: many dummy clients in one process, behaving as the original game dummy.

Each :class:`DummyClient` plays one account. The action loop visits every client every
``delay_action`` ms ("one loop" of the original's knobs): a disconnected client connects with
probability ``rand_connect`` %, a client in game disconnects with probability
``rand_disconnect`` % or, when none of its echoes is in flight, sends ``echo_overlap`` pipelined
echoes with probability ``rand_contents`` % (also right when its last batch is answered).

The login path is the real client's once it has a key: login port (CS_LOGIN_REQ_LOGIN after
``delay_login`` ms) -> RES_LOGIN -> the game address it names -> CS_GAME_REQ_LOGIN -> GAME mode;
the web path is the real client's from the start: each (re)connect first logs in on the web login
(``POST /v1/login`` with the account's UserID and password, :mod:`dummy.web`) for a fresh key and
the login address, then goes the login path with that key; the direct path skips the login port.
A web login is counted ``web_ok``, or as an error ``web_invalid``, ``web_rate_limited``,
``web_busy`` or ``web_error`` after which the client waits (the answer's Retry-After, about 1 s)
before it tries again.

Every reply is checked: types, AccountNo, and each echo's SendTick in order. A batch echo
unanswered for ``reply_timeout`` (500 ms) counts as Echo Not Recv (once); a wrong reply is a
packet error (the client then drops the connection); a connection the server closes unexpectedly
is a Down Client.

Counters are :class:`Totals` (mergeable across agents) and a latency :class:`Histogram`.

Threads (``--threads N``, the original's THREAD_NUMBER, at most :data:`THREADS_MAX`): the
clients are split into N groups (sizes differing by at most one: the original's CONNECT_CLIENT
clients per thread), each visited by its own action loop, as each of the original's threads
visited its clients. The loops are asyncio tasks of this one process, not OS threads: each keeps
its own pace (Action Delay is measured per loop), but they share one core. The screen shows both
figures (Thread Count, Client per Thread).

Action Delay is the measured time between two visits of a loop over its clients (min, avg, max
over the loops, per second); the Minimum Check Delay is its floor, ``delay_action``: a loop waits
that long after each visit before the next, so a client is checked at most once per that many
ms, and the Action Delay is that wait plus the time a visit takes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any, Generic, Protocol, Self, TypeVar, cast

from cluster.codec import Codec, RemoteProtocolError
from cluster.messages import (
    GAME_VERSION,
    SERVER_MESSAGES,
    GameReqEcho,
    GameReqLogin,
    GameResEcho,
    GameResLogin,
    LoginReqLogin,
    LoginResLogin,
    LoginStatus,
)
from dummy.accounts import Account
from dummy.histogram import Histogram
from dummy.web import WebLogin, login_url

log = logging.getLogger("dummy")

T = TypeVar("T")
#: the engine a LegClient belongs to
EngineT = TypeVar("EngineT", bound="LoadEngine[Any, Any]")

#: web: web login, then login port, then game (chat) port; login: login port with the listed key,
#: then game (chat) port; direct: the game (chat) port with the listed key.
PATHS = ("web", "login", "direct")

#: The most action loops (``--threads``), as the original's THREAD_NUMBER.
THREADS_MAX = 100


def groups(items: Sequence[T], parts: int) -> list[Sequence[T]]:
    """`items` cut into `parts` consecutive groups whose sizes differ by at most one (the
    larger first)."""
    out, start = [], 0
    for i in range(parts):
        size = len(items) // parts + (1 if i < len(items) % parts else 0)
        out.append(items[start : start + size])
        start += size
    return out


def check_threads(options: Any) -> None:
    """ValueError unless 1 <= ``threads`` <= min(THREADS_MAX, clients)."""
    if not 1 <= options.threads <= THREADS_MAX:
        raise ValueError(f"--threads must be 1..{THREADS_MAX}")
    if options.threads > options.clients:
        raise ValueError(f"--threads {options.threads} needs at least as many --clients")


def check_web_options(options: Any) -> None:
    """ValueError naming the first bad web option of LoadOptions / ChatOptions."""
    if not 1 <= options.web_concurrency <= 100_000:
        raise ValueError("--web-concurrency must be 1..100000")
    if options.web_timeout <= 0:
        raise ValueError("web_timeout must be positive")
    if not 0 < options.web_port < 65536:
        raise ValueError("web_port must be 1..65535")


@dataclass(frozen=True)
class LoadOptions:
    """The original dummy's knobs, plus where to connect. Percentages are 0..100."""

    clients: int = 100
    rand_connect: int = 100
    rand_disconnect: int = 0
    rand_contents: int = 100
    echo_overlap: int = 1
    delay_action: float = 10.0  # ms between two visits of the action loop (0: back to back)
    delay_login: float = 0.0  # ms between connecting and sending a login request
    duration: float = 20.0  # s
    path: str = "login"
    ramp: float = 0.0  # new connections per second; 0 = no limit
    login_host: str = "127.0.0.1"
    login_port: int = 8091
    game_host: str = "127.0.0.1"
    game_port: int = 12211
    code: int = 119
    key1: int = 50
    key2: int = 132
    version: int = GAME_VERSION
    reply_timeout: float = 0.5  # s: Echo Not Recv
    login_timeout: float = 10.0  # s: a login request unanswered by then is an error
    web_host: str = "127.0.0.1"  # the web login (--path web)
    web_port: int = 8080
    web_concurrency: int = 64  # web logins in flight at most (the rest wait their turn)
    web_timeout: float = 10.0  # s: a web login unanswered by then is a web_error
    threads: int = 1  # action loops, each over its share of the clients (THREAD_NUMBER)

    def check(self) -> None:
        """Raise ValueError naming the first bad option."""
        for name in ("rand_connect", "rand_disconnect", "rand_contents"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"--{name.replace('_', '-')} must be 0..100")
        if self.clients < 1:
            raise ValueError("--clients must be at least 1")
        check_threads(self)
        check_web_options(self)
        if not 1 <= self.echo_overlap <= 10_000:
            raise ValueError("--echo-overlap must be 1..10000")
        if self.delay_action < 0 or self.delay_login < 0 or self.ramp < 0:
            raise ValueError("--delay-action, --delay-login and --ramp must not be negative")
        if self.duration <= 0:
            raise ValueError("--duration must be positive")
        if self.path not in PATHS:
            raise ValueError(f"--path must be one of {', '.join(PATHS)}")


@dataclass
class Counters:
    """Counters that add up across seconds and agents: every other field of a subclass is an
    int, and ``errors`` counts by kind."""

    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: Self) -> Self:
        for name, value in asdict(other).items():
            if name == "errors":
                self.errors.update(other.errors)
            else:
                setattr(self, name, getattr(self, name) + value)
        return self

    def copy(self) -> Self:
        return type(self)().add(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = dict(self.errors)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        errors = Counter({str(k): int(v) for k, v in known.pop("errors", {}).items()})
        return cls(**{k: int(v) for k, v in known.items()}, errors=errors)


@dataclass
class Totals(Counters):
    """Counters of a game (echo) run (or of one second); they add up across agents."""

    connect_total: int = 0  # successful TCP connects, login and game ports
    connect_fail: int = 0
    down_client: int = 0  # connections the server closed unexpectedly
    disconnects: int = 0  # connections the dummy closed on purpose (rand_disconnect)
    login_ok: int = 0  # game logins answered OK
    web_ok: int = 0  # web logins that gave a key (--path web); failures are errors web_*
    echo_sent: int = 0
    echo_recv: int = 0
    packets_sent: int = 0
    packets_recv: int = 0


class Phase(IntEnum):
    IDLE = 0
    LOGIN_CONNECTING = 1
    LOGIN_WAIT = 2
    GAME_CONNECTING = 3
    GAME_LOGIN_WAIT = 4
    IN_GAME = 5
    WEB_WAIT = 6  # a web login under way (or waiting its turn)


class LegConnection(asyncio.Protocol):
    """One TCP connection of a load client (to the login port, or to the game or chat port):
    decodes the replies `accept` names and hands each to its client while it is the client's
    current connection."""

    def __init__(self, client: LegClient[Any], accept: frozenset[int]) -> None:
        self.client = client
        self.decoder = client.engine.codec.decoder(accept)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's TCPTransport does not derive from asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            self.client.packet_error(self, f"undecodable reply: {exc}")
            return
        for message in messages:
            if self.client.connection is not self:
                return
            self.client.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.on_closed(self)


class LegClient(Generic[EngineT]):
    """The connect and login plumbing both load clients share (:class:`DummyClient` here and
    :class:`dummy.chat_engine.ChatDummyClient`). A client reaches its app's port (game or chat)
    in up to three legs: the web login (path ``web``: a fresh key and the login address), the
    login port (paths ``web`` and ``login``: its RES_LOGIN names the app's address), then the
    app's port (every path). A subclass names its phases (both engines' Phase enums share these
    numbers) and the replies of its app's port, sends each leg's login request
    (:meth:`_send_login`) and decides what replies and closes mean."""

    __slots__ = ("app_address", "connection", "engine", "leaving", "login_address", "phase",
                 "retry_at", "session_key")  # fmt: skip

    #: the phases of the subclass's Phase enum that this plumbing sets
    IDLE: IntEnum
    LOGIN_CONNECTING: IntEnum
    APP_CONNECTING: IntEnum
    WEB_WAIT: IntEnum
    #: the reply types of the app's port (the login port's are SERVER_MESSAGES)
    APP_MESSAGES: frozenset[int]

    engine: EngineT
    phase: IntEnum
    connection: LegConnection | None
    leaving: bool  # we are closing the current connection ourselves
    retry_at: float  # a failed web login: no new attempt before then (monotonic)
    session_key: bytes  # the listed one; the web login's once it gave one
    login_address: tuple[str, int]
    app_address: tuple[str, int]  # the game or chat port (RES_LOGIN's, once one named it)

    # -- what a subclass does --------------------------------------------------------------------

    def _web_account(self) -> tuple[int, str, str]:
        """AccountNo, UserID and password for the web login."""
        raise NotImplementedError

    def _send_login(self, connection: LegConnection) -> None:
        """Send the login request of the leg `connection` is (the phase says which)."""
        raise NotImplementedError

    def on_message(self, message: Any) -> None:
        raise NotImplementedError

    def packet_error(self, connection: LegConnection | None, why: str) -> None:
        raise NotImplementedError

    def on_closed(self, connection: LegConnection) -> None:
        raise NotImplementedError

    def _connect_failed(self, app: bool) -> None:
        """A connect failed (counted as Connect Fail already): what else the subclass counts."""

    # -- the legs --------------------------------------------------------------------------------

    def web_login(self) -> None:
        self.phase = self.WEB_WAIT
        self.engine.spawn(self._web_login())

    async def _web_login(self) -> None:
        engine = self.engine
        result = await engine.web().login(*self._web_account())
        if result.kind == "stopped":
            self.phase = self.IDLE
            return
        if result.kind != "ok":
            engine.totals.errors[f"web_{result.kind}"] += 1
            self.retry_at = time.monotonic() + result.retry_after
            self.phase = self.IDLE
            return
        engine.totals.web_ok += 1
        if engine.stopping:
            self.phase = self.IDLE
            return
        assert result.login is not None
        self.session_key, self.login_address = result.session_key, result.login
        self.connect(app=False)

    def connect(self, app: bool) -> None:
        """Connect to the app's port (`app`) or to the login port, then log in there."""
        self.phase = self.APP_CONNECTING if app else self.LOGIN_CONNECTING
        host, port = self.app_address if app else self.login_address
        self.engine.spawn(self._connect(host, port, app))

    async def _connect(self, host: str, port: int, app: bool) -> None:
        engine = self.engine
        accept = self.APP_MESSAGES if app else SERVER_MESSAGES
        try:
            _, connection = await engine.loop.create_connection(
                lambda: LegConnection(self, accept), host, port
            )
        except OSError as exc:
            engine.totals.connect_fail += 1
            self._connect_failed(app)
            engine.connect_failed(host, port, exc)
            self.phase = self.IDLE
            return
        engine.totals.connect_total += 1
        if engine.failing:
            engine.connect_succeeded(host, port)
        self.connection = connection
        self.leaving = False
        if engine.stopping:
            self.close()
        elif engine.options.delay_login:
            engine.loop.call_later(engine.options.delay_login / 1000, self._send_login, connection)
        else:
            self._send_login(connection)

    def close(self) -> None:
        """Close the current connection on purpose (not a Down Client)."""
        self.leaving = True
        connection = self.connection
        if connection is not None and connection.transport is not None:
            connection.transport.close()


class DummyClient(LegClient["Engine"]):
    """One account's game client."""

    IDLE = Phase.IDLE
    LOGIN_CONNECTING = Phase.LOGIN_CONNECTING
    APP_CONNECTING = Phase.GAME_CONNECTING
    WEB_WAIT = Phase.WEB_WAIT
    APP_MESSAGES = SERVER_MESSAGES

    __slots__ = ("account_no", "deadline", "inflight", "next_tick", "password", "user_id")

    def __init__(self, engine: Engine, account: Account) -> None:
        self.engine = engine
        self.account_no = account.account_no
        self.session_key = account.session_key
        self.user_id = account.user_id
        self.password = account.password
        self.retry_at = 0.0
        self.phase = Phase.IDLE
        self.connection = None
        self.leaving = False
        self.deadline = 0.0  # when the awaited login answer is overdue
        self.inflight: deque[list[Any]] = deque()  # [tick, sent_ns, late_counted]
        self.next_tick = 0
        self.app_address = (engine.options.game_host, engine.options.game_port)
        self.login_address = (engine.options.login_host, engine.options.login_port)

    def _web_account(self) -> tuple[int, str, str]:
        return self.account_no, self.user_id, self.password

    # -- actions ----------------------------------------------------------------------------------

    def _send_login(self, connection: LegConnection) -> None:
        if self.connection is not connection or connection.transport is None or self.leaving:
            return
        engine = self.engine
        if self.phase == Phase.LOGIN_CONNECTING:
            message: Any = LoginReqLogin(self.account_no, self.session_key)
            self.phase = Phase.LOGIN_WAIT
        else:
            message = GameReqLogin(self.account_no, self.session_key, engine.options.version)
            self.phase = Phase.GAME_LOGIN_WAIT
        self.deadline = time.monotonic() + engine.options.login_timeout
        connection.transport.write(engine.codec.encode(message))
        engine.totals.packets_sent += 1

    def send_echoes(self) -> None:
        connection = self.connection
        if connection is None or connection.transport is None:
            return
        engine = self.engine
        count = engine.options.echo_overlap
        now = time.perf_counter_ns()
        encode = engine.codec.encode
        packets = []
        for _ in range(count):
            tick = self.next_tick
            self.next_tick += 1
            self.inflight.append([tick, now, False])
            packets.append(encode(GameReqEcho(self.account_no, tick)))
        connection.transport.write(b"".join(packets))
        engine.totals.echo_sent += count
        engine.totals.packets_sent += count

    # -- events ----------------------------------------------------------------------------------

    def on_message(self, message: Any) -> None:
        engine = self.engine
        engine.totals.packets_recv += 1
        kind = type(message)
        if kind is GameResEcho and self.phase == Phase.IN_GAME:
            self._echo_reply(message)
        elif kind is LoginResLogin and self.phase == Phase.LOGIN_WAIT:
            if message.account_no != self.account_no:
                self.packet_error(self.connection, "RES_LOGIN for another AccountNo")
                return
            self.close()  # the server closes too; we move on to the game port either way
            if message.status != LoginStatus.OK:
                engine.totals.errors[f"login_{LoginStatus(message.status).name.lower()}"] += 1
                self.phase = Phase.IDLE
                return
            self.app_address = (message.game_server_ip, message.game_server_port)
            self.connect(app=True)
        elif kind is GameResLogin and self.phase == Phase.GAME_LOGIN_WAIT:
            if message.account_no != self.account_no:
                self.packet_error(self.connection, "GAME RES_LOGIN for another AccountNo")
                return
            if message.status != 1:
                engine.totals.errors["game_login_failed"] += 1
                self.close()
                self.phase = Phase.IDLE
                return
            engine.totals.login_ok += 1
            self.phase = Phase.IN_GAME
            if not engine.paused and engine.roll(engine.options.rand_contents):
                self.send_echoes()
        else:
            self.packet_error(self.connection, f"unexpected {kind.__name__} in {self.phase.name}")

    def _echo_reply(self, message: GameResEcho) -> None:
        engine = self.engine
        if not self.inflight:
            self.packet_error(self.connection, "echo reply with none in flight")
            return
        tick, sent_ns, _ = self.inflight[0]
        if message.account_no != self.account_no or message.send_tick != tick:
            self.packet_error(self.connection, f"echo {message} != expected tick {tick}")
            return
        self.inflight.popleft()
        engine.totals.echo_recv += 1
        micros = (time.perf_counter_ns() - sent_ns) // 1000
        engine.second_latency.record(micros)
        if not self.inflight and not engine.paused and engine.roll(engine.options.rand_contents):
            self.send_echoes()

    def packet_error(self, connection: LegConnection | None, why: str) -> None:
        engine = self.engine
        engine.totals.errors["packet_error"] += 1
        if engine.first_error is None:
            engine.first_error = f"account {self.account_no}: {why}"
        if connection is self.connection:
            self.close()

    def on_closed(self, connection: LegConnection) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        if not self.leaving and not self.engine.stopping:
            self.engine.totals.down_client += 1
        if self.phase in (Phase.LOGIN_CONNECTING, Phase.GAME_CONNECTING):
            return  # a connect of the next leg is already under way
        self.phase = Phase.IDLE
        self.inflight.clear()

    def tick(self, now: float) -> None:
        """One visit of the action loop."""
        engine = self.engine
        phase = self.phase
        if phase == Phase.IN_GAME:
            if engine.roll(engine.options.rand_disconnect):
                engine.totals.disconnects += 1
                self.close()
            elif self.inflight:
                self._count_late(now)
            elif not engine.paused and engine.roll(engine.options.rand_contents):
                self.send_echoes()
        elif phase == Phase.IDLE:
            if now < self.retry_at:
                return
            if engine.roll(engine.options.rand_connect) and engine.take_ramp_token():
                if engine.options.path == "web":
                    self.web_login()
                else:
                    self.connect(app=engine.options.path == "direct")
        elif phase in (Phase.LOGIN_WAIT, Phase.GAME_LOGIN_WAIT) and now > self.deadline:
            engine.totals.errors["login_timeout"] += 1
            self.close()

    def _count_late(self, now: float) -> None:
        limit = time.perf_counter_ns() - int(self.engine.options.reply_timeout * 1e9)
        for entry in self.inflight:
            if entry[1] > limit:
                break
            if not entry[2]:
                entry[2] = True
                self.engine.totals.errors["echo_not_recv"] += 1


@dataclass
class SecondStats:
    """What one second of a run looked like (a row of the CSV, a frame of the screen)."""

    elapsed: float
    clients: int
    in_login: int
    in_game: int
    reply_wait: int
    totals: Totals  # cumulative
    send_tps: float
    recv_tps: float
    latency: Histogram  # echo latencies of this second
    action_delay_ms: tuple[float, float, float]  # min, avg, max of this second
    disconnected: int = 0  # clients without an open connection (either port)
    shape: RunShape = field(default_factory=lambda: RunShape())

    def to_map(self) -> dict[str, Any]:
        """The map an agent sends the controller each second (msgpack-able)."""
        return {
            "elapsed": self.elapsed, "clients": self.clients, "in_login": self.in_login,
            "in_game": self.in_game, "reply_wait": self.reply_wait, "send_tps": self.send_tps,
            "recv_tps": self.recv_tps, "totals": self.totals.to_dict(),
            "latency": self.latency.to_dict(), "action_delay_ms": list(self.action_delay_ms),
            "disconnected": self.disconnected, **self.shape.to_map(),
        }  # fmt: skip


@dataclass(frozen=True)
class RunShape:
    """What the screen shows of how a run is laid out: when it started (wall clock), its action
    loops (threads) and clients per loop (min, max), and the Minimum Check Delay (ms)."""

    started_at: float = 0.0  # time.time() at the start; 0 = unknown
    threads: int = 1
    per_thread: tuple[int, int] = (0, 0)
    min_check_delay_ms: float = 0.0

    def to_map(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "threads": self.threads,
                "per_thread": list(self.per_thread),
                "min_check_delay_ms": self.min_check_delay_ms}  # fmt: skip

    @classmethod
    def merged(cls, maps: Sequence[dict[str, Any]]) -> RunShape:
        """The shape of several sources (agents): the earliest start, the loops summed, the
        smallest and largest group, the largest floor (maps of older agents lack the keys)."""
        with_shape = [m for m in maps if "threads" in m]
        if not with_shape:
            return cls()
        starts = [float(m["started_at"]) for m in with_shape if m["started_at"]]
        return cls(
            started_at=min(starts, default=0.0),
            threads=sum(int(m["threads"]) for m in with_shape),
            per_thread=(min(int(m["per_thread"][0]) for m in with_shape),
                        max(int(m["per_thread"][1]) for m in with_shape)),
            min_check_delay_ms=max(float(m["min_check_delay_ms"]) for m in with_shape),
        )  # fmt: skip


class LoadClient(Protocol):
    """What the engine's action loop needs of a client."""

    def tick(self, now: float) -> None: ...

    def close(self) -> None: ...


TotalsT = TypeVar("TotalsT", bound=Counters)
SecondT = TypeVar("SecondT")


class LoadEngine(Generic[TotalsT, SecondT]):
    """What every load engine shares: the action loop over the clients every ``delay_action``
    ms, the ramp, the pause, connect failure logging, the per-second callback and the wind
    down. Subclasses make the clients and :meth:`_second`."""

    clients: list[Any]  # LoadClient each

    def __init__(self, options: Any, totals: TotalsT) -> None:
        self.options = options
        self.codec = Codec(options.code, options.key1, options.key2)
        self.loop = asyncio.get_event_loop()
        self.totals = totals
        self.latency = Histogram()  # the whole run
        self.second_latency = Histogram()
        self.paused = False
        self.stopping = False
        self.first_error: str | None = None
        self._random = random.Random()
        self._web: WebLogin | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ramp_tokens = float(options.clients)
        self._ramp_at = 0.0  # when the ramp's tokens were last topped up (monotonic)
        self._delays: list[float] = []
        self.started_at = 0.0  # time.time() when run() started
        self.failing: set[tuple[str, int]] = set()  # addresses whose last connect failed

    def connect_failed(self, host: str, port: int, exc: OSError) -> None:
        """Log the first failed connect to an address (not each one: they are counted)."""
        if (host, port) not in self.failing:
            self.failing.add((host, port))
            log.warning("connects to %s:%d fail (%s); counting them as Connect Fail", host, port,
                        exc.strerror or exc)  # fmt: skip

    def connect_succeeded(self, host: str, port: int) -> None:
        if (host, port) in self.failing:
            self.failing.discard((host, port))
            log.info("connects to %s:%d succeed again", host, port)

    def web(self) -> WebLogin:
        """The web login client of this engine (made at its first use, closed at the end)."""
        if self._web is None:
            options = self.options
            self._web = WebLogin(login_url(options.web_host, options.web_port),
                                 options.web_concurrency, options.web_timeout)  # fmt: skip
        return self._web

    def roll(self, percent: int) -> bool:
        return percent >= 100 or (percent > 0 and self._random.random() * 100 < percent)

    def take_ramp_token(self) -> bool:
        if not self.options.ramp:
            return True
        if self._ramp_tokens >= 1:
            self._ramp_tokens -= 1
            return True
        return False

    def spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def toggle_pause(self) -> bool:
        """S on the screen: stop / resume sending contents. Returns the new state."""
        self.paused = not self.paused
        return self.paused

    def action_delays(self) -> tuple[float, float, float]:
        """Min, avg and max of the action loop's period this second (then forgotten)."""
        delays = self._delays or [0.0]
        self._delays = []
        return (min(delays), sum(delays) / len(delays), max(delays))

    def _second(self, elapsed: float, last: TotalsT, window: float) -> SecondT:
        raise NotImplementedError

    def groups(self) -> list[Sequence[Any]]:
        """The clients of each action loop (``options.threads`` groups)."""
        return groups(self.clients, self.options.threads)

    def shape(self) -> RunShape:
        sizes = [len(group) for group in self.groups()]
        return RunShape(started_at=self.started_at, threads=len(sizes),
                        per_thread=(min(sizes), max(sizes)),
                        min_check_delay_ms=float(self.options.delay_action))  # fmt: skip

    async def run(
        self, stop: asyncio.Event, on_second: Callable[[SecondT], None] | None = None
    ) -> TotalsT:
        """Run for ``options.duration`` seconds (or until `stop`), then close every connection
        and wait for connects still under way, so that every connect is counted."""
        started = time.monotonic()
        self.started_at = time.time()
        if self.options.ramp:
            self._ramp_tokens = 0.0
        self._ramp_at = started
        tickers = [self.loop.create_task(self._action_loop(stop, group))
                   for group in self.groups()]  # fmt: skip
        last, last_at = self.totals.copy(), started
        end = started + self.options.duration
        while not stop.is_set() and time.monotonic() < end:
            try:
                await asyncio.wait_for(stop.wait(), min(1.0, max(0.0, end - time.monotonic())))
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - last_at >= 0.999 or ((stop.is_set() or now >= end) and now - last_at > 0.5):
                stats = self._second(now - started, last, max(now - last_at, 1e-3))
                self.latency.merge(self.second_latency)
                self.second_latency = Histogram()
                last, last_at = self.totals.copy(), now
                if on_second is not None:
                    on_second(stats)
        self.stopping = True
        for ticker in tickers:
            ticker.cancel()
        await self._wind_down()
        self.latency.merge(self.second_latency)  # a last part-second not shown on its own
        self.second_latency = Histogram()
        return self.totals

    async def _action_loop(self, stop: asyncio.Event, clients: Sequence[Any]) -> None:
        """One of the ``threads`` loops: visit `clients`, wait ``delay_action`` ms, again."""
        delay = self.options.delay_action / 1000
        previous, visited = time.monotonic(), False
        while not stop.is_set():
            now = time.monotonic()
            if visited:  # a period from the second visit on (not the 0 before the first)
                self._delays.append((now - previous) * 1000)
            visited = True
            if self.options.ramp:  # topped up by the clock, whichever loop comes first
                self._ramp_tokens = min(
                    self._ramp_tokens + (now - self._ramp_at) * self.options.ramp,
                    max(1.0, self.options.ramp),
                )
                self._ramp_at = now
            previous = now
            for client in clients:
                client.tick(now)
            await asyncio.sleep(delay)

    async def _wind_down(self) -> None:
        if self._web is not None:
            self._web.stop()
        for client in self.clients:
            client.close()
        if self._tasks:  # connects under way: let them finish (and close at once) to count them
            await asyncio.wait(list(self._tasks), timeout=self.options.login_timeout)
        for client in self.clients:
            client.close()
        if self._web is not None:
            await self._web.close()
        await asyncio.sleep(0.05)  # let the closes go out


class Engine(LoadEngine[Totals, SecondStats]):
    """Runs `options` with one client per account in `accounts` (:class:`Account` each, or
    (AccountNo, key) pairs for the login and direct paths)."""

    def __init__(
        self, options: LoadOptions, accounts: Sequence[Account | tuple[int, bytes]]
    ) -> None:
        options.check()
        if len(accounts) < options.clients:
            raise ValueError(
                f"{options.clients} clients need {options.clients} accounts, "
                f"the list has {len(accounts)}"
            )
        super().__init__(options, Totals())
        self.options: LoadOptions = options
        self.clients = [
            DummyClient(self, a if isinstance(a, Account) else Account(a[0], "", "", a[1]))
            for a in accounts[: options.clients]
        ]

    def _second(self, elapsed: float, last: Totals, window: float) -> SecondStats:
        in_login = in_game = reply_wait = disconnected = 0
        for client in self.clients:
            if client.connection is None:
                disconnected += 1
            if client.phase == Phase.IN_GAME:
                in_game += 1
                if client.inflight:
                    reply_wait += 1
            elif client.phase != Phase.IDLE:
                in_login += 1
        return SecondStats(
            elapsed=round(elapsed, 3),
            clients=len(self.clients),
            in_login=in_login,
            in_game=in_game,
            reply_wait=reply_wait,
            totals=self.totals.copy(),
            send_tps=(self.totals.packets_sent - last.packets_sent) / window,
            recv_tps=(self.totals.packets_recv - last.packets_recv) / window,
            latency=self.second_latency,
            action_delay_ms=self.action_delays(),
            disconnected=disconnected,
            shape=self.shape(),
        )
