#!/usr/bin/env python3
"""Chat message deliveries per second of the cluster, as a ratio to a single-process baseline.

    python bench/chat.py [--quick] [--json [FILE]] [--runs N] [--seconds S] [--warmup S]
                         [--scenario crowded|sparse] [--clients N] [--inflight K]
                         [--chat-workers W]

A *delivery* is one CS_CHAT_RES_MESSAGE written to one client: a message said in a sector reaches
every player in the 3 x 3 sectors around it (the sender included), and each of them counts once.

Two systems under the same load, on this machine, both started once and measured in turns (each
run of each scenario: baseline then cluster, the other way round on every other run), so that
what else the machine runs meanwhile weighs on both alike:

- **cluster**: broker + ``--chat-workers`` chat workers (2 by default) + 1 gateway, started with
  ``cluster up --only broker,chat,gateway``; ``[chat] message_rate = 0`` (no flood limit: this
  load says far more than 50 messages per second per client) and ``[game] verify_key = false``
  (every CS_CHAT_REQ_LOGIN is accepted; no database is involved). A message goes client ->
  gateway -> the sender's chat worker, which encodes it once and, at the end of its frame, writes
  the frame's messages to its own players around them (one DELIVER item per sector group and
  gateway) and casts them to the other chat workers (one CAST per frame, through the broker),
  each of which does the same for its own players;
- **baseline**: one uvloop process (this script, ``--baseline-server``) with an
  ``asyncio.Protocol`` doing the same sector fan-out: it decodes with the shared codec, keeps a
  sector map, encodes each message once and queues it to every client in the 3 x 3 sectors; what
  a client was queued goes out in one write per loop iteration -- the best a single Python
  process does, with no bus in between.

Scenarios (``--clients`` sets the number of clients of both):

- ``crowded``: 200 clients round-robin over the 3 x 3 sectors around (50, 50), so a message
  reaches about 60% of all clients (the middle sector's reaches everyone);
- ``sparse``: 1,000 clients at random (fixed seed) over the whole 100 x 100 grid, so a message
  reaches about two (its sender and the odd neighbour).

The load runs in a separate process (uvloop, requests pre-encoded, replies counted by size: after
the sector moves every packet a client receives is a RES_MESSAGE of one known size; a packet
boundary without the packet code is counted as ``misaligned``). Each client logs in and moves to
its sector; then the load is a closed loop over deliveries: the load client knows how many
receivers each client's message has, and keeps the deliveries it expects and has not received at
a window of ``--inflight`` messages per client (default: crowded 4, sparse 8), sending, one
message per client round-robin, whenever that backlog falls under three quarters of the window.
The window measured starts after ``--warmup`` seconds and lasts ``--seconds``. Then the load
stops and the backlog must drain (``undelivered``: deliveries expected and never received;
anything but 0 is a bug, as is a client closed by the server). The CPU time (user + system) of
every server process (gateway, broker, each chat worker; or the baseline's one process) and of
the load client is sampled at the instants the window starts and ends, and reported as
microseconds of CPU per delivery (``cpu_us_per_delivery``): a figure that moves far less than
throughput when the machine is shared. The load client shares the machine's cores with the
servers; its CPU is reported too.

Figures are medians of ``--runs`` runs; the report gives deliveries per second of each system and
the ratio (cluster / baseline) per scenario, and each run's own ratio (``run_ratios``). ``--json``
prints the report as JSON on stdout, ``--json FILE`` writes it to FILE (and prints the table).
``--quick``: 1 run of 2 s per scenario with 100 and 300 clients (about 20 s in all). Progress goes
to stderr. Nothing here is a test; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench import common  # noqa: E402
from cluster import testkit  # noqa: E402
from cluster.codec import HEADER_SIZE, Codec, ProtocolError  # noqa: E402
from cluster.messages import (  # noqa: E402
    CHAT_CLIENT_MESSAGES,
    CHAT_SERVER_MESSAGES,
    SECTOR_MAX,
    SESSION_KEY_SIZE,
    SPECS,
    ChatReqHeartbeat,
    ChatReqLogin,
    ChatReqMessage,
    ChatReqSectorMove,
    ChatResLogin,
    ChatResMessage,
    ChatResSectorMove,
)

SCENARIOS = ("crowded", "sparse")
SYSTEMS = ("baseline", "cluster")
#: Clients and messages in flight per client of each scenario, unless given.
DEFAULT_CLIENTS = {"crowded": 200, "sparse": 1000}
DEFAULT_INFLIGHT = {"crowded": 4, "sparse": 8}
QUICK_CLIENTS = {"crowded": 100, "sparse": 300}
#: crowded: the clients share the BLOCK x BLOCK sectors around the middle of the grid.
BLOCK = 3
SPARSE_SEED = 13
#: What every client says: 16 UTF-16 characters (32 bytes), as a short chat line.
TEXT = "hello, sector 13".encode("utf-16-le")
RES_MESSAGE_SIZE = HEADER_SIZE + SPECS[ChatResMessage.TYPE].size + len(TEXT)  # one RES_MESSAGE
ZERO_KEY = b"\0" * SESSION_KEY_SIZE
ROLES = ("broker", "chat", "gateway")
CONNECTS_IN_FLIGHT = 64
SETUP_TIMEOUT = 120.0
DRAIN_TIMEOUT = 15.0
#: Accounts of one load-client run: ACCOUNT_STRIDE apart, so that a run never logs in an account
#: whose session of the previous run may still be closing.
ACCOUNT_STRIDE = 100_000


# -- the layout -----------------------------------------------------------------------------------


def layout(scenario: str, clients: int) -> list[tuple[int, int]]:
    """The sector (x, y) of each client."""
    if scenario == "crowded":
        first = SECTOR_MAX // 2 - BLOCK // 2
        cells = [(first + i // BLOCK, first + i % BLOCK) for i in range(BLOCK * BLOCK)]
        return [cells[i % len(cells)] for i in range(clients)]
    rng = random.Random(SPARSE_SEED)
    return [(rng.randrange(SECTOR_MAX), rng.randrange(SECTOR_MAX)) for _ in range(clients)]


def fan_out(sectors: list[tuple[int, int]]) -> list[int]:
    """How many clients hear a message of each client: those in the 3 x 3 sectors around its
    own (the sender included), by the chat's rule (docs/protocol.md, "Chat port")."""
    counts: dict[tuple[int, int], int] = {}
    for sector in sectors:
        counts[sector] = counts.get(sector, 0) + 1
    heard = {
        (x, y): sum(counts.get((x + dx, y + dy), 0) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
        for x, y in counts
    }
    return [heard[sector] for sector in sectors]


# -- the load client (a separate process) ---------------------------------------------------------


class Driver:
    """The closed loop over deliveries, shared by every client of the load process."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.low = window * 3 // 4
        self.clients: list[LoadClient] = []
        self.fanouts: list[int] = []
        self.cursor = 0
        self.sent = 0  # messages
        self.expected = 0  # deliveries the messages sent will make
        self.received = 0  # deliveries received
        self.running = False
        self.misaligned = 0
        self.closed_by_server = 0

    def delivered(self, count: int) -> None:
        self.received += count
        if self.running and self.expected - self.received < self.low:
            self.refill()

    def refill(self) -> None:
        clients, fanouts, n = self.clients, self.fanouts, len(self.clients)
        cursor, expected, sent = self.cursor, self.expected, self.sent
        target = self.received + self.window
        while expected < target:
            client = clients[cursor]
            transport = client.transport
            if transport is not None and client.state == LoadClient.RUNNING:
                transport.write(client.message)
                expected += fanouts[cursor]
                sent += 1
            cursor += 1
            if cursor == n:
                cursor = 0
                if sent == self.sent:
                    break  # nobody left to send
        self.cursor, self.expected, self.sent = cursor, expected, sent


class LoadClient(asyncio.Protocol):
    """One chat client: logs in, moves to its sector, then says what the driver tells it and
    counts the RES_MESSAGE packets it receives by their size."""

    LOGIN, MOVING, RUNNING, CLOSED = 0, 1, 2, 3

    def __init__(self, driver: Driver, codec: Codec, account_no: int,
                 sector: tuple[int, int]) -> None:  # fmt: skip
        self.driver = driver
        self.login = codec.encode(ChatReqLogin(account_no, f"user{account_no}",
                                               f"nick{account_no}", ZERO_KEY))  # fmt: skip
        self.move = codec.encode(ChatReqSectorMove(account_no, *sector))
        self.message = codec.encode(ChatReqMessage(account_no, TEXT))
        self.account_no = account_no
        self.decoder = codec.decoder(CHAT_SERVER_MESSAGES, records=False)
        self.code = codec.code
        self.state = self.LOGIN
        self.rest = 0  # bytes of a partial RES_MESSAGE received
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.login)

    def data_received(self, data: bytes) -> None:
        if self.state == self.RUNNING:
            boundary = RES_MESSAGE_SIZE - self.rest if self.rest else 0
            if boundary < len(data) and data[boundary] != self.code:
                self.driver.misaligned += 1
            count, self.rest = divmod(self.rest + len(data), RES_MESSAGE_SIZE)
            if count:
                self.driver.delivered(count)
            return
        try:
            messages = self.decoder.feed(data)
        except ProtocolError as exc:
            self.fail(f"bad reply: {exc}")
            return
        for mtype, fields in messages:
            if self.state == self.LOGIN and mtype == ChatResLogin.TYPE:
                if fields[0] != 1:
                    self.fail(f"login of {self.account_no} refused")
                    return
                self.state = self.MOVING
                assert self.transport is not None
                self.transport.write(self.move)
            elif self.state == self.MOVING and mtype == ChatResSectorMove.TYPE:
                self.state = self.RUNNING
                self.ready.set_result(None)
                if self.decoder.buffered:  # nothing is said before every client is ready
                    self.fail("bytes after RES_SECTOR_MOVE")
            else:
                self.fail(f"unexpected message type {mtype} while setting up")
                return

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state != self.CLOSED:
            self.driver.closed_by_server += 1
            self.state = self.CLOSED
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(f"{self.account_no}: closed by server"))

    def close(self) -> None:
        if self.state != self.CLOSED:
            self.state = self.CLOSED
            if self.transport is not None:
                self.transport.close()


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    """User + system CPU seconds so far of each of `processes`; a process that is gone is left
    out."""
    out = {}
    for name, process in processes.items():
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        out[name] = times.user + times.system
    return out


async def load(port: int, scenario: str, clients: int, first_account: int, inflight: int,
               warmup: float, seconds: float, watch: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """Log `clients` in, move them, drive the closed loop and measure one window."""
    loop = asyncio.get_running_loop()
    codec = Codec()
    sectors = layout(scenario, clients)
    fanouts = fan_out(sectors)
    driver = Driver(window=inflight * sum(fanouts))
    driver.fanouts = fanouts
    driver.clients = [LoadClient(driver, codec, first_account + i, sector)
                      for i, sector in enumerate(sectors)]  # fmt: skip
    slots = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def connect(client: LoadClient) -> None:
        async with slots:
            await loop.create_connection(lambda: client, "127.0.0.1", port)

    t_setup = time.perf_counter()
    async with asyncio.timeout(SETUP_TIMEOUT):
        await asyncio.gather(*(connect(c) for c in driver.clients))
        await asyncio.gather(*(c.ready for c in driver.clients))
    setup_seconds = time.perf_counter() - t_setup

    me = psutil.Process()
    watched = {"client": me}
    for name, pid in watch.items():
        with contextlib.suppress(psutil.Error):
            watched[name] = psutil.Process(pid)
    driver.running = True
    driver.refill()
    await asyncio.sleep(warmup)
    used0, received0, sent0, t0 = cpu_seconds(watched), driver.received, driver.sent, \
        time.perf_counter()  # fmt: skip
    await asyncio.sleep(seconds)
    t1, received1, sent1, used1 = time.perf_counter(), driver.received, driver.sent, \
        cpu_seconds(watched)  # fmt: skip
    driver.running = False
    drain_end = time.monotonic() + DRAIN_TIMEOUT
    while driver.received < driver.expected and time.monotonic() < drain_end:
        if driver.closed_by_server:
            break
        await asyncio.sleep(0.05)
    undelivered = driver.expected - driver.received
    for client in driver.clients:
        client.close()
    await asyncio.sleep(0.1)
    deliveries = received1 - received0
    elapsed = t1 - t0
    cpu_s = {name: used1[name] - used0[name] for name in used0 if name in used1}
    return {
        "deliveries_per_s": deliveries / elapsed,
        "messages_per_s": (sent1 - sent0) / elapsed,
        "deliveries": deliveries,
        "seconds": elapsed,
        "clients": clients,
        "mean_fan_out": sum(fanouts) / len(fanouts),
        "inflight": inflight,
        "window_deliveries": driver.window,
        "setup_seconds": setup_seconds,
        "undelivered": undelivered,
        "misaligned": driver.misaligned,
        "closed_by_server": driver.closed_by_server,
        "load_cpu_percent": 100 * cpu_s.get("client", 0.0) / elapsed,
        "cpu_s": cpu_s,
        "cpu_us_per_delivery": {
            name: (1e6 * used / deliveries if deliveries else None) for name, used in cpu_s.items()
        },
    }


def run_load_client(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = json.loads(args.load_client)
    result = common.run_async(load(**spec))
    print(json.dumps(result))
    return 0


def run_load(port: int, scenario: str, clients: int, first_account: int, inflight: int,
             warmup: float, seconds: float, watch: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """The load, in its own process (so its CPU does not count as the server's)."""
    spec = {"port": port, "scenario": scenario, "clients": clients,
            "first_account": first_account, "inflight": inflight, "warmup": warmup,
            "seconds": seconds, "watch": watch}  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--load-client", json.dumps(spec)],
        capture_output=True, text=True, env=common.child_env(), cwd=ROOT,
        timeout=SETUP_TIMEOUT + warmup + seconds + DRAIN_TIMEOUT + 60,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- the baseline server --------------------------------------------------------------------------


#: Cell index -> the cells of the 3 x 3 sectors around it (fewer at the edges).
NEIGHBOURS: tuple[tuple[int, ...], ...] = tuple(
    tuple(
        nx * SECTOR_MAX + ny
        for nx in range(max(0, x - 1), min(SECTOR_MAX, x + 2))
        for ny in range(max(0, y - 1), min(SECTOR_MAX, y + 2))
    )
    for x in range(SECTOR_MAX)
    for y in range(SECTOR_MAX)
)
LOGIN, MOVE, MESSAGE, HEARTBEAT = (ChatReqLogin.TYPE, ChatReqSectorMove.TYPE, ChatReqMessage.TYPE,
                                   ChatReqHeartbeat.TYPE)  # fmt: skip
RES_LOGIN, RES_MOVE, RES_MESSAGE = ChatResLogin.TYPE, ChatResSectorMove.TYPE, ChatResMessage.TYPE


class BaselineChat:
    """The sector map and the write side: every session's output of one loop iteration goes out
    in one write."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.cells: dict[int, dict[BaselineSession, None]] = {}  # ordered sets
        self.touched: list[BaselineSession] = []
        self.loop = asyncio.get_running_loop()

    def queue(self, session: BaselineSession, packet: bytes) -> None:
        if not session.pending:
            if not self.touched:
                self.loop.call_soon(self.flush)
            self.touched.append(session)
        session.pending.append(packet)

    def flush(self) -> None:
        touched, self.touched = self.touched, []
        for session in touched:
            pending = session.pending
            if session.transport is not None and not session.closed:
                session.transport.write(b"".join(pending))
            pending.clear()

    def fan_out(self, cell: int, packet: bytes) -> None:
        cells, touched = self.cells, self.touched
        if not touched:
            self.loop.call_soon(self.flush)
        for near in NEIGHBOURS[cell]:
            sessions = cells.get(near)
            if sessions is None:
                continue
            for session in sessions:
                pending = session.pending
                if not pending:
                    touched.append(session)
                pending.append(packet)

    def leave(self, session: BaselineSession) -> None:
        if session.cell >= 0:
            sessions = self.cells[session.cell]
            del sessions[session]
            if not sessions:
                del self.cells[session.cell]
            session.cell = -1


class BaselineSession(asyncio.Protocol):
    """One client: decode with the shared codec, log in, move, fan messages out."""

    def __init__(self, chat: BaselineChat) -> None:
        self.chat = chat
        self.decoder = chat.codec.decoder(CHAT_CLIENT_MESSAGES, records=False)
        self.account_no = -1
        self.user_id = ""
        self.nickname = ""
        self.cell = -1
        self.pending: list[bytes] = []
        self.closed = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        chat = self.chat
        try:
            messages = self.decoder.feed(data)
        except ProtocolError:
            self.close()
            return
        encode = chat.codec.encode_fields
        for mtype, fields in messages:
            if mtype == MESSAGE:
                account_no, text = fields
                if account_no != self.account_no:
                    self.close()
                    return
                if self.cell >= 0:
                    reply = encode(RES_MESSAGE, (account_no, self.user_id, self.nickname, text))
                    chat.fan_out(self.cell, reply)
            elif mtype == MOVE:
                account_no, x, y = fields
                if account_no != self.account_no or x >= SECTOR_MAX or y >= SECTOR_MAX:
                    self.close()
                    return
                chat.leave(self)
                self.cell = x * SECTOR_MAX + y
                chat.cells.setdefault(self.cell, {})[self] = None
                chat.queue(self, encode(RES_MOVE, fields))
            elif mtype == LOGIN and self.account_no < 0:
                self.account_no, self.user_id, self.nickname, _ = fields
                chat.queue(self, encode(RES_LOGIN, (1, self.account_no)))
            elif mtype != HEARTBEAT:
                self.close()
                return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.chat.leave(self)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.chat.leave(self)


async def baseline_server(port: int) -> None:
    chat = BaselineChat(Codec())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BaselineSession(chat), "127.0.0.1", port,
                                      backlog=4096)  # fmt: skip
    print("ready", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def run_baseline_server(port: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    common.run_async(baseline_server(port))
    return 0


# -- the systems under test -----------------------------------------------------------------------


def start_cluster(workdir: Path, chat_workers: int) -> tuple[common.Proc, int, dict[str, int]]:
    """``cluster up --only broker,chat,gateway``, ready; its chat port and the pids to watch."""
    broker, game, login, chat, metrics = testkit.free_ports(5)
    config = testkit.write_config(workdir / "cluster.toml", {
        "cluster": {"data_dir": str(workdir / "data"), "log_level": "warning"},
        "broker": {"bind": f"tcp://127.0.0.1:{broker}"},
        "gateway": {"game_port": game, "login_port": login, "chat_port": chat},
        "workers": {"game": 0, "auth": 0, "chat": chat_workers},
        "game": {"verify_key": False},
        "chat": {"enabled": True, "message_rate": 0},  # no flood limit: capacity is measured
        "monitor": {"metrics_port": metrics, "summary_interval": 3600.0},
    })  # fmt: skip
    proc = common.start_cluster(config, workdir / "cluster.log", ROLES, "--skip-db-init")
    roles = common.cluster_roles(proc)
    watch = {"gateway": roles["gateway"][0].pid, "broker": roles["broker"][0].pid}
    for index, worker in enumerate(roles.get("chat", []), 1):
        watch[f"chat{index}"] = worker.pid
    return proc, chat, watch


def start_baseline(workdir: Path) -> tuple[common.Proc, int, dict[str, int]]:
    port = testkit.free_ports(1)[0]
    argv = [sys.executable, str(Path(__file__).resolve()), "--baseline-server", str(port)]
    proc = common.Proc(argv, workdir / "baseline.log")
    try:
        proc.wait_ready()
    except BaseException:
        proc.stop()
        raise
    return proc, port, {"server": proc.pid}


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every run of every scenario against both systems, started once each and measured in
    turns (baseline then cluster, the other way round on every other run), so that a change in
    what else the machine runs meanwhile weighs on both alike."""
    common.progress("starting the baseline server")
    systems = {"baseline": start_baseline(workdir)}
    common.progress(f"starting the cluster (broker, {args.chat_workers} chat workers, gateway)")
    systems["cluster"] = start_cluster(workdir, args.chat_workers)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        system: {scenario: [] for scenario in args.scenarios} for system in SYSTEMS
    }
    accounts = dict.fromkeys(SYSTEMS, 1)
    try:
        for run in range(args.runs):
            for scenario in args.scenarios:
                for system in SYSTEMS if run % 2 == 0 else SYSTEMS[::-1]:
                    _, port, watch = systems[system]
                    result = run_load(port, scenario, args.clients[scenario], accounts[system],
                                      args.inflight[scenario], args.warmup, args.seconds,
                                      watch)  # fmt: skip
                    accounts[system] += ACCOUNT_STRIDE
                    results[system][scenario].append(result)
                    per_delivery = result["cpu_us_per_delivery"].items()
                    cpu = " ".join(f"{k} {us:.2f}" for k, us in per_delivery if us is not None)
                    common.progress(
                        f"  run {run + 1}/{args.runs} {scenario:8} {system:8} "
                        f"{result['deliveries_per_s']:>10,.0f} deliveries/s "
                        f"({result['messages_per_s']:,.0f} msg/s, fan-out "
                        f"{result['mean_fan_out']:.1f}, load client CPU "
                        f"{result['load_cpu_percent']:.0f}%, undelivered "
                        f"{result['undelivered']}, closed {result['closed_by_server']}); "
                        f"CPU us/delivery: {cpu}"
                    )
    finally:
        for proc, _, _ in systems.values():
            proc.stop()
    return results


def cpu_per_delivery(results: list[dict[str, Any]], names: list[str]) -> dict[str, float | None]:
    """Median over runs of each process's CPU microseconds per delivery (None when not
    measured)."""
    out: dict[str, float | None] = {}
    for name in names:
        values = [r["cpu_us_per_delivery"].get(name) for r in results]
        present = [v for v in values if v is not None]
        out[name] = round(common.median(present), 3) if present else None
    return out


def cost_ratio(cluster: dict[str, float | None], baseline: dict[str, float | None]) -> float | None:
    """Server CPU per delivery of the cluster (every role) over the baseline's (its server)."""
    server = [v for k, v in cluster.items() if k != "client"]
    if not server or None in server or not baseline.get("server"):
        return None
    return round(sum(v for v in server if v is not None) / (baseline["server"] or 1), 2)


def report_of(measured: dict[str, dict[str, list[dict[str, Any]]]],
              args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {
        "scenarios": {}, "runs": args.runs, "seconds": args.seconds, "warmup": args.warmup,
        "chat_workers": args.chat_workers, "machine": common.machine(),
    }  # fmt: skip
    for scenario in args.scenarios:
        cluster_runs, baseline_runs = measured["cluster"][scenario], measured["baseline"][scenario]
        cluster = common.median(r["deliveries_per_s"] for r in cluster_runs)
        baseline = common.median(r["deliveries_per_s"] for r in baseline_runs)
        cluster_names = sorted({n for r in cluster_runs for n in r["cpu_us_per_delivery"]})
        cluster_cpu = cpu_per_delivery(cluster_runs, cluster_names)
        baseline_cpu = cpu_per_delivery(baseline_runs, ["server", "client"])
        report["scenarios"][scenario] = {
            "cluster": round(cluster),
            "baseline": round(baseline),
            "ratio": round(cluster / baseline, 3) if baseline else None,
            # each run's cluster / baseline, the two measured one right after the other
            "run_ratios": [round(c["deliveries_per_s"] / b["deliveries_per_s"], 3)
                           if b["deliveries_per_s"] else None
                           for c, b in zip(cluster_runs, baseline_runs, strict=True)],
            "cluster_runs": [round(r["deliveries_per_s"]) for r in cluster_runs],
            "baseline_runs": [round(r["deliveries_per_s"]) for r in baseline_runs],
            "clients": args.clients[scenario],
            "inflight": args.inflight[scenario],
            "mean_fan_out": round(cluster_runs[0]["mean_fan_out"], 2),
            "cluster_messages_per_s": round(
                common.median(r["messages_per_s"] for r in cluster_runs)),
            "baseline_messages_per_s": round(
                common.median(r["messages_per_s"] for r in baseline_runs)),
            "load_cpu_percent": round(common.median(r["load_cpu_percent"] for r in cluster_runs)),
            "baseline_load_cpu_percent": round(
                common.median(r["load_cpu_percent"] for r in baseline_runs)),
            "cpu_us_per_delivery": cluster_cpu,
            "baseline_cpu_us_per_delivery": baseline_cpu,
            # the server side's CPU per delivery, summed over its processes (not the load
            # client): the cluster's in multiples of the baseline's
            "cpu_cost_ratio": cost_ratio(cluster_cpu, baseline_cpu),
            "undelivered": sum(r["undelivered"] for r in cluster_runs + baseline_runs),
            "misaligned": sum(r["misaligned"] for r in cluster_runs + baseline_runs),
            "closed_by_server": sum(r["closed_by_server"] for r in cluster_runs + baseline_runs),
        }  # fmt: skip
    return report


def print_table(report: dict[str, Any]) -> None:
    s = report["scenarios"]
    workers = report["chat_workers"]
    print(f"chat deliveries per second, {workers} chat worker{'s' * (workers != 1)} "
          f"(median of {report['runs']} runs of {report['seconds']:g}s)")  # fmt: skip
    print(f"{'scenario':9} {'clients':>7} {'fan-out':>7} {'cluster':>12} {'baseline':>12} "
          f"{'ratio':>6} {'undelivered':>11}")  # fmt: skip
    for name, row in s.items():
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(f"{name:9} {row['clients']:>7,} {row['mean_fan_out']:>7.1f} {row['cluster']:>12,} "
              f"{row['baseline']:>12,} {ratio:>6} {row['undelivered']:>11}")  # fmt: skip
    print()
    print("CPU per delivery (us): cluster processes | baseline server, its load client")
    for name, row in s.items():
        cells = " ".join(f"{k} {v:.2f}" for k, v in row["cpu_us_per_delivery"].items()
                         if v is not None)  # fmt: skip
        b = row["baseline_cpu_us_per_delivery"]
        base = " ".join(f"{k} {v:.2f}" for k, v in b.items() if v is not None)
        cost = "-" if row["cpu_cost_ratio"] is None else f"{row['cpu_cost_ratio']:.2f}x"
        print(f"{name:9} {cells} | {base} (cluster servers / baseline server: {cost})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1 run of 2 s per scenario, fewer clients (well under a minute)",
    )
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="print the report as JSON (or write it to FILE)")  # fmt: skip
    parser.add_argument("--runs", type=int, help="runs per scenario and system (default 3)")
    parser.add_argument("--seconds", type=float, help="measured window (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of load before it (default 1)")
    parser.add_argument("--scenario", choices=SCENARIOS, action="append",
                        help="run only this scenario (repeatable)")  # fmt: skip
    parser.add_argument(
        "--clients", type=int, help="clients of every scenario (default: crowded 200, sparse 1,000)"
    )
    parser.add_argument(
        "--inflight", type=int, help="messages in flight per client (default: crowded 4, sparse 8)"
    )
    parser.add_argument("--chat-workers", type=int, default=2)
    parser.add_argument("--load-client", help=argparse.SUPPRESS)  # JSON of load()'s arguments
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_client or args.baseline_server:
        return args
    quick = args.quick
    args.runs = args.runs or (1 if quick else 3)
    args.seconds = args.seconds or (2.0 if quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    args.scenarios = args.scenario or list(SCENARIOS)
    defaults = QUICK_CLIENTS if quick else DEFAULT_CLIENTS
    args.clients = {s: args.clients or defaults[s] for s in SCENARIOS}
    args.inflight = {s: args.inflight or DEFAULT_INFLIGHT[s] for s in SCENARIOS}
    if args.runs < 1 or args.seconds <= 0 or args.warmup < 0 or args.chat_workers < 1:
        parser.error("--runs and --chat-workers must be >= 1, --seconds > 0, --warmup >= 0")
    if min(args.clients.values()) < 1 or min(args.inflight.values()) < 1:
        parser.error("--clients and --inflight must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_client:
        return run_load_client(args)
    if args.baseline_server:
        return run_baseline_server(args.baseline_server)
    common.install_signal_handlers()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
            measured = measure(Path(tmp), args)
    except KeyboardInterrupt:
        common.progress("interrupted; everything started was stopped")
        return 130
    except RuntimeError as exc:
        common.progress(f"failed: {exc}")
        return 1
    finally:
        common.stop_all()
    report = report_of(measured, args)
    if args.json == "-":
        print(json.dumps(report, indent=1))
        return 0
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
