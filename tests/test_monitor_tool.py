"""The original MonitoringClient tool's protocol on ``monitor.tool_port``, against a real monitor.

The tool here is written from the protocol's byte layout (docs/protocol.md, "Monitoring tool
protocol"), not from cluster.codec: header ``<BHBB`` (code 109, length, R^K, checksum^R^K), the
payload XOR-ed with R^K, K = 30 ^ 91. It logs in, reads the once-a-second DATA_UPDATE packets of
a live cluster, and plays every hostile tool: wrong key, junk before login, a second login, bad
framing, no login, an eleventh tool, a tool that never reads.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import socket
import struct
import time
import urllib.request
from typing import Any

from cluster import monitor_tool, runtime
from cluster.codec import Codec
from cluster.messages import GameLoginStatus
from cluster.monitor import Monitor
from cluster.testkit import async_wait_until, config_from, free_ports, wait_until
from dummy.client import GameClient
from tests.harness import ClusterUnderTest, RoleProcess, run

CODE = 109
KEY = 30 ^ 91
HEADER = struct.Struct("<BHBB")
REQ_LOGIN, RES_LOGIN, DATA_UPDATE = 25001, 25002, 25003
UPDATE = struct.Struct("<HBBii")
TOOL_KEY = "0123456789abcdefTOOLKEY-32-chars"
assert len(TOOL_KEY) == 32

HARDWARE = {1, 2, 3, 4, 5}
#: What each ServerNo carries while its server is on (numbering of dfMONITOR_DATA_TYPE).
EXPECTED = {
    1: HARDWARE | set(range(6, 13)),  # LOGIN: the MATCH block
    2: HARDWARE | set(range(24, 33)) | {34, 35},  # GAME: the BATTLE block (33 was deleted)
    3: HARDWARE | set(range(36, 44)),  # CHAT
    4: HARDWARE | {13},  # AGENT: the monitor itself (MASTER_SERVER_ON)
}
SERVER_ON = {1: 6, 2: 24, 3: 36, 4: 13}


def packet(payload: bytes, rand: int = 0x5A, code: int = CODE, length: int | None = None,
           checksum_delta: int = 0) -> bytes:  # fmt: skip
    """One packet as the original tool frames it (optionally broken: code, length, checksum)."""
    mask = rand ^ KEY
    checksum = (sum(payload) + checksum_delta) % 256
    size = len(payload) if length is None else length
    return HEADER.pack(code, size, mask, checksum ^ mask) + bytes(b ^ mask for b in payload)


def login_packet(key: bytes = TOOL_KEY.encode()) -> bytes:
    return packet(struct.pack("<H", REQ_LOGIN) + key)


class Tool:
    """A MonitoringClient tool connection, decoding what the monitor sends by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.raw = b""  # every byte received

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> Tool:
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    @classmethod
    async def logged_in(cls, port: int) -> Tool:
        tool = await cls.connect(port)
        tool.send(login_packet())
        assert await tool.message() == (RES_LOGIN, b"\x01")
        return tool

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def packet(self, timeout: float = 10.0) -> bytes:
        """The next whole packet, as received."""
        async with asyncio.timeout(timeout):
            header = await self.reader.readexactly(HEADER.size)
            body = await self.reader.readexactly(HEADER.unpack(header)[1])
        self.raw += header + body
        return header + body

    async def message(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """(type, body) of the next packet, after checking its code and checksum."""
        raw = await self.packet(timeout)
        code, length, mask, checksum = HEADER.unpack_from(raw)
        plain = bytes(b ^ mask for b in raw[HEADER.size :])
        assert code == CODE and length == len(plain)
        assert sum(plain) % 256 == checksum ^ mask, "bad checksum from the monitor"
        return struct.unpack_from("<H", plain)[0], plain[2:]

    async def update(self, timeout: float = 10.0) -> tuple[int, int, int, int]:
        """The next DATA_UPDATE: (ServerNo, DataType, Value, TimeStamp)."""
        mtype, body = await self.message(timeout)
        assert mtype == DATA_UPDATE and len(body) == 10, (mtype, body)
        return UPDATE.unpack(struct.pack("<H", mtype) + body)[1:]

    async def closed(self, timeout: float = 15.0) -> bool:
        """True once the monitor has closed the connection (what it sent first is kept)."""
        try:
            async with asyncio.timeout(timeout):
                while data := await self.reader.read(65536):
                    self.raw += data
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def tool_cluster(make_cluster: Any, **sections: Any) -> tuple[ClusterUnderTest, int]:
    port = free_ports(1)[0]
    monitor = {"tool_port": port, "tool_key": TOOL_KEY, **sections.pop("monitor", {})}
    return make_cluster(monitor=monitor, **sections), port


def start_everything(cluster: ClusterUnderTest) -> RoleProcess:
    """Broker, monitor, game, chat and auth workers, gateway; returns the monitor."""
    cluster.start("broker")
    monitor = cluster.start("monitor")
    for role in ("game", "chat", "auth", "gateway"):
        cluster.start(role)
    return monitor


async def latest_until(tool: Tool, done: Any, timeout: float = 30.0) -> dict[tuple[int, int], Any]:
    """Read updates into {(ServerNo, DataType): (Value, TimeStamp)} until ``done(table)``."""
    table: dict[tuple[int, int], tuple[int, int]] = {}
    async with asyncio.timeout(timeout):
        while not done(table):
            server, dtype, value, stamp = await tool.update()
            table[server, dtype] = (value, stamp)
    return table


def closes(monitor: RoleProcess, reason: str) -> int:
    return len(re.findall(rf"monitor tool 127\.0\.0\.1:\d+ closed: {reason} ", monitor.log()))


# -- a live cluster ----------------------------------------------------------------------------


def test_the_tool_logs_in_and_sees_every_server_of_a_live_cluster(make_cluster):
    cluster, port = tool_cluster(make_cluster, chat={"enabled": True})
    monitor = start_everything(cluster)

    async def scenario() -> None:
        tool = await Tool.connect(port)
        tool.send(login_packet())
        reply = await tool.packet()
        # RES_LOGIN: code 109, 3 payload bytes, masked with the header's R^K, checksum of the plain
        mask = reply[3]
        assert reply[:3] == bytes([109, 3, 0]) and len(reply) == 8
        plain = bytes(b ^ mask for b in reply[5:])
        assert plain == bytes([0xAA, 0x61, 1])  # type 25002 LE, Status 1
        assert reply[4] ^ mask == sum(plain) % 256

        def every_server_on(table: dict) -> bool:
            keys = {(s, d) for s, wanted in EXPECTED.items() for d in wanted}
            return keys <= table.keys() and all(
                table[s, d][0] == 1 for s, d in SERVER_ON.items()
            )  # fmt: skip

        table = await latest_until(tool, every_server_on)
        table.update(await latest_until(tool, lambda t: len(t) >= sum(map(len, EXPECTED.values()))))
        assert {s for s, _ in table} == {1, 2, 3, 4}
        for server, wanted in EXPECTED.items():
            assert {d for s, d in table if s == server} == wanted, server
        now = time.time()
        assert all(abs(stamp - now) < 30 for _, stamp in table.values()), table
        assert table[2, 26][0] > 1 and table[3, 38][0] > 1  # commit memory of the workers, MB
        assert table[4, 2][0] > 0  # the monitor host's available memory, MB
        assert table[2, 30][0] == 0

        # A real game client logged in shows in SESSION_ALL and SESSION_GAME, then leaves.
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await client.login(7)).status == GameLoginStatus.OK
        login_time = time.time()

        def counted(n: int) -> Any:
            return lambda t: (
                t.get((2, 30), (None, 0))[0] == n and t[2, 30][1] >= int(login_time)
                and t.get((2, 32), (None,))[0] == n
            )  # fmt: skip

        await latest_until(tool, counted(1))
        await client.close()
        await latest_until(tool, counted(0))
        await tool.close()

    run(scenario())
    assert "monitor tool 127.0.0.1" in monitor.log() and "logged in" in monitor.log()


