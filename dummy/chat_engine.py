"""The chat load engine: many dummy chat clients in one process, as the original chat dummy.

Each :class:`ChatDummyClient` plays one account. The action loop visits every client every
``delay_action`` ms (the original's DELAY_ACTION, 1000 ms by default, as its config): a
disconnected client connects with probability ``rand_connect`` %; a client logged in to the chat
port disconnects with probability ``rand_disconnect`` % or, when it waits for no reply, acts with
probability ``rand_contents`` %: a sector move (always the first action, then about one in three)
to a random sector of the ``sector_range`` x ``sector_range`` corner of the grid, or a message,
one of :data:`CHAT_LINES` followed by a token ``#run.account.seq`` that names it. One request is
in flight per client at a time (ReplyWait counts the clients waiting), and a message is said only
from a sector the server has confirmed, so the sector it is said in is known.

The login path is the real client's: login port (CS_LOGIN_REQ_LOGIN after ``delay_login`` ms)
-> RES_LOGIN -> the chat address it names -> CS_CHAT_REQ_LOGIN with the ID and Nickname RES_LOGIN
gave; the web path first logs in on the web login (``POST /v1/login`` with the account's UserID and
password, :mod:`dummy.web`) on each (re)connect, for a fresh key and the login address, then goes
the login path with that key; the direct path goes straight to the chat port with the key, ID and
Nickname of the accounts file.

Every reply is checked (the kinds are :data:`CHECK_ERRORS`, the original's error log):

- RES_LOGIN: the AccountNo is mine (``login_account``);
- RES_SECTOR_MOVE: the AccountNo is mine (``move_account``), I asked for a move
  (``move_not_requested``), and it is the move I asked for (``move_mismatch``);
- RES_MESSAGE: I am logged in (``message_not_login``) and in a sector or moving into one
  (``message_not_in_sector``); my own message comes back only if I said one (``message_no_send``),
  unchanged (``message_mismatch``), in order; a message of another client of this engine (or
  of my account's earlier connection) must be one it said (``unknown_token``), unchanged
  (``message_mismatch``), under the sender's ID and Nickname (``sender_mismatch``), said in a
  sector within ``expect_radius`` (1: the 3 x 3 rule) in x and y of a sector I may be in: my
  confirmed sector or a move I asked for and have not had answered (``not_neighbour``); per
  sender, its sequence numbers must rise: the same one twice is ``duplicate``, a lower one after
  a higher one ``order`` (so a copy of an older message also counts as ``order``).

Messages from accounts this engine does not drive (other agents, other tools) count as
``foreign``, not errors. Beyond the checks, the engine counts the deliveries that were certain:
a message said, and echoed to its sender, while I sat in a sector around it (from the answer of
my move there to my request of the next move) must reach me before the answer of that next move;
``missed`` counts those that did not. It is exact with one chat worker; with several, a message
relayed to another worker may reach it after its player moved on, so it is a figure, not an error.

An action unanswered for ``reply_timeout`` counts as ``reply_timeout`` (once); a login unanswered
for ``login_timeout`` as ``login_timeout``; login-port statuses other than OK as
``login_<status>``; a chat login refused as ``chat_login_failed``; a web login as ``web_ok`` or an
error ``web_invalid``, ``web_rate_limited``, ``web_busy`` or ``web_error``, after which the client
waits (the answer's Retry-After, about 1 s) before it tries again. A connection the server closes
unexpectedly is a Down Client: Login DownClient on the login port (before its answer), Chat
DownClient on the chat port.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from cluster.messages import (
    CHAT_MESSAGE_MAX,
    CHAT_SERVER_MESSAGES,
    SECTOR_MAX,
    ChatReqHeartbeat,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
    LoginReqLogin,
    LoginResLogin,
    LoginStatus,
)
from dummy.accounts import Account
from dummy.engine import (
    PATHS,
    Counters,
    LegClient,
    LegConnection,
    LoadEngine,
    RunShape,
    check_threads,
    check_web_options,
)
from dummy.histogram import Histogram

log = logging.getLogger("dummy")

#: What the dummy says (the original read song lyrics from ChatList.txt): public-domain verses
#: and proverbs, some in Hangul so that the UTF-16 text is not all ASCII.
CHAT_LINES: tuple[str, ...] = (
    "Twinkle, twinkle, little star, how I wonder what you are",
    "Up above the world so high, like a diamond in the sky",
    "Row, row, row your boat, gently down the stream",
    "Merrily, merrily, merrily, merrily, life is but a dream",
    "Hey diddle diddle, the cat and the fiddle, the cow jumped over the moon",
    "Mary had a little lamb, its fleece was white as snow",
    "London Bridge is falling down, falling down, falling down",
    "Early to bed and early to rise makes a man healthy, wealthy and wise",
    "A stitch in time saves nine",
    "All that glitters is not gold",
    "The quick brown fox jumps over the lazy dog",
    "Sing a song of sixpence, a pocket full of rye",
    "아리랑 아리랑 아라리요",
    "아리랑 고개로 넘어간다",
    "나를 버리고 가시는 님은 십리도 못가서 발병난다",
    "세 살 버릇 여든까지 간다",
    "낮말은 새가 듣고 밤말은 쥐가 듣는다",
    "가는 말이 고와야 오는 말이 곱다",
    "Ok",
    "",
)

#: The share of actions (once in a sector) that are sector moves; the rest are messages.
MOVE_SHARE = 0.3
#: How long a said message is remembered for the checks of its deliveries (seconds).
HORIZON = 120.0

#: The error kinds that are the original dummy's checks: a reply that must never come. Any of
#: them makes a run fail.
CHECK_ERRORS = frozenset({
    "packet_error", "login_account", "move_account", "move_not_requested", "move_mismatch",
    "message_not_login", "message_not_in_sector", "message_no_send", "message_mismatch",
    "unknown_token", "sender_mismatch", "not_neighbour", "duplicate", "order",
})  # fmt: skip


#: One line of the accounts file (the chat load uses its ID and Nickname too).
ChatAccount = Account


@dataclass(frozen=True)
class ChatOptions:
    """The original chat dummy's knobs, plus where to connect. Percentages are 0..100."""

    clients: int = 100
    rand_connect: int = 100
    rand_disconnect: int = 0
    rand_contents: int = 100
    delay_action: float = 1000.0  # ms between two visits of the action loop (original 1000)
    delay_login: float = 0.0  # ms between connecting and sending a login request
    duration: float = 20.0  # s
    path: str = "login"
    ramp: float = 0.0  # new connections per second; 0 = no limit
    sector_range: int = 10  # moves go to sectors 0..sector_range-1 in x and y
    login_host: str = "127.0.0.1"
    login_port: int = 8091
    chat_host: str = "127.0.0.1"
    chat_port: int = 50000
    code: int = 119
    key1: int = 50
    key2: int = 132
    reply_timeout: float = 5.0  # s: an action unanswered by then is counted (reply_timeout)
    login_timeout: float = 10.0  # s: a login request unanswered by then is an error
    heartbeat_interval: float = 30.0  # s of silence after which a client sends a heartbeat
    #: What the neighbour check expects (1: the server's 3 x 3 rule). Other values only exist to
    #: show that the checks catch a server that does not follow the rule the dummy expects.
    expect_radius: int = 1
    web_host: str = "127.0.0.1"  # the web login (--path web)
    web_port: int = 8080
    web_concurrency: int = 64  # web logins in flight at most (the rest wait their turn)
    web_timeout: float = 10.0  # s: a web login unanswered by then is a web_error
    threads: int = 1  # action loops, each over its share of the clients (dummy.engine)

    def check(self) -> None:
        """Raise ValueError naming the first bad option."""
        for name in ("rand_connect", "rand_disconnect", "rand_contents"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"--{name.replace('_', '-')} must be 0..100")
        if self.clients < 1:
            raise ValueError("--clients must be at least 1")
        check_threads(self)
        if self.delay_action < 0 or self.delay_login < 0 or self.ramp < 0:
            raise ValueError("--delay-action, --delay-login and --ramp must not be negative")
        if self.duration <= 0:
            raise ValueError("--duration must be positive")
        if self.path not in PATHS:
            raise ValueError(f"--path must be one of {', '.join(PATHS)}")
        check_web_options(self)
        if not 1 <= self.sector_range <= SECTOR_MAX:
            raise ValueError(f"--sector-range must be 1..{SECTOR_MAX}")
        if self.heartbeat_interval <= 0 or self.reply_timeout <= 0:
            raise ValueError("heartbeat_interval and reply_timeout must be positive")


