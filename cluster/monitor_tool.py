"""The original MonitoringClient tool's protocol on ``[monitor] tool_port`` (docs/protocol.md,
"Monitoring tool protocol").

The tool connects, sends CS_MONITOR_TOOL_REQ_LOGIN with its 32-byte key and, once answered
Status 1, receives every second one CS_MONITOR_TOOL_DATA_UPDATE per figure: the original servers'
numbering (:class:`ServerNo`, :class:`DataType`) filled from the monitor's table of live samples
(:func:`tool_items` says how our processes map onto the original LoginServer, GameServer and
ChatServer). Framing is the client ports' (:mod:`cluster.codec`) with the tool's own packet code
and keys (:data:`TOOL_CODE`, :data:`TOOL_KEY1`, :data:`TOOL_KEY2`).

Contracts:

- at most :data:`MAX_TOOLS` connections at once (logged in or not); the next is closed at once;
- a tool must log in within :data:`LOGIN_TIMEOUT` seconds; a wrong key is answered Status 0 and
  closed; anything else it sends (a second login, another type, a bad code, checksum or size,
  an oversized packet) closes it;
- a tool whose unsent output would pass :data:`SEND_LIMIT` bytes (it stopped reading) is dropped;
  the others are not slowed by it: each update is encoded once and the same bytes are written
  to every logged-in tool;
- every close is counted in the monitor's ``counters`` as ``tool_<reason>`` (:data:`REASONS`),
  and every refusal is logged as one line.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

from cluster.codec import Codec, RemoteProtocolError, StreamDecoder
from cluster.config import Config
from cluster.messages import MessageSpec, register
from cluster.role import StartupError
from cluster.stats import SAMPLE_INTERVAL, Sample

if TYPE_CHECKING:
    from cluster.monitor import Monitor

log = logging.getLogger("cluster.monitor.tool")

#: The tool port's packet code and XOR keys (the original MonitoringServer's, not the clients').
TOOL_CODE = 109
TOOL_KEY1 = 30
TOOL_KEY2 = 91
#: The original MonitoringServer accepted at most this many tool sessions.
MAX_TOOLS = 10
#: Seconds a connected tool has to send its REQ_LOGIN.
LOGIN_TIMEOUT = 5.0
#: Most bytes of updates waiting in our buffer for one tool (about 5 seconds of updates); past
#: it the tool is dropped.
SEND_LIMIT = 4096
#: The kernel send buffer asked for on a tool's socket: a tool receives under 1 KB a second, and
#: a small buffer lets a tool that stopped reading be noticed in seconds, not hours.
SOCKET_SNDBUF = 4096
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

#: Every close reason, counted as ``tool_<reason>``: the codec's framing violations, then ours.
REASONS = (
    "bad_code", "too_long", "bad_checksum", "too_short", "unknown_type", "wrong_size",
    "wrong_key", "second_login", "login_timeout", "full", "slow", "gone", "shutdown",
)  # fmt: skip


# -- messages ----------------------------------------------------------------------------------


class _ToolReqLoginFields(NamedTuple):
    key: bytes


class ToolReqLogin(_ToolReqLoginFields):
    """25001 CS_MONITOR_TOOL_REQ_LOGIN, tool -> monitor: ``char LoginSessionKey[32]``."""

    __slots__ = ()
    TYPE: ClassVar[int] = 25001


class _ToolResLoginFields(NamedTuple):
    status: int


class ToolResLogin(_ToolResLoginFields):
    """25002 CS_MONITOR_TOOL_RES_LOGIN, monitor -> tool: Status 1 ok, 0 wrong key (then closed)."""

    __slots__ = ()
    TYPE: ClassVar[int] = 25002


class _ToolDataUpdateFields(NamedTuple):
    server_no: int
    data_type: int
    value: int
    timestamp: int


class ToolDataUpdate(_ToolDataUpdateFields):
    """25003 CS_MONITOR_TOOL_DATA_UPDATE, monitor -> tool: one figure, every second."""

    __slots__ = ()
    TYPE: ClassVar[int] = 25003


for _spec in (
    MessageSpec(ToolReqLogin, struct.Struct("<32s")),
    MessageSpec(ToolResLogin, struct.Struct("<B")),
    MessageSpec(ToolDataUpdate, struct.Struct("<BBii")),
):
    register(_spec)


class ServerNo(IntEnum):
    """dfMONITOR_SERVER_TYPE."""

    LOGIN = 1
    GAME = 2
    CHAT = 3
    AGENT = 4


class DataType(IntEnum):
    """dfMONITOR_DATA_TYPE (33 was deleted in the original; MASTER 14..23 are not sent)."""

    SERVER_CPU_TOTAL = 1
    SERVER_AVAILABLE_MEMORY = 2
    SERVER_NETWORK_RECV = 3
    SERVER_NETWORK_SEND = 4
    SERVER_NONPAGED_MEMORY = 5
    MATCH_SERVER_ON = 6
    MATCH_CPU = 7
    MATCH_MEMORY_COMMIT = 8
    MATCH_PACKET_POOL = 9
    MATCH_SESSION = 10
    MATCH_PLAYER = 11
    MATCH_MATCHSUCCESS = 12
    MASTER_SERVER_ON = 13
    BATTLE_SERVER_ON = 24
    BATTLE_CPU = 25
    BATTLE_MEMORY_COMMIT = 26
    BATTLE_PACKET_POOL = 27
    BATTLE_AUTH_FPS = 28
    BATTLE_GAME_FPS = 29
    BATTLE_SESSION_ALL = 30
    BATTLE_SESSION_AUTH = 31
    BATTLE_SESSION_GAME = 32
    BATTLE_ROOM_WAIT = 34
    BATTLE_ROOM_PLAY = 35
    CHAT_SERVER_ON = 36
    CHAT_CPU = 37
    CHAT_MEMORY_COMMIT = 38
    CHAT_PACKET_POOL = 39
    CHAT_SESSION = 40
    CHAT_PLAYER = 41
    CHAT_UPDATEMSG_POOL = 42
    CHAT_UPDATEMSG_TPS = 43


# -- the figures -------------------------------------------------------------------------------

Item = tuple[int, int, int]  # (ServerNo, DataType, Value)


def int32(value: object) -> int:
    """A sample value as the wire's int: rounded, clamped to int32; 0 if not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0
    if value in (float("inf"), float("-inf")):
        return INT32_MAX if value > 0 else INT32_MIN
    return max(INT32_MIN, min(INT32_MAX, round(value)))