def test_an_eleventh_tool_is_refused_and_a_tool_that_never_reads_is_dropped(make_cluster):
    cluster, port = tool_cluster(make_cluster, chat={"enabled": True})
    monitor = start_everything(cluster)

    async def scenario() -> None:
        tools = [await Tool.logged_in(port) for _ in range(monitor_tool.MAX_TOOLS)]
        extra = await Tool.connect(port)
        extra.send(login_packet())
        assert await extra.closed(), "the eleventh tool is still connected"
        assert extra.raw == b"", "the eleventh tool got an answer"
        refused = int(time.time())

        async def fresh(tool: Tool) -> None:
            while (await tool.update())[3] <= refused:
                pass

        await asyncio.gather(*(fresh(t) for t in tools))  # all ten keep receiving
        watcher, others = tools[0], tools[1:]
        for tool in others:
            await tool.close()
        await asyncio.to_thread(wait_until, lambda: closes(monitor, "gone") >= len(others),
                                "the monitor saw the nine tools leave")  # fmt: skip

        stamps: list[int] = []

        async def watch() -> None:
            while True:
                stamps.append((await watcher.update())[3])

        watching = asyncio.create_task(watch())
        # A tool that logs in and never reads: a bare socket (an asyncio stream would read into
        # its own buffer), its receive window as small as the kernel allows, so the monitor's
        # side fills in seconds rather than minutes.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        slow.connect(("127.0.0.1", port))
        slow.sendall(login_packet())
        await asyncio.to_thread(monitor.wait_log, r"closed: slow \(over \d+ bytes unsent", 120)
        dropped = int(time.time())
        await async_wait_until(lambda: asyncio.sleep(0.1, result=stamps and stamps[-1] > dropped),
                               "the watcher still receives after the drop", timeout=15)  # fmt: skip
        assert not watching.done()
        watching.cancel()
        # The watcher saw no gap while the slow tool was stuck: an update every few seconds.
        distinct = sorted(set(stamps))
        assert max(b - a for a, b in itertools.pairwise(distinct)) <= 5, distinct
        await watcher.close()
        slow.close()

    run(scenario())
    assert closes(monitor, "full") == 1 and closes(monitor, "slow") == 1
    assert monitor.proc.poll() is None