@dataclass
class ChatTotals(Counters):
    """Counters of a chat run (or of one second); they add up across agents."""

    connect_total: int = 0  # successful TCP connects, login and chat ports
    connect_fail: int = 0  # failed connects, both ports
    chat_connect_fail: int = 0  # of which to the chat port
    down_client: int = 0  # connections the server closed unexpectedly (login_down + chat_down)
    login_down: int = 0  # login port closed before its answer
    chat_down: int = 0  # chat port closed by the server
    disconnects: int = 0  # connections the dummy closed on purpose (rand_disconnect)
    login_ok: int = 0  # chat logins answered OK
    web_ok: int = 0  # web logins that gave a key (--path web); failures are errors web_*
    moves_sent: int = 0
    moves_recv: int = 0
    messages_sent: int = 0
    messages_recv: int = 0  # every RES_MESSAGE
    echoes: int = 0  # my own messages back
    deliveries: int = 0  # messages of other clients of this engine
    foreign: int = 0  # messages of accounts this engine does not drive
    expected: int = 0  # deliveries that were certain (see the module doc)
    missed: int = 0  # of which did not arrive
    heartbeats: int = 0
    packets_sent: int = 0
    packets_recv: int = 0

    def check_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k in CHECK_ERRORS)


class Phase(IntEnum):
    IDLE = 0
    LOGIN_CONNECTING = 1
    LOGIN_WAIT = 2
    CHAT_CONNECTING = 3
    CHAT_LOGIN_WAIT = 4
    IN_CHAT = 5
    WEB_WAIT = 6  # a web login under way (or waiting its turn)


