#!/usr/bin/env python3
"""Honest echo latency with and without flooding clients, as a ratio, in one run.

    python bench/abuse.py [--quick] [--json] [--seconds S] [--honest N]

The cluster is the one ``bench/echo.py`` measures: broker + 1 game worker (``verify_key =
false``, so any account logs in) + 1 gateway, started with ``cluster up --only
broker,game,gateway``, all on loopback.

- **honest clients** (``--honest``, 50 sessions, one process): each keeps one echo in flight
  (send, wait for the reply, check every field, send the next) and times every round trip. They
  echo from login to the end; the bench measures two windows of ``--seconds`` (10 s, 3 s with
  ``--quick``) of the same sessions.
- **quiet** window: nobody else talks to the gateway.
- **flooded** window: 10 more sessions (another process) flood the same gateway: 5 *readers*
  pipeline echoes as fast as TCP takes them (a 23.5 KB batch per loop turn while the transport
  is not paused) and read every reply; 5 *non-readers* are raw sockets with a small
  ``SO_RCVBUF`` (and ``SO_SNDBUF``) that write echoes whenever the socket is writable and never
  read after their login reply. Nothing piles up in the bench: a flooder whose socket would
  block waits for it to be writable again.

Reported per window: honest p50/p99/max round trip (echoes still unanswered at the end of the
window count with their age so far, so a stall cannot hide), honest echoes/s, errors the honest
clients saw (connection closed by the server, a wrong or undecodable reply, a failed login, no
reply within 5 s; counted from the end of the previous window, so the flooded window includes the
flooders' start), the peak RSS of the gateway, game worker and broker (sampled every 50 ms) and
the CPU of every process. For every flooder: ``dropped`` (the server closed its connection; when,
from its first flood write), ``paused`` (its writes were blocked for at least 1 s at a stretch:
the server did not take its data -- seen from the client, so for a reader it does not tell a
server that stopped reading it from one working through megabytes queued in kernel buffers;
``replies_read`` does) and what it sent and read. Then ``p99_ratio`` = p99(flooded)
/ p99(quiet). Every wait has a timeout, the children exit on their own after a bound, and every
process is stopped at the end, on error too. Nothing here is a test; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench import common  # noqa: E402
from cluster import testkit  # noqa: E402
from cluster.codec import Codec, RemoteProtocolError  # noqa: E402
from cluster.messages import (  # noqa: E402
    GAME_VERSION,
    SERVER_MESSAGES,
    SESSION_KEY_SIZE,
    GameLoginStatus,
    GameReqEcho,
    GameReqLogin,
    GameResEcho,
    GameResLogin,
)

HONEST_FIRST_ACCOUNT = 1
FLOODER_FIRST_ACCOUNT = 100_001
ECHO_SIZE = 5 + 18  # CS_GAME_REQ_ECHO and CS_GAME_RES_ECHO packets
LOGIN_REPLY_SIZE = 5 + 11
KEY = b"\0" * SESSION_KEY_SIZE
NO_REPLY_S = 5.0  # an honest echo unanswered this long is an error ("no_reply")
LOGIN_TIMEOUT = 10.0
PAUSED_AFTER_S = 1.0  # a flooder whose writes were blocked this long at once counts as paused
READER_BATCH = 1024  # echoes per write of a reading flooder (23.5 KB)
NONREADER_RCVBUF = 4096  # SO_RCVBUF of a non-reading flooder (the kernel doubles it)
NONREADER_SNDBUF = 65536  # and its SO_SNDBUF
NONREADER_CHUNK = 1024  # echoes in the chunk a non-reader cycles through
WRITE_BUDGET = 65536  # bytes a non-reader writes per writable event before yielding
RSS_INTERVAL = 0.05
WAIT_MARGIN = 30.0  # added to every window's wait for its result


def quantile_us(values_ns: list[int], q: float) -> float | None:
    """Nearest-rank `q`-th percentile in microseconds; None when empty."""
    if not values_ns:
        return None
    return round(common.percentile(values_ns, q) / 1000, 1)


async def read_commands(handler: Any, limit: float) -> None:
    """Feed every stdin line to `handler` (a coroutine function) until ``quit``, EOF or `limit`
    seconds: a child of this bench never outlives its orchestrator for long. stdin is read on a
    daemon thread, which cannot hold up the exit."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, "")  # EOF

    threading.Thread(target=reader, daemon=True).start()
    deadline = loop.time() + limit
    while True:
        try:
            line = await asyncio.wait_for(lines.get(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return
        command = line.strip()
        if not line or command == "quit":
            return
        if command:
            await handler(command)


def emit(tag: str, payload: dict[str, Any]) -> None:
    print(f"{tag} {json.dumps(payload)}", flush=True)


# -- honest clients (their own process) -----------------------------------------------------------


class HonestStats:
    def __init__(self) -> None:
        self.errors: Counter[str] = Counter()
        self.latencies: list[int] = []  # ns, replies received since the window began
        self.echoes = 0  # replies received, ever


class HonestSession(asyncio.Protocol):
    """One echo in flight: send, wait for the reply (checked field by field), send the next."""

    def __init__(self, account: int, codec: Codec, stats: HonestStats) -> None:
        self.account = account
        self.codec = codec
        self.decoder = codec.decoder(SERVER_MESSAGES)
        self.stats = stats
        self.logged_in: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.tick = 0
        self.sent_at = 0  # perf_counter_ns of the echo in flight; 0 when none
        self.flagged = False  # the echo in flight was already counted as no_reply
        self.open = False
        self.leaving = False  # we close it ourselves

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True
        self.transport.write(self.codec.encode(GameReqLogin(self.account, KEY, GAME_VERSION)))

    def fail(self, kind: str) -> None:
        self.stats.errors[kind] += 1
        if not self.logged_in.done():
            self.logged_in.set_result(False)
        self.leave()

    def leave(self) -> None:
        self.leaving = True
        self.sent_at = 0
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        try:
            messages = self.decoder.feed(data)
        except RemoteProtocolError:
            self.fail("wrong_reply")
            return
        for message in messages:
            if not self.logged_in.done():
                ok = (type(message) is GameResLogin and message.status == GameLoginStatus.OK
                      and message.account_no == self.account)  # fmt: skip
                if not ok:
                    self.fail("login_failed")
                    return
                self.logged_in.set_result(True)
                continue
            expected = (
                type(message) is GameResEcho
                and self.sent_at
                and message.account_no == self.account
                and message.send_tick == self.tick
            )
            if not expected:
                self.fail("wrong_reply")
                return
            self.stats.latencies.append(now - self.sent_at)
            self.stats.echoes += 1
            self.send_next()

    def send_next(self) -> None:
        if self.leaving or self.transport is None:
            return
        self.tick += 1
        self.flagged = False
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.codec.encode(GameReqEcho(self.account, self.tick)))

    def eof_received(self) -> bool:
        return False  # the server closed: connection_lost counts it

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.leaving:
            self.leaving = True
            self.stats.errors["closed"] += 1
            if not self.logged_in.done():
                self.logged_in.set_result(False)
        self.sent_at = 0


async def honest_main(port: int, count: int, first_account: int, limit: float) -> None:
    loop = asyncio.get_running_loop()
    codec = Codec()
    stats = HonestStats()

    async def connect(account: int) -> HonestSession | None:
        try:
            _, session = await asyncio.wait_for(
                loop.create_connection(
                    lambda: HonestSession(account, codec, stats), "127.0.0.1", port
                ),
                LOGIN_TIMEOUT,
            )
        except (OSError, TimeoutError):
            stats.errors["connect_failed"] += 1
            return None
        return session

    connected = await asyncio.gather(
        *(connect(a) for a in range(first_account, first_account + count))
    )
    sessions = [session for session in connected if session is not None]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.logged_in for s in sessions)), LOGIN_TIMEOUT)
    for session in sessions:
        if not session.logged_in.done():
            session.fail("login_failed")
        elif session.logged_in.result():
            session.send_next()

    async def watchdog() -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.perf_counter_ns()
            for session in sessions:
                if session.sent_at and not session.flagged and \
                        now - session.sent_at > NO_REPLY_S * 1e9:  # fmt: skip
                    session.flagged = True
                    stats.errors["no_reply"] += 1

    watcher = asyncio.create_task(watchdog())
    reported: Counter[str] = Counter()
    emit("ready", {"sessions": count, "logged_in": sum(s.open for s in sessions),
                   "errors": dict(stats.errors)})  # fmt: skip

    async def handle(command: str) -> None:
        nonlocal reported
        name, _, arg = command.partition(" ")
        if name != "measure":
            return
        seconds = float(arg)
        stats.latencies = []
        echoes0, t0 = stats.echoes, time.perf_counter()
        await asyncio.sleep(seconds)
        t1, now = time.perf_counter(), time.perf_counter_ns()
        echoes = stats.echoes - echoes0
        outstanding = [now - s.sent_at for s in sessions if s.sent_at]
        samples = stats.latencies + outstanding
        errors = stats.errors - reported
        reported = Counter(stats.errors)
        emit("result", {
            "p50_us": quantile_us(samples, 50), "p99_us": quantile_us(samples, 99),
            "max_us": round(max(samples) / 1000, 1) if samples else None,
            "echoes": echoes, "echoes_per_s": round(echoes / (t1 - t0), 1),
            "outstanding_at_end": len(outstanding),
            "oldest_outstanding_us": round(max(outstanding) / 1000, 1) if outstanding else 0,
            "sessions_open": sum(s.open and not s.leaving for s in sessions),
            "errors": sum(errors.values()), "error_kinds": dict(errors),
        })  # fmt: skip

    try:
        await read_commands(handle, limit)
    finally:
        watcher.cancel()
        for session in sessions:
            session.leave()
        await asyncio.sleep(0.1)