# -- hostile tools -----------------------------------------------------------------------------


def test_hostile_tools_are_closed_and_counted_by_reason(make_cluster):
    cluster, port = tool_cluster(make_cluster)
    cluster.start("broker")
    monitor = cluster.start("monitor")
    login_body = struct.pack("<H", REQ_LOGIN) + TOOL_KEY.encode()

    async def refused(data: bytes, log_in_first: bool = False) -> Tool:
        tool = await (Tool.logged_in(port) if log_in_first else Tool.connect(port))
        tool.send(data)
        assert await tool.closed(), f"still open after {data[:16]!r}"
        return tool

    async def silent() -> float:
        tool = await Tool.connect(port)
        started = time.monotonic()
        assert await tool.closed(30), "a tool that never logs in stays connected"
        assert tool.raw == b""
        return time.monotonic() - started

    async def scenario() -> None:
        results = await asyncio.gather(
            refused(login_packet(b"x" * 32)),  # wrong key
            refused(packet(struct.pack("<HBBii", DATA_UPDATE, 1, 6, 1, 0))),  # not a login
            refused(login_packet(), log_in_first=True),  # a second login
            refused(packet(struct.pack("<HBBii", DATA_UPDATE, 1, 6, 1, 0)), log_in_first=True),
            refused(packet(login_body, code=119)),  # the client ports' code
            refused(packet(login_body, checksum_delta=1)),
            refused(HEADER.pack(CODE, 5001, 0, 0)),  # over the 5000-byte payload limit
            refused(login_packet(b"k" * 31)),  # a short key: 33-byte payload
            silent(),
        )  # fmt: skip
        wrong_key = results[0]
        # The wrong key is answered RES_LOGIN Status 0, then the connection is closed.
        mask = wrong_key.raw[3]
        assert len(wrong_key.raw) == 8 and wrong_key.raw[:3] == bytes([109, 3, 0])
        assert bytes(b ^ mask for b in wrong_key.raw[5:]) == bytes([0xAA, 0x61, 0])
        for tool in results[1:-1]:
            assert len(tool.raw) in (0, 8)  # nothing, or the first login's Status 1 only
        assert results[-1] >= monitor_tool.LOGIN_TIMEOUT - 1
        # The monitor still serves a well-behaved tool.
        tool = await Tool.logged_in(port)
        assert (await tool.update())[0] in EXPECTED
        await tool.close()

    run(scenario())
    expected = {"wrong_key": 1, "unknown_type": 2, "second_login": 1, "bad_code": 1,
                "bad_checksum": 1, "too_long": 1, "wrong_size": 1, "login_timeout": 1}  # fmt: skip
    assert {reason: closes(monitor, reason) for reason in expected} == expected, monitor.log()
    assert re.search(r"WARNING.*monitor tool .* closed: wrong_key", monitor.log())

    def monitor_sample() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/status.json") as r:
            snapshot = json.load(r)
        return next(p for p in snapshot["processes"] if p["role"] == "monitor")

    # ... and the monitor's own sample carries them (so /metrics and the screens do too)
    # (a sample a second: wait for one taken after the last login, which came after the closes)
    sample = wait_until(
        lambda: (s := monitor_sample())["drops"].get("tool_wrong_key") == 1
        and s["tool_logins"] >= 3 and s,
        "a monitor sample with the closes and the 3 logins", timeout=15,
        detail=lambda: str(monitor_sample()),
    )  # fmt: skip
    assert sample["drops"]["tool_login_timeout"] == 1
    assert closes(monitor, "gone") >= 1 and "tool_gone" not in sample["drops"]  # it left itself