class Said:
    """One message a client of this engine said: what the checks of its deliveries need."""

    __slots__ = ("echo_at", "nickname", "payload", "sector", "sender", "sent_at", "seq",
                 "user_id")  # fmt: skip

    def __init__(self, sender: int, seq: int, sector: tuple[int, int], payload: bytes,
                 user_id: str, nickname: str, sent_at: float) -> None:  # fmt: skip
        self.sender = sender
        self.seq = seq
        self.sector = sector
        self.payload = payload
        self.user_id = user_id
        self.nickname = nickname
        self.sent_at = sent_at
        self.echo_at: float | None = None  # when the sender had it back


def near(a: tuple[int, int], b: tuple[int, int], radius: int = 1) -> bool:
    """Whether sectors `a` and `b` are within `radius` of each other in x and in y (radius 1:
    `b` is one of the 3 x 3 sectors around `a`)."""
    return abs(a[0] - b[0]) <= radius and abs(a[1] - b[1]) <= radius


def token_of(run: str, account_no: int, seq: int) -> str:
    return f"#{run}.{account_no}.{seq}"


def parse_token(payload: bytes) -> tuple[str, int, int] | None:
    """(run, account_no, seq) of a message the dummy said, None for any other text."""
    try:
        text = payload.decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    _, mark, token = text.rpartition("#")
    parts = token.split(".")
    if not mark or len(parts) != 3:
        return None
    try:
        return parts[0], int(parts[1]), int(parts[2])
    except ValueError:
        return None