# -- flooders (their own process) -----------------------------------------------------------------


class Flooder:
    """What every flooder reports: sent, received, blocked time, closed by the server."""

    kind = ""

    def __init__(self, account: int) -> None:
        self.account = account
        self.codec = Codec()
        self.started = 0.0  # monotonic, when it began to flood
        self.sent_bytes = 0
        self.received_bytes = 0
        self.blocked_since: float | None = None
        self.blocked_total = 0.0
        self.longest_block = 0.0
        self.dropped_at: float | None = None
        self.drop_error = ""
        self.login_error = ""
        self.stopping = False

    def block(self) -> None:
        if self.blocked_since is None:
            self.blocked_since = time.monotonic()

    def unblock(self) -> None:
        if self.blocked_since is not None:
            spent = time.monotonic() - self.blocked_since
            self.blocked_total += spent
            self.longest_block = max(self.longest_block, spent)
            self.blocked_since = None

    def dropped(self, error: str) -> None:
        if self.dropped_at is None and not self.stopping:
            self.dropped_at = time.monotonic()
            self.drop_error = error
            self.unblock()

    def report(self) -> dict[str, Any]:
        now = time.monotonic()
        blocked_now = 0.0 if self.blocked_since is None else now - self.blocked_since
        elapsed = max(1e-9, (self.dropped_at or now) - self.started) if self.started else 0.0
        longest = max(self.longest_block, blocked_now)
        paused = longest >= PAUSED_AFTER_S
        state = ("login_failed" if self.login_error else "dropped" if self.dropped_at is not None
                 else "paused" if paused else "flowing")  # fmt: skip
        return {
            "kind": self.kind, "account": self.account, "state": state,
            "dropped": self.dropped_at is not None, "paused": paused,
            "dropped_after_s": (round(self.dropped_at - self.started, 3)
                                if self.dropped_at is not None and self.started else None),
            "drop_error": self.drop_error or None, "login_error": self.login_error or None,
            "echoes_sent": self.sent_bytes // ECHO_SIZE,
            "replies_read": self.received_bytes // ECHO_SIZE,
            "seconds_flooding": round(elapsed, 3),
            "blocked_s": round(self.blocked_total + blocked_now, 3),
            "longest_block_s": round(longest, 3),
        }  # fmt: skip