def _numbers(samples: Iterable[dict[str, object]], key: str) -> list[float]:
    """The numeric values of `key` in `samples` (missing or non-numeric ones left out)."""
    values: list[float] = []
    for sample in samples:
        value = sample.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            values.append(value)  # (a NaN is no figure)
    return values


def _total(samples: Iterable[dict[str, object]], key: str) -> float:
    return sum(_numbers(samples, key))


def _slowest(samples: Iterable[dict[str, object]], key: str) -> float:
    return min(_numbers(samples, key), default=0)


def _hardware(samples: list[Sample]) -> dict[str, float]:
    """The host figures of the hosts these processes run on (each host's newest sample): the
    busiest CPU, the least available memory, the most NonPaged memory, network summed."""
    newest: dict[str, Sample] = {}
    for sample in samples:
        if not isinstance(sample.get("hw"), dict):
            continue
        host = str(sample.get("host", ""))
        if host not in newest or _total([sample], "time") > _total([newest[host]], "time"):
            newest[host] = sample
    hws = [s["hw"] for s in newest.values()]
    if not hws:
        return {}
    return {
        "cpu_total": max(_numbers(hws, "cpu_total"), default=0),
        "available_mb": min(_numbers(hws, "available_mb"), default=0),
        "nonpaged_mb": max(_numbers(hws, "nonpaged_mb"), default=0),
        "net_recv_kbps": _total(hws, "net_recv_kbps"),
        "net_send_kbps": _total(hws, "net_send_kbps"),
    }