def test_the_tool_port_is_closed_without_a_key_and_a_taken_port_is_one_line(make_cluster):
    cluster, port = tool_cluster(make_cluster, monitor={"tool_key": ""})
    cluster.start("broker")
    monitor = cluster.start("monitor")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the tool port listens without a key"
    assert monitor.stop() == 0

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        cluster.reconfigure(monitor={"tool_key": TOOL_KEY})
        again = cluster.start("monitor", wait_ready=False)
        assert again.proc.wait(30) == 1
    log = again.log()
    lines = [line for line in log.splitlines() if "cannot listen" in line]
    assert len(lines) == 1 and f"cannot listen on monitor.tool_port 127.0.0.1:{port}: " in lines[0]
    assert "Traceback" not in log


# -- the figures and the counters, in process ----------------------------------------------------


def sample(role: str, ident: str, host: str = "h1", **fields: Any) -> dict[str, Any]:
    hw = {"cpu_total": 10.0, "available_mb": 4000.0, "nonpaged_mb": 100.0,
          "net_recv_kbps": 1.5, "net_send_kbps": 2.5}  # fmt: skip
    return {"id": ident, "role": role, "host": host, "time": time.time(), "cpu_percent": 10.4,
            "memory_mb": 50.6, "packet_pool": 2, "sessions": 0, "hw": hw, **fields}  # fmt: skip