class ReaderFlooder(Flooder, asyncio.Protocol):
    """Pipelines batches of echoes whenever the transport takes them (one batch per loop turn, so
    replies are read in between) and reads every reply."""

    kind = "reader"

    def __init__(self, account: int) -> None:
        Flooder.__init__(self, account)
        self.batch = self.codec.encode(GameReqEcho(account, 7)) * READER_BATCH
        self.logged_in: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.codec.encode(GameReqLogin(self.account, KEY, GAME_VERSION)))

    def data_received(self, data: bytes) -> None:
        if self.logged_in.done():
            self.received_bytes += len(data)
            return
        self.head += data
        if len(self.head) < LOGIN_REPLY_SIZE:
            return
        try:
            reply = self.codec.decoder(SERVER_MESSAGES).feed(self.head[:LOGIN_REPLY_SIZE])
        except RemoteProtocolError as exc:
            reply = [exc]
        ok = len(reply) == 1 and type(reply[0]) is GameResLogin and reply[0].status == 1
        self.received_bytes += len(self.head) - LOGIN_REPLY_SIZE
        self.logged_in.set_result(ok)
        if not ok:
            self.login_error = f"login reply {reply!r}"

    def start(self) -> None:
        self.started = time.monotonic()
        self.pump()

    def pump(self) -> None:
        if self.stopping or self.paused or self.dropped_at is not None or self.transport is None:
            return
        self.transport.write(self.batch)
        self.sent_bytes += len(self.batch)
        if not self.paused:
            asyncio.get_running_loop().call_soon(self.pump)

    def pause_writing(self) -> None:
        self.paused = True
        self.block()

    def resume_writing(self) -> None:
        self.paused = False
        self.unblock()
        asyncio.get_running_loop().call_soon(self.pump)

    def eof_received(self) -> bool:
        self.dropped("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.dropped(type(exc).__name__ if exc else "closed")
        if not self.logged_in.done():
            self.logged_in.set_result(False)
            self.login_error = "closed before the login reply"

    def stop(self) -> None:
        self.stopping = True
        if self.transport is not None:
            self.transport.abort()


class NonReaderFlooder(Flooder):
    """A raw socket with a small receive buffer that writes echoes whenever the socket takes them
    and never reads after its login reply. One fixed chunk is cycled through: when a write would
    block, it waits for the socket to be writable again (nothing is queued in this process)."""

    kind = "non_reader"

    def __init__(self, account: int) -> None:
        super().__init__(account)
        self.chunk = memoryview(self.codec.encode(GameReqEcho(account, 7)) * NONREADER_CHUNK)
        self.offset = 0
        self.sock: socket.socket | None = None

    async def connect(self, port: int) -> bool:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, NONREADER_RCVBUF)  # before connect
        # A small send buffer too, so that a server that stops reading blocks our writes soon
        # rather than after megabytes (the kernel grows a loopback buffer up to tcp_wmem max).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, NONREADER_SNDBUF)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT):
                await loop.sock_connect(sock, ("127.0.0.1", port))
                await loop.sock_sendall(
                    sock, self.codec.encode(GameReqLogin(self.account, KEY, GAME_VERSION))
                )
                head = b""
                while len(head) < LOGIN_REPLY_SIZE:
                    data = await loop.sock_recv(sock, LOGIN_REPLY_SIZE - len(head))
                    if not data:
                        raise ConnectionError("closed before the login reply")
                    head += data
            reply = self.codec.decoder(SERVER_MESSAGES).feed(head)
            if len(reply) != 1 or type(reply[0]) is not GameResLogin or reply[0].status != 1:
                raise ConnectionError(f"login reply {reply!r}")
        except (OSError, TimeoutError, RemoteProtocolError) as exc:
            self.login_error = f"{type(exc).__name__}: {exc}"
            sock.close()
            return False
        return True

    def start(self) -> None:
        assert self.sock is not None
        self.started = time.monotonic()
        asyncio.get_running_loop().add_writer(self.sock.fileno(), self.on_writable)

    def on_writable(self) -> None:
        assert self.sock is not None
        self.unblock()  # called because the socket takes data again
        budget = WRITE_BUDGET
        while budget > 0 and not self.stopping:
            want = self.chunk[self.offset :]
            try:
                sent = self.sock.send(want)
            except BlockingIOError:
                break
            except OSError as exc:  # ECONNRESET / EPIPE: the server closed it
                self.dropped(type(exc).__name__)
                self.close()
                return
            self.sent_bytes += sent
            budget -= sent
            self.offset = (self.offset + sent) % len(self.chunk)
            if sent < len(want):  # the send buffer is full: wait until it is writable again
                break
        # Until the next call it counts as blocked: after a full send epoll may well not report
        # the socket writable again (too little room left), so only the next call tells.
        self.block()

    def close(self) -> None:
        if self.sock is not None and self.sock.fileno() >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_writer(self.sock.fileno())
            self.sock.close()

    def stop(self) -> None:
        self.stopping = True
        if self.sock is not None and self.sock.fileno() >= 0:
            # RST rather than a FIN behind megabytes the server will never get to read
            with contextlib.suppress(OSError):
                linger = struct.pack("ii", 1, 0)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        self.close()