def _hardware_items(server: ServerNo, samples: list[Sample]) -> list[Item]:
    """DataType 1..5 under `server`: the figures of the hosts its processes run on."""
    hw = _hardware(samples)
    if not hw:
        return []
    return [
        (server, DataType.SERVER_CPU_TOTAL, int32(hw["cpu_total"])),
        (server, DataType.SERVER_AVAILABLE_MEMORY, int32(hw["available_mb"])),
        (server, DataType.SERVER_NETWORK_RECV, int32(hw["net_recv_kbps"])),
        (server, DataType.SERVER_NETWORK_SEND, int32(hw["net_send_kbps"])),
        (server, DataType.SERVER_NONPAGED_MEMORY, int32(hw["nonpaged_mb"])),
    ]


def _server_items(server: ServerNo, on: DataType, samples: list[Sample]) -> list[Item]:
    """SERVER_ON (`on`) and, while on, the three figures numbered after it in every server's
    block (CPU, MEMORY_COMMIT, PACKET_POOL), each summed over the processes (the original server
    was one process; ours is several, and their sum is what that server costs; CPU is in % of
    one core, so it passes 100 with several busy processes), then its hosts' figures."""
    if not samples:
        return [(server, on, 0)]
    return [
        (server, on, 1),
        (server, on + 1, int32(_total(samples, "cpu_percent"))),
        (server, on + 2, int32(_total(samples, "memory_mb"))),
        (server, on + 3, int32(_total(samples, "packet_pool"))),
        *_hardware_items(server, samples),
    ]


def tool_items(live: list[Sample]) -> list[Item]:
    """Every (ServerNo, DataType, Value) of one update, from the live processes' latest samples.

    - LOGIN (1) is the auth workers plus the gateways (whose login port the clients connect to):
      SESSION = sessions on the gateways' login ports, PLAYER = logins in progress at the auth
      workers, MATCHSUCCESS = login successes per second, summed;
    - GAME (2) is the game workers: sessions summed, AUTH_FPS / GAME_FPS the slowest worker's
      (a client on it waits that long, and a sum or mean would hide it); ROOM_WAIT / ROOM_PLAY
      are 0 (this cluster has no rooms);
    - CHAT (3) is the chat workers: SESSION all sessions, PLAYER those logged in, UPDATEMSG_POOL
      the messages queued, UPDATEMSG_TPS the Update TPS, summed;
    - AGENT (4) is this monitor: MASTER_SERVER_ON = 1 (its answering is that flag), and its
      host's figures.

    Hardware (DataType 1..5) goes under the ServerNo of each server, from the hosts its processes
    run on: the original ran each server on its own machine and the tool shows a machine's
    figures next to its server, and the protocol has no host field. Where a server spans hosts:
    the busiest CPU, the least available memory, the most NonPaged memory, network summed.

    A server none of whose processes is live sends only SERVER_ON = 0 (the tool shows it off)."""

    def role(*names: str) -> list[Sample]:
        return [s for s in live if s.get("role") in names]

    login, auth, gateways = role("auth", "gateway"), role("auth"), role("gateway")
    game, chat = role("game"), role("chat")
    items = _server_items(ServerNo.LOGIN, DataType.MATCH_SERVER_ON, login)
    if login:
        items += [
            (ServerNo.LOGIN, DataType.MATCH_SESSION, int32(_total(gateways, "sessions_login"))),
            (ServerNo.LOGIN, DataType.MATCH_PLAYER, int32(_total(auth, "sessions"))),
            (ServerNo.LOGIN, DataType.MATCH_MATCHSUCCESS,
             int32(_total(auth, "login_success_tps"))),
        ]  # fmt: skip
    items += _server_items(ServerNo.GAME, DataType.BATTLE_SERVER_ON, game)
    if game:
        items += [
            (ServerNo.GAME, DataType.BATTLE_AUTH_FPS, int32(_slowest(game, "auth_fps"))),
            (ServerNo.GAME, DataType.BATTLE_GAME_FPS, int32(_slowest(game, "game_fps"))),
            (ServerNo.GAME, DataType.BATTLE_SESSION_ALL, int32(_total(game, "sessions"))),
            (ServerNo.GAME, DataType.BATTLE_SESSION_AUTH, int32(_total(game, "session_auth"))),
            (ServerNo.GAME, DataType.BATTLE_SESSION_GAME, int32(_total(game, "session_game"))),
            (ServerNo.GAME, DataType.BATTLE_ROOM_WAIT, 0),
            (ServerNo.GAME, DataType.BATTLE_ROOM_PLAY, 0),
        ]
    items += _server_items(ServerNo.CHAT, DataType.CHAT_SERVER_ON, chat)
    if chat:
        items += [
            (ServerNo.CHAT, DataType.CHAT_SESSION, int32(_total(chat, "sessions"))),
            (ServerNo.CHAT, DataType.CHAT_PLAYER, int32(_total(chat, "session_login"))),
            (ServerNo.CHAT, DataType.CHAT_UPDATEMSG_POOL, int32(_total(chat, "packet_pool"))),
            (ServerNo.CHAT, DataType.CHAT_UPDATEMSG_TPS, int32(_total(chat, "update_tps"))),
        ]
    items.append((ServerNo.AGENT, DataType.MASTER_SERVER_ON, 1))
    items += _hardware_items(ServerNo.AGENT, role("monitor"))
    return [(int(server), int(dtype), value) for server, dtype, value in items]