def test_the_figures_aggregate_the_workers_of_each_server():
    busy_hw = {"cpu_total": 90.0, "available_mb": 500.0, "nonpaged_mb": 300.0,
               "net_recv_kbps": 10.0, "net_send_kbps": 20.0}  # fmt: skip
    live = [
        sample("game", "g1", sessions=3, session_auth=1, session_game=2, auth_fps=50, game_fps=60),
        sample("game", "g2", host="h2", sessions=4, session_auth=0, session_game=4, auth_fps=30.6,
               game_fps=float("nan"), memory_mb=1e12, hw=busy_hw),
        sample("auth", "a1", sessions=2, login_success_tps=12.5),
        sample("gateway", "gw", sessions_login=5, sessions_game=7, cpu_percent=-3e10),
        sample("monitor", "m"),
    ]  # fmt: skip
    items = {(s, d): v for s, d, v in monitor_tool.tool_items(live)}
    assert items[2, 24] == 1 and items[2, 30] == 7 and items[2, 31] == 1 and items[2, 32] == 6
    assert items[2, 28] == 31  # the slowest worker's Auth FPS, rounded
    assert items[2, 29] == 60  # a NaN is no figure: the slowest of the others
    assert items[2, 26] == 2**31 - 1  # clamped to int32
    assert items[2, 25] == 21 and items[2, 27] == 4  # summed
    # Hardware of a server on two hosts: the busiest CPU, the least memory, network summed.
    assert (items[2, 1], items[2, 2], items[2, 5]) == (90, 500, 300)
    assert (items[2, 3], items[2, 4]) == (12, 22)  # 1.5 + 10 and 2.5 + 20, rounded
    assert items[1, 6] == 1 and items[1, 10] == 5 and items[1, 11] == 2 and items[1, 12] == 12
    assert items[1, 7] == -(2**31)  # clamped
    assert items[4, 13] == 1 and items[4, 1] == 10
    assert items[3, 36] == 0 and not [k for k in items if k[0] == 3 and k[1] != 36]
    assert all(isinstance(v, int) and -(2**31) <= v < 2**31 for v in items.values())
    assert monitor_tool.int32(math.inf) == 2**31 - 1 and monitor_tool.int32("7") == 0


def test_every_close_is_counted_by_reason_in_the_monitors_counters():
    async def scenario() -> Monitor:
        port = free_ports(1)[0]
        monitor = Monitor()
        config = config_from({"monitor": {"tool_port": port, "tool_key": TOOL_KEY}})
        server = await monitor_tool.open_tool_port(config, monitor)
        assert server is not None
        tools = [await Tool.logged_in(port) for _ in range(monitor_tool.MAX_TOOLS)]
        extra = await Tool.connect(port)
        assert await extra.closed()
        await tools[0].close()
        await async_wait_until(
            lambda: asyncio.sleep(0.05, result=monitor.counters["tool_gone"] == 1), "gone"
        )
        wrong = await Tool.connect(port)
        wrong.send(login_packet(b"\0" * 32))
        assert await wrong.closed()
        tools[1].send(login_packet())
        assert await tools[1].closed()
        for tool in tools[2:-1]:
            await tool.close()
        await async_wait_until(
            lambda: asyncio.sleep(0.05, result=monitor.counters["tool_gone"] == 8), "8 gone"
        )
        server.close()  # the last tool is closed with the port
        assert await tools[-1].closed()
        return monitor

    counters = runtime.run(scenario()).counters  # the loop the monitor runs on (uvloop)
    assert counters == {
        "tool_login": monitor_tool.MAX_TOOLS, "tool_full": 1, "tool_wrong_key": 1,
        "tool_second_login": 1, "tool_gone": 8, "tool_shutdown": 1,
    }  # fmt: skip
    assert {f"tool_{reason}" for reason in monitor_tool.REASONS} >= counters.keys() - {"tool_login"}


def test_the_documented_test_vectors():
    res_login = bytes.fromhex("6d 03 00 45 49 ef 24 44")
    update = bytes.fromhex("6d 0c 00 45 99 ee 24 47 5b 42 45 45 45 45 b4 16 20")
    assert packet(struct.pack("<HB", RES_LOGIN, 1), rand=0) == res_login
    assert packet(UPDATE.pack(DATA_UPDATE, 2, 30, 7, 1700000000), rand=0) == update
    codec = Codec(monitor_tool.TOOL_CODE, monitor_tool.TOOL_KEY1, monitor_tool.TOOL_KEY2)
    assert codec.encode(monitor_tool.ToolResLogin(1), rand=0) == res_login
    sent = monitor_tool.encode_update(codec, [(2, 30, 7)], 1700000000)  # a random R
    assert sent[:3] == update[:3] and sent[4] ^ sent[3] == update[4] ^ 0x45
    assert bytes(b ^ sent[3] for b in sent[5:]) == bytes(b ^ 0x45 for b in update[5:])