class ChatDummyClient(LegClient["ChatEngine"]):
    """One account's chat client."""

    IDLE = Phase.IDLE
    LOGIN_CONNECTING = Phase.LOGIN_CONNECTING
    APP_CONNECTING = Phase.CHAT_CONNECTING
    WEB_WAIT = Phase.WEB_WAIT
    APP_MESSAGES = CHAT_SERVER_MESSAGES

    __slots__ = ("account", "deadline", "expect", "first_seq", "interval_seen", "last_sent",
                 "last_seq", "late", "moves", "nickname", "said", "sector", "stable_since",
                 "user_id")  # fmt: skip

    def __init__(self, engine: ChatEngine, account: ChatAccount) -> None:
        self.engine = engine
        self.account = account
        self.phase = Phase.IDLE
        self.connection = None
        self.leaving = False
        self.deadline = 0.0  # when the awaited login answer is overdue
        self.app_address = (engine.options.chat_host, engine.options.chat_port)
        self.login_address = (engine.options.login_host, engine.options.login_port)
        self.session_key = account.session_key
        self.retry_at = 0.0
        self.user_id = account.user_id  # as logged in to the chat port
        self.nickname = account.nickname
        self._reset()

    def _reset(self) -> None:
        """Forget the chat session (the connection is gone)."""
        self.sector: tuple[int, int] | None = None  # confirmed by RES_SECTOR_MOVE
        self.moves: deque[tuple[int, int, float]] = deque()  # requested, unanswered: x, y, at
        self.said: deque[Said] = deque()  # my messages not yet back
        self.late = False  # the action in flight was counted as reply_timeout
        self.last_sent = 0.0
        self.last_seq: dict[int, int] = {}  # sender -> highest seq received from it
        self.stable_since = 0.0  # when the current sector was confirmed
        self.interval_seen: set[tuple[int, int]] = set()  # received since then
        self.expect: set[tuple[int, int]] | None = None  # certain deliveries of that interval
        self.first_seq = 0  # my first message on this connection (earlier ones: other sessions)

    @property
    def account_no(self) -> int:
        return self.account.account_no

    @property
    def waiting(self) -> bool:
        return bool(self.moves or self.said)

    # -- actions ----------------------------------------------------------------------------------

    def _web_account(self) -> tuple[int, str, str]:
        account = self.account
        return account.account_no, account.user_id, account.password

    def _connect_failed(self, app: bool) -> None:
        if app:
            self.engine.totals.chat_connect_fail += 1

    def _send_login(self, connection: LegConnection) -> None:
        if self.connection is not connection or connection.transport is None or self.leaving:
            return
        account = self.account
        if self.phase == Phase.LOGIN_CONNECTING:
            message: Any = LoginReqLogin(account.account_no, self.session_key)
            self.phase = Phase.LOGIN_WAIT
        else:
            message = ChatReqLogin(
                account.account_no, self.user_id, self.nickname, self.session_key
            )
            self.phase = Phase.CHAT_LOGIN_WAIT
        self.deadline = time.monotonic() + self.engine.options.login_timeout
        self._write(message)

    def _write(self, message: Any) -> None:
        connection = self.connection
        if connection is None or connection.transport is None or self.leaving:
            return
        connection.transport.write(self.engine.codec.encode(message))
        self.engine.totals.packets_sent += 1
        self.last_sent = time.monotonic()

    def act(self, now: float) -> None:
        """One content action: a sector move or a message."""
        engine = self.engine
        if self.sector is None or engine.chance() < MOVE_SHARE:
            self.move(now)
        else:
            self.say(now)

    def move(self, now: float) -> None:
        engine = self.engine
        limit = engine.options.sector_range
        x, y = engine.sector_choice(limit), engine.sector_choice(limit)
        if self.sector is not None:
            self.expect = engine.certain_deliveries(self, now)
        self.moves.append((x, y, now))
        engine.totals.moves_sent += 1
        self._write(ChatReqSectorMove(self.account_no, x, y))

    def say(self, now: float) -> None:
        assert self.sector is not None
        engine = self.engine
        said = engine.new_message(self, now)
        self.said.append(said)
        engine.totals.messages_sent += 1
        self._write(ChatReqMessage(self.account_no, said.payload))

    def packet_error(self, connection: LegConnection | None, why: str) -> None:
        self.error("packet_error", why, close=connection)

    def error(self, kind: str, why: str, close: LegConnection | None = None) -> None:
        """Count an error of `kind`; remember the first check error; close the connection
        `close` when it is the current one (the state is not to be trusted any more)."""
        engine = self.engine
        engine.totals.errors[kind] += 1
        if kind in CHECK_ERRORS and engine.first_error is None:
            engine.first_error = f"account {self.account_no}: {kind}: {why}"
        if close is not None and close is self.connection:
            self.close()

    # -- events ----------------------------------------------------------------------------------

    def on_message(self, message: Any) -> None:
        engine = self.engine
        engine.totals.packets_recv += 1
        kind = type(message)
        phase = self.phase
        if kind is ChatResMessage:
            self._on_chat(message)
        elif kind is ChatResSectorMove:
            self._on_move(message)
        elif kind is LoginResLogin and phase == Phase.LOGIN_WAIT:
            self._on_login_port(message)
        elif kind is ChatResLogin and phase == Phase.CHAT_LOGIN_WAIT:
            self._on_chat_login(message)
        else:
            self.error("packet_error", f"unexpected {kind.__name__} in {phase.name}",
                       close=self.connection)  # fmt: skip

    def _on_login_port(self, message: LoginResLogin) -> None:
        engine = self.engine
        if message.account_no != self.account_no:
            self.error("login_account", f"login port RES_LOGIN for {message.account_no}",
                       close=self.connection)  # fmt: skip
            return
        self.close()  # the server closes too; we move on to the chat port either way
        if message.status != LoginStatus.OK:
            engine.totals.errors[f"login_{_status_name(message.status)}"] += 1
            self.phase = Phase.IDLE
            return
        self.app_address = (message.chat_server_ip, message.chat_server_port)
        self.user_id, self.nickname = message.user_id, message.nickname
        self.connect(app=True)

    def _on_chat_login(self, message: ChatResLogin) -> None:
        engine = self.engine
        if message.account_no != self.account_no:
            self.error("login_account", f"RES_LOGIN for {message.account_no}",
                       close=self.connection)  # fmt: skip
            return
        if message.status != 1:
            engine.totals.errors["chat_login_failed"] += 1
            self.close()
            self.phase = Phase.IDLE
            return
        engine.totals.login_ok += 1
        self.phase = Phase.IN_CHAT
        self.first_seq = engine.sequences[self.account_no]

    def _on_move(self, message: ChatResSectorMove) -> None:
        if message.account_no != self.account_no:
            self.error("move_account", f"RES_SECTOR_MOVE for {message.account_no}",
                       close=self.connection)  # fmt: skip
            return
        if self.phase != Phase.IN_CHAT or not self.moves:
            self.error("move_not_requested", f"RES_SECTOR_MOVE {message.sector_x},"
                       f"{message.sector_y} unasked", close=self.connection)  # fmt: skip
            return
        x, y, sent_at = self.moves[0]
        if (message.sector_x, message.sector_y) != (x, y):
            self.error("move_mismatch", f"RES_SECTOR_MOVE {message.sector_x},"
                       f"{message.sector_y}, asked {x},{y}", close=self.connection)  # fmt: skip
            return
        engine = self.engine
        now = time.monotonic()
        self.moves.popleft()
        engine.totals.moves_recv += 1
        engine.second_latency.record(int((now - sent_at) * 1e6))
        self.late = False
        if self.expect is not None:  # the interval in the last sector is over: all arrived?
            engine.totals.expected += len(self.expect)
            engine.totals.missed += len(self.expect - self.interval_seen)
            self.expect = None
        self.sector = (x, y)
        self.stable_since = now
        self.interval_seen.clear()

    def _on_chat(self, message: ChatResMessage) -> None:
        engine = self.engine
        totals = engine.totals
        totals.messages_recv += 1
        if self.phase != Phase.IN_CHAT:
            self.error("message_not_login", f"RES_MESSAGE from {message.account_no} in "
                       f"{self.phase.name}")  # fmt: skip
            return
        in_sector = self.sector is not None or bool(self.moves)
        token = parse_token(message.message)
        if message.account_no == self.account_no and (
            token is None or token[0] != engine.run_id or token[1] != self.account_no
            or token[2] >= self.first_seq
        ):  # fmt: skip
            self._on_own(message, in_sector)
            return
        # Another client's, or one my account said on an earlier connection (the server may
        # handle it after this session entered a sector): heard as any other.
        if token is None or token[0] != engine.run_id or token[1] not in engine.accounts:
            totals.foreign += 1
            return
        _, sender, seq = token
        totals.deliveries += 1
        said = engine.sent.get((sender, seq))
        if said is None:
            self.error("unknown_token", f"a message {sender}.{seq} never said (or forgotten)")
            return
        if sender != message.account_no:
            self.error("sender_mismatch", f"token of {sender} under AccountNo "
                       f"{message.account_no}")  # fmt: skip
            return
        if message.message != said.payload:
            self.error("message_mismatch", f"message {sender}.{seq} altered")
        elif (message.user_id, message.nickname) != (said.user_id, said.nickname):
            self.error("sender_mismatch", f"message {sender}.{seq} from {message.user_id}/"
                       f"{message.nickname}, said by {said.user_id}/{said.nickname}")  # fmt: skip
        if not in_sector:
            self.error("message_not_in_sector", f"message {sender}.{seq} before any sector")
        elif not self._may_hear(said.sector):
            self.error("not_neighbour", f"message {sender}.{seq} said in {said.sector}, I am "
                       f"in {self.sector} (moving to {[m[:2] for m in self.moves]})")  # fmt: skip
        last = self.last_seq.get(sender)
        if last is not None and seq <= last:
            kind = "duplicate" if seq == last else "order"
            self.error(kind, f"message {sender}.{seq} after {sender}.{last}")
        else:
            self.last_seq[sender] = seq
        self.interval_seen.add((sender, seq))

    def _may_hear(self, sector: tuple[int, int]) -> bool:
        radius = self.engine.options.expect_radius
        if self.sector is not None and near(self.sector, sector, radius):
            return True
        return any(near((x, y), sector, radius) for x, y, _ in self.moves)

    def _on_own(self, message: ChatResMessage, in_sector: bool) -> None:
        engine = self.engine
        if not in_sector:
            self.error("message_not_in_sector", "my own message back before any sector")
        if not self.said:
            self.error("message_no_send", "my own message back, none said",
                       close=self.connection)  # fmt: skip
            return
        said = self.said[0]
        if message.message != said.payload:
            self.error("message_mismatch", f"my message {said.seq} came back altered "
                       f"({message.message[:40]!r})", close=self.connection)  # fmt: skip
            return
        if (message.user_id, message.nickname) != (self.user_id, self.nickname):
            self.error("sender_mismatch", f"my message under {message.user_id}/"
                       f"{message.nickname}")  # fmt: skip
        now = time.monotonic()
        self.said.popleft()
        said.echo_at = now
        engine.totals.echoes += 1
        engine.second_latency.record(int((now - said.sent_at) * 1e6))
        self.late = False

    def on_closed(self, connection: LegConnection) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        engine = self.engine
        if not self.leaving and not engine.stopping:
            engine.totals.down_client += 1
            if self.phase in (Phase.LOGIN_CONNECTING, Phase.LOGIN_WAIT):
                engine.totals.login_down += 1
            else:
                engine.totals.chat_down += 1
        if self.phase in (Phase.LOGIN_CONNECTING, Phase.CHAT_CONNECTING):
            return  # a connect of the next leg is already under way
        self.phase = Phase.IDLE
        self._reset()

    def tick(self, now: float) -> None:
        """One visit of the action loop."""
        engine = self.engine
        phase = self.phase
        options = engine.options
        if phase == Phase.IN_CHAT:
            if self.leaving:
                return
            if engine.roll(options.rand_disconnect):
                engine.totals.disconnects += 1
                self.close()
                return
            if self.waiting:
                self._count_late(now)
            elif not engine.paused and engine.roll(options.rand_contents):
                self.act(now)
            if now - self.last_sent >= options.heartbeat_interval:
                engine.totals.heartbeats += 1
                self._write(ChatReqHeartbeat())
        elif phase == Phase.IDLE:
            if now < self.retry_at:
                return
            if not engine.paused and engine.roll(options.rand_connect) and engine.take_ramp_token():
                if options.path == "web":
                    self.web_login()
                else:
                    self.connect(app=options.path == "direct")
        elif phase in (Phase.LOGIN_WAIT, Phase.CHAT_LOGIN_WAIT) and now > self.deadline:
            engine.totals.errors["login_timeout"] += 1
            self.close()

    def _count_late(self, now: float) -> None:
        if self.late:
            return
        sent_at = self.moves[0][2] if self.moves else self.said[0].sent_at
        if now - sent_at > self.engine.options.reply_timeout:
            self.late = True
            self.engine.totals.errors["reply_timeout"] += 1