def encode_update(codec: Codec, items: list[Item], timestamp: int) -> bytes:
    """One DATA_UPDATE packet per item, joined: what every logged-in tool is sent."""
    stamp = int32(timestamp)
    return b"".join(
        codec.encode_fields(ToolDataUpdate.TYPE, (server, dtype, value, stamp))
        for server, dtype, value in items
    )


# -- the port ----------------------------------------------------------------------------------


class ToolPort:
    """The tool sessions of one monitor and the once-a-second broadcast to them."""

    def __init__(self, key: str, monitor: Monitor) -> None:
        self.key = key.encode("ascii")
        self.monitor = monitor
        self.codec = Codec(TOOL_CODE, TOOL_KEY1, TOOL_KEY2)
        self.sessions: set[ToolSession] = set()
        self.server: asyncio.AbstractServer | None = None
        self.task: asyncio.Task[None] | None = None

    def protocol(self) -> ToolSession:
        return ToolSession(self)

    def count(self, reason: str) -> None:
        self.monitor.counters[f"tool_{reason}"] += 1

    def update(self) -> int:
        """Send one update to every logged-in tool; returns to how many."""
        tools = [s for s in self.sessions if s.logged_in]
        if not tools:
            return 0
        packets = encode_update(self.codec, tool_items(self.monitor.live()), int(time.time()))
        sent = 0
        for tool in tools:
            sent += tool.send(packets)
        return sent

    async def broadcast_forever(self) -> None:
        """Every second while the port is open; at its close, drop the tools still connected."""
        try:
            while self.server is None or self.server.is_serving():
                await asyncio.sleep(SAMPLE_INTERVAL)
                try:
                    self.update()
                except Exception:  # a bug must not end the updates for good
                    log.exception("monitor tool update failed")
        finally:
            for session in list(self.sessions):
                session.drop("shutdown", "the monitor is closing", refusal=False)