async def flood_main(port: int, readers: int, nonreaders: int, first_account: int,
                     limit: float) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    flooders: list[Any] = []
    accounts = iter(range(first_account, first_account + readers + nonreaders))

    async def start_reader(account: int) -> ReaderFlooder:
        try:
            _, flooder = await asyncio.wait_for(
                loop.create_connection(lambda: ReaderFlooder(account), "127.0.0.1", port),
                LOGIN_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            flooder = ReaderFlooder(account)
            flooder.login_error = f"{type(exc).__name__}: {exc}"
            return flooder
        try:
            ok = await asyncio.wait_for(asyncio.shield(flooder.logged_in), LOGIN_TIMEOUT)
        except TimeoutError:
            ok, flooder.login_error = False, "no login reply"
        if ok:
            flooder.start()
        return flooder

    async def start_nonreader(account: int) -> NonReaderFlooder:
        flooder = NonReaderFlooder(account)
        if await flooder.connect(port):
            flooder.start()
        return flooder

    starts = [start_reader(next(accounts)) for _ in range(readers)]
    starts += [start_nonreader(next(accounts)) for _ in range(nonreaders)]
    flooders = list(await asyncio.gather(*starts))
    emit("ready", {"flooders": len(flooders),
                   "login_failed": sum(bool(f.login_error) for f in flooders)})  # fmt: skip

    async def handle(command: str) -> None:
        if command == "report":
            emit("report", {"flooders": [f.report() for f in flooders]})

    try:
        await read_commands(handle, limit)
    finally:
        for flooder in flooders:
            flooder.stop()
        await asyncio.sleep(0.1)


# -- the orchestrator -----------------------------------------------------------------------------


def start_cluster(workdir: Path) -> tuple[common.Proc, int]:
    """broker + 1 game worker (verify_key = false) + 1 gateway, as bench/echo.py starts them."""
    broker, game, login, metrics = testkit.free_ports(4)
    config = testkit.write_config(workdir / "cluster.toml", {
        "cluster": {"data_dir": str(workdir), "log_level": "warning"},
        "broker": {"bind": f"tcp://127.0.0.1:{broker}"},
        "gateway": {"game_port": game, "login_port": login},
        "workers": {"game": 1, "auth": 0},
        "game": {"verify_key": False},
        "chat": {"enabled": False},
        "monitor": {"metrics_port": metrics},
    })  # fmt: skip
    proc = common.start_cluster(
        config, workdir / "cluster.log", ["broker", "game", "gateway"], "--skip-db-init"
    )
    return proc, game


def child(mode: str, *args: Any, log: Path) -> common.Proc:
    return common.Proc([sys.executable, __file__, mode, *map(str, args)], log, stdin=True)


def rss(process: psutil.Process) -> int:
    try:
        return int(process.memory_info().rss)
    except psutil.Error:
        return 0


def window(
    honest: common.Proc,
    seconds: float,
    watched: dict[str, psutil.Process],
    clients: dict[str, psutil.Process],
) -> dict:
    """One measured window of the honest clients, sampling the servers' RSS meanwhile, and the CPU
    (% of one core) of the servers and of the client processes (`clients`)."""
    peak = {name: rss(process) for name, process in watched.items()}
    start = dict(peak)
    cpu = common.CpuMeter({**watched, **clients})
    cpu.start()
    honest.send_line(f"measure {seconds}")
    deadline = time.monotonic() + seconds + WAIT_MARGIN
    while True:
        for name, process in watched.items():
            peak[name] = max(peak[name], rss(process))
        try:
            line = honest.next_line(RSS_INTERVAL)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"honest clients: no result within {seconds + WAIT_MARGIN:g}s; "
                                   f"log:\n{honest.log_tail()}") from None  # fmt: skip
            continue
        if line is None:
            raise RuntimeError(f"honest clients exited; log:\n{honest.log_tail()}")
        if line.startswith("result "):
            result = json.loads(line.split(" ", 1)[1])
            result["cpu_percent"] = {name: round(v) for name, v in cpu.stop().items()}
            result["rss_start_bytes"] = start
            result["peak_rss_bytes"] = peak
            return result