def _status_name(status: int) -> str:
    try:
        return LoginStatus(status).name.lower()
    except ValueError:
        return f"status_{status}"


@dataclass
class ChatSecond:
    """What one second of a chat run looked like (a row of the CSV, a frame of the screen)."""

    elapsed: float
    clients: int
    in_login: int  # on the login port or logging in to the chat port
    in_chat: int  # logged in to the chat port
    connected: int  # with a connection open (either port)
    reply_wait: int  # waiting for the answer of a move or for their own message
    totals: ChatTotals  # cumulative
    send_tps: float
    recv_tps: float
    latency: Histogram  # move and own-message latencies of this second
    action_delay_ms: tuple[float, float, float]  # min, avg, max of this second
    shape: RunShape = field(default_factory=RunShape)

    def to_map(self) -> dict[str, Any]:
        """The map an agent sends the controller each second (msgpack-able)."""
        return {
            "elapsed": self.elapsed, "clients": self.clients, "in_login": self.in_login,
            "in_chat": self.in_chat, "connected": self.connected, "reply_wait": self.reply_wait,
            "send_tps": self.send_tps, "recv_tps": self.recv_tps,
            "totals": self.totals.to_dict(), "latency": self.latency.to_dict(),
            "action_delay_ms": list(self.action_delay_ms), **self.shape.to_map(),
        }  # fmt: skip