class ToolSession(asyncio.Protocol):
    """One tool connection: waits for its login, then only receives."""

    def __init__(self, port: ToolPort) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.decoder: StreamDecoder = port.codec.decoder([ToolReqLogin.TYPE])
        self.logged_in = False
        self.closed = False
        self.peer = "?"
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self.port.sessions) >= MAX_TOOLS:
            self.drop("full", f"{MAX_TOOLS} tools already connected")
            return
        self.port.sessions.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF)
            except (OSError, AttributeError, TypeError):
                pass  # a loop whose socket object lacks it: only the kernel's bound applies
        self.timer = asyncio.get_running_loop().call_later(
            LOGIN_TIMEOUT, self.drop, "login_timeout", f"no login within {LOGIN_TIMEOUT:g}s"
        )

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            messages = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            self.drop(exc.reason, exc.detail)
            return
        for message in messages:
            if self.logged_in:
                self.drop("second_login", "REQ_LOGIN after login")
                return
            self.login(message.key)
            if self.closed:
                return

    def login(self, key: bytes) -> None:
        if not hmac.compare_digest(key, self.port.key):
            assert self.transport is not None
            self.transport.write(self.port.codec.encode(ToolResLogin(0)))
            self.drop("wrong_key", "wrong login key", flush=True)
            return
        if self.timer is not None:
            self.timer.cancel()
        self.logged_in = True
        self.port.monitor.counters["tool_login"] += 1
        log.info("monitor tool %s logged in", self.peer)
        self.send(self.port.codec.encode(ToolResLogin(1)))

    def send(self, data: bytes) -> int:
        """Queue `data` (1 when queued); a tool whose backlog would pass SEND_LIMIT is dropped."""
        if self.closed or self.transport is None:
            return 0
        if self.transport.get_write_buffer_size() + len(data) > SEND_LIMIT:
            self.drop("slow", f"over {SEND_LIMIT} bytes unsent: it does not read")
            return 0
        self.transport.write(data)
        return 1

    def drop(self, reason: str, detail: str, flush: bool = False, refusal: bool = True) -> None:
        """Close this tool for `reason` (counted once as ``tool_<reason>``, logged once)."""
        if self.closed:
            return
        self.closed = True
        self.port.sessions.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        self.port.count(reason)
        (log.warning if refusal else log.info)(
            "monitor tool %s closed: %s (%s)", self.peer, reason, detail
        )
        if self.transport is not None:
            if flush:
                self.transport.close()
            else:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop("gone", f"disconnected{f': {exc}' if exc else ''}", refusal=False)


#: Counters of the tool port that are not closes the monitor decided.
NOT_DROPS = frozenset({"tool_login", "tool_gone", "tool_shutdown"})


def sample_fields(counters: Mapping[str, int]) -> dict[str, Any]:
    """The tool port's figures in the monitor's own 1-second sample: ``tool_logins`` (a total)
    and ``drops`` (tool connections the monitor closed, by ``tool_<reason>``), so ``/metrics``,
    ``cluster status`` and the screens show refused tools as they show refused clients. A tool
    that leaves on its own (``gone``) or the monitor's stop (``shutdown``) is no drop."""
    drops = {name: n for name, n in counters.items() if name.startswith("tool_")
             and name not in NOT_DROPS}  # fmt: skip
    return {"tool_logins": counters.get("tool_login", 0), "drops": drops}


async def open_tool_port(config: Config, monitor: Monitor) -> asyncio.AbstractServer | None:
    """Listen for the original tool on ``monitor.tool_host:tool_port`` while ``monitor.tool_key``
    is set; None when it is not. Raises :class:`cluster.role.StartupError` if it cannot listen.
    The updates stop, and the connected tools are closed, within a second of the server's
    ``close()``."""
    mon = config.monitor
    if not mon.tool_key:
        return None
    port = ToolPort(mon.tool_key, monitor)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(port.protocol, mon.tool_host, mon.tool_port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on monitor.tool_port {mon.tool_host}:{mon.tool_port}: {exc}"
        ) from None
    port.server = server
    port.task = asyncio.create_task(port.broadcast_forever(), name="monitor-tool-updates")
    log.info("monitor tool port %s:%s open", mon.tool_host, mon.tool_port)
    return server