def run(workdir: Path, seconds: float, honest_count: int, readers: int, nonreaders: int,
        warmup: float) -> dict[str, Any]:  # fmt: skip
    limit = 4 * seconds + 120  # how long a child may live at most
    common.progress("starting the cluster (broker, 1 gateway, 1 game worker)")
    cluster, port = start_cluster(workdir)
    roles = common.cluster_roles(cluster)
    watched = {name: roles[name][0] for name in ("gateway", "game", "broker") if roles.get(name)}
    common.progress(f"{honest_count} honest sessions logging in")
    honest = child("--honest-client", port, honest_count, HONEST_FIRST_ACCOUNT, limit,
                   log=workdir / "honest.log")  # fmt: skip
    ready = json.loads(honest.wait_for("ready", LOGIN_TIMEOUT * 3 + 30).split(" ", 1)[1])
    common.progress(f"honest clients ready: {ready}")
    time.sleep(warmup)
    common.progress(f"quiet window ({seconds:g} s)")
    clients = {"honest_clients": psutil.Process(honest.pid)}
    quiet = window(honest, seconds, watched, clients)
    common.progress(f"quiet: p50 {quiet['p50_us']} us, p99 {quiet['p99_us']} us, "
                    f"{quiet['echoes_per_s']:,.0f} echoes/s, errors {quiet['errors']}")  # fmt: skip
    common.progress(f"starting {readers} reading and {nonreaders} non-reading flooders")
    flood = child("--flood", port, readers, nonreaders, FLOODER_FIRST_ACCOUNT, limit,
                  log=workdir / "flood.log")  # fmt: skip
    flood_ready = json.loads(flood.wait_for("ready", LOGIN_TIMEOUT * 3 + 30).split(" ", 1)[1])
    common.progress(f"flooders ready: {flood_ready}")
    time.sleep(min(warmup, 0.5))
    common.progress(f"flooded window ({seconds:g} s)")
    clients["flooders"] = psutil.Process(flood.pid)
    flooded = window(honest, seconds, watched, clients)
    flood.send_line("report")
    flooders = json.loads(flood.wait_for("report", WAIT_MARGIN).split(" ", 1)[1])["flooders"]
    common.progress(
        f"flooded: p50 {flooded['p50_us']} us, p99 {flooded['p99_us']} us, "
        f"{flooded['echoes_per_s']:,.0f} echoes/s, errors {flooded['errors']}"
    )
    for proc in (flood, honest):
        with contextlib.suppress(OSError):
            proc.send_line("quit")
    flood.stop(grace=10)
    honest.stop(grace=10)
    cluster.stop()
    quiet_p99, flooded_p99 = quiet["p99_us"], flooded["p99_us"]
    ratio = (round(flooded_p99 / quiet_p99, 2)
             if quiet_p99 and flooded_p99 is not None else None)  # fmt: skip
    seconds_flooding = [f["seconds_flooding"] for f in flooders if f["kind"] == "reader"]
    reader_replies = sum(f["replies_read"] for f in flooders if f["kind"] == "reader")
    return {
        "seconds": seconds, "honest_sessions": honest_count,
        "honest_logged_in": ready["logged_in"],
        "flooder_counts": {"reader": readers, "non_reader": nonreaders},
        "windows": {"quiet": quiet, "flooded": flooded},
        "p99_ratio": ratio,
        "errors": quiet["errors"] + flooded["errors"],
        "flooders": flooders,
        "flooders_dropped": sum(f["dropped"] for f in flooders),
        "flooders_paused": sum(f["paused"] for f in flooders),
        "reader_flooder_replies_per_s": (round(reader_replies / max(seconds_flooding), 1)
                                         if seconds_flooding and max(seconds_flooding) else None),
        "machine": common.machine(),
    }  # fmt: skip