class ChatEngine(LoadEngine[ChatTotals, ChatSecond]):
    """Runs `options` with one chat client per account of `accounts`."""

    def __init__(self, options: ChatOptions, accounts: list[ChatAccount]) -> None:
        options.check()
        if len(accounts) < options.clients:
            raise ValueError(
                f"{options.clients} clients need {options.clients} accounts, "
                f"the list has {len(accounts)}"
            )
        super().__init__(options, ChatTotals())
        self.options: ChatOptions = options
        self.run_id = os.urandom(3).hex()  # names this engine's messages
        self.clients = [ChatDummyClient(self, account) for account in accounts[: options.clients]]
        self.accounts = {client.account_no: client for client in self.clients}
        if len(self.accounts) != len(self.clients):
            raise ValueError("the accounts list has an AccountNo twice")
        self.sequences: Counter[int] = Counter()  # account -> messages said (across connections)
        self.sent: dict[tuple[int, int], Said] = {}  # (sender, seq) -> what was said
        self.by_sector: dict[tuple[int, int], deque[Said]] = {}
        self._said_order: deque[Said] = deque()
        self._lines = [line.encode("utf-16-le") for line in CHAT_LINES]

    def chance(self) -> float:
        return self._random.random()

    def sector_choice(self, limit: int) -> int:
        return self._random.randrange(limit)

    def new_message(self, client: ChatDummyClient, now: float) -> Said:
        """A message for `client` to say now, from its confirmed sector, remembered."""
        assert client.sector is not None
        self._forget(now)
        account_no = client.account_no
        seq = self.sequences[account_no]
        self.sequences[account_no] = seq + 1
        tail = (" " + token_of(self.run_id, account_no, seq)).encode("utf-16-le")
        room = (CHAT_MESSAGE_MAX - len(tail)) & ~1  # whole UTF-16 units
        line = self._lines[self._random.randrange(len(self._lines))][:room]
        said = Said(account_no, seq, client.sector, line + tail, client.user_id, client.nickname,
                    now)  # fmt: skip
        self.sent[(account_no, seq)] = said
        self.by_sector.setdefault(client.sector, deque()).append(said)
        self._said_order.append(said)
        return said

    def _forget(self, now: float) -> None:
        """Drop what was said more than HORIZON seconds ago."""
        order = self._said_order
        limit = now - HORIZON
        while order and order[0].sent_at < limit:
            said = order.popleft()
            del self.sent[(said.sender, said.seq)]
            listed = self.by_sector[said.sector]
            listed.popleft()  # the oldest of its sector too
            if not listed:
                del self.by_sector[said.sector]

    def certain_deliveries(self, client: ChatDummyClient, now: float) -> set[tuple[int, int]]:
        """The messages `client` must have received by the answer of the move it is about to
        ask for: said by another client of this engine in a sector around the client's since its
        sector was confirmed, and already echoed to their sender."""
        assert client.sector is not None
        radius = self.options.expect_radius
        cx, cy = client.sector
        since = client.stable_since
        certain = set()
        for x in range(max(0, cx - radius), min(SECTOR_MAX, cx + radius + 1)):
            for y in range(max(0, cy - radius), min(SECTOR_MAX, cy + radius + 1)):
                for said in reversed(self.by_sector.get((x, y), ())):
                    if said.sent_at < since:
                        break
                    if said.echo_at is not None and said.sender != client.account_no:
                        certain.add((said.sender, said.seq))
        return certain

    def _second(self, elapsed: float, last: ChatTotals, window: float) -> ChatSecond:
        in_login = in_chat = connected = reply_wait = 0
        for client in self.clients:
            if client.phase == Phase.IN_CHAT:
                in_chat += 1
                if client.waiting:
                    reply_wait += 1
            elif client.phase != Phase.IDLE:
                in_login += 1
            if client.connection is not None:
                connected += 1
        return ChatSecond(
            elapsed=round(elapsed, 3),
            clients=len(self.clients),
            in_login=in_login,
            in_chat=in_chat,
            connected=connected,
            reply_wait=reply_wait,
            totals=self.totals.copy(),
            send_tps=(self.totals.packets_sent - last.packets_sent) / window,
            recv_tps=(self.totals.packets_recv - last.packets_recv) / window,
            latency=self.second_latency,
            action_delay_ms=self.action_delays(),
            shape=self.shape(),
        )