def mb(value: int | None) -> str:
    return "-" if not value else f"{value / 1e6:.1f} MB"


def fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}{unit}"
    return f"{value:,}{unit}"


def print_table(report: dict[str, Any]) -> None:
    q, f = report["windows"]["quiet"], report["windows"]["flooded"]
    print(f"honest clients: {report['honest_sessions']} sessions, 1 echo in flight each, "
          f"{report['seconds']:g} s per window")  # fmt: skip
    print(f"{'':24} {'quiet':>14} {'flooded':>14}")
    rows = [
        ("p50", fmt(q["p50_us"], " us"), fmt(f["p50_us"], " us")),
        ("p99", fmt(q["p99_us"], " us"), fmt(f["p99_us"], " us")),
        ("max", fmt(q["max_us"], " us"), fmt(f["max_us"], " us")),
        ("echoes/s", fmt(q["echoes_per_s"]), fmt(f["echoes_per_s"])),
        ("errors", fmt(q["errors"]), fmt(f["errors"])),
        ("sessions open at end", fmt(q["sessions_open"]), fmt(f["sessions_open"])),
    ]
    for role in ("gateway", "game", "broker"):
        if role in q["peak_rss_bytes"]:
            rows.append((f"peak RSS {role}", mb(q["peak_rss_bytes"][role]),
                         mb(f["peak_rss_bytes"][role])))  # fmt: skip
    for name in f["cpu_percent"]:
        rows.append((f"CPU % {name}", fmt(q["cpu_percent"].get(name)),
                     fmt(f["cpu_percent"].get(name))))  # fmt: skip
    for label, a, b in rows:
        print(f"{label:24} {a:>14} {b:>14}")
    kinds = {**q["error_kinds"], **f["error_kinds"]}
    if kinds:
        print(f"error kinds: quiet {q['error_kinds']}, flooded {f['error_kinds']}")
    ratio = report["p99_ratio"]
    print(f"p99 ratio (flooded / quiet): {'-' if ratio is None else f'{ratio:.2f}'}")
    print()
    print(f"{'flooder':12} {'account':>8} {'state':>12} {'after':>8} {'sent':>12} "
          f"{'read':>12} {'blocked':>8}")  # fmt: skip
    for flooder in report["flooders"]:
        after = flooder["dropped_after_s"]
        print(f"{flooder['kind']:12} {flooder['account']:>8} {flooder['state']:>12} "
              f"{'-' if after is None else f'{after:.2f} s':>8} {flooder['echoes_sent']:>12,} "
              f"{flooder['replies_read']:>12,} {flooder['blocked_s']:>6.2f} s")  # fmt: skip
    print(
        f"flooders dropped: {report['flooders_dropped']}, paused: {report['flooders_paused']}; "
        f"reading flooders got {fmt(report['reader_flooder_replies_per_s'])} replies/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s windows (well under a minute)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each window")
    parser.add_argument("--honest", type=int, default=50, help="honest sessions")
    parser.add_argument("--readers", type=int, default=5, help="flooders that read")
    parser.add_argument("--non-readers", type=int, default=5, help="flooders that never read")
    parser.add_argument("--honest-client", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--flood", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.honest_client:
        port, count, first, limit = args.honest_client
        common.run_async(honest_main(int(port), int(count), int(first), float(limit)))
        return 0
    if args.flood:
        port, readers, nonreaders, first, limit = args.flood
        common.run_async(flood_main(int(port), int(readers), int(nonreaders), int(first),
                                    float(limit)))  # fmt: skip
        return 0
    if args.honest < 1 or args.readers < 0 or args.non_readers < 0 or args.seconds <= 0:
        parser.error("--honest must be >= 1, --seconds > 0, flooder counts >= 0")
    seconds, warmup = (3.0, 0.5) if args.quick else (args.seconds, 1.0)
    common.install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="bench-abuse-") as tmp:
        try:
            report = run(Path(tmp), seconds, args.honest, args.readers, args.non_readers, warmup)
        finally:
            common.stop_all()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
