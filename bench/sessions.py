#!/usr/bin/env python3
"""Many logged-in sessions on one gateway: memory per session and time to log them all in.

    python bench/sessions.py [--quick] [--json] [--sessions N] [--hold S] [--heartbeat S]
                             [--client-procs K]

The cluster: ``cluster up --only broker,game,gateway`` with 2 game workers, ``[game] verify_key =
false`` (raw echo logins: every CS_GAME_REQ_LOGIN is accepted, no database is involved) and
``[gateway] heartbeat_timeout`` left at its default of 40 s, on free ports.

1. RSS (and USS, where /proc allows it) of the gateway and of each game worker, idle;
2. N connections to the game port from K client processes (uvloop, one small ``asyncio.Protocol``
   per connection and no per-connection task), each sending CS_GAME_REQ_LOGIN and waiting for
   CS_GAME_RES_LOGIN OK: the time from the start signal until the last one is in game;
3. every session sends CS_GAME_REQ_HEARTBEAT every ``--heartbeat`` seconds (phases spread over the
   interval, starting as soon as it is in game) while they are held for ``--hold`` seconds;
4. RSS again: bytes per session = (after - before) / N, for the gateway and for each game worker
   (and, per game worker, divided by the sessions it holds, read from its log line ``sessions=``);
5. every connection the server closed is counted by the clients (a heartbeat timeout would show
   here), and the gateway's drop counters are read from its log.

Defaults: N = 10,000, heartbeat 30 s (as the original's clients), hold 60 s (longer than the
heartbeat timeout). ``--quick``: N = 2,000, heartbeat 5 s, hold 15 s. Figures are absolute here
(bytes per session), on this machine; the goal it is read against is < 4 KB RSS per session in
the gateway. Progress goes to stderr; ``--json`` prints ``{"sessions": N, "login_seconds": s,
"gateway_bytes_per_session": b, "game_bytes_per_session": [..], "closed_by_server": c, ...}``
on stdout. Nothing here is a test; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench import common  # noqa: E402
from cluster import testkit  # noqa: E402
from cluster.codec import Codec  # noqa: E402
from cluster.messages import (  # noqa: E402
    GAME_VERSION,
    SERVER_MESSAGES,
    SESSION_KEY_SIZE,
    GameLoginStatus,
    GameReqHeartbeat,
    GameReqLogin,
    GameResLogin,
)

ROLES = ("broker", "game", "gateway")
GAME_WORKERS = 2
LOGIN_REPLY_SIZE = 5 + 11  # header + CS_GAME_RES_LOGIN payload
HEARTBEAT_SLOTS = 10  # heartbeat phases per interval
OPENERS = 4  # connect() calls in flight per client process
LOGINS_IN_FLIGHT = 256  # logins in flight per client process
SESSIONS_PER_CLIENT = 15_000  # below the fd limit of one process (20,000 here)
STATUS_EVERY = 2.0
LOGIN_TIMEOUT = 300.0
ZERO_KEY = b"\0" * SESSION_KEY_SIZE


# -- the client processes --------------------------------------------------------------------------


class Tally:
    """What one client process counts, shared by its sessions."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.logged_in = 0
        self.failed = 0
        self.closed_by_server = 0
        self.heartbeats = 0
        self.latencies: list[float] = []
        self.slots = asyncio.Semaphore(LOGINS_IN_FLIGHT)
        self.all_done = asyncio.get_running_loop().create_future()
        self.codec = Codec()

    def settled(self) -> None:
        self.slots.release()
        if self.logged_in + self.failed == self.count and not self.all_done.done():
            self.all_done.set_result(None)


class HeldSession(asyncio.Protocol):
    """One game-port connection: logs in, then only sends what it is told (heartbeats)."""

    __slots__ = ("account_no", "buffer", "started", "state", "tally", "transport")

    LOGGING_IN, IN_GAME, CLOSED = 0, 1, 2

    def __init__(self, tally: Tally, account_no: int) -> None:
        self.tally = tally
        self.account_no = account_no
        self.state = self.LOGGING_IN
        self.buffer = b""
        self.started = time.perf_counter()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        codec = self.tally.codec
        self.transport.write(codec.encode(GameReqLogin(self.account_no, ZERO_KEY, GAME_VERSION)))

    def data_received(self, data: bytes) -> None:
        if self.state != self.LOGGING_IN:
            return  # nothing is expected after the login (heartbeats have no answer)
        self.buffer += data
        if len(self.buffer) < LOGIN_REPLY_SIZE:
            return
        tally = self.tally
        messages = tally.codec.decoder(SERVER_MESSAGES).feed(self.buffer[:LOGIN_REPLY_SIZE])
        self.buffer = b""
        reply = messages[0] if messages else None
        if isinstance(reply, GameResLogin) and reply.status == GameLoginStatus.OK:
            self.state = self.IN_GAME
            tally.logged_in += 1
            tally.latencies.append(time.perf_counter() - self.started)
        else:
            self.state = self.CLOSED
            tally.failed += 1
            assert self.transport is not None
            self.transport.close()
        tally.settled()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == self.CLOSED:
            return
        tally = self.tally
        tally.closed_by_server += 1
        if self.state == self.LOGGING_IN:
            tally.failed += 1
            tally.settled()
        self.state = self.CLOSED

    def close(self) -> None:
        if self.state != self.CLOSED:
            self.state = self.CLOSED
            assert self.transport is not None
            self.transport.close()


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def client_main(port: int, first: int, count: int, heartbeat: float) -> None:
    """Wait for ``go`` on stdin, log `count` sessions in, heartbeat them until ``stop``."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "stop")

    threading.Thread(target=read_stdin, daemon=True).start()
    tally = Tally(count)
    sessions: list[HeldSession] = []
    heartbeat_packet = tally.codec.encode(GameReqHeartbeat())
    emit(ready=True)
    while await commands.get() != "go":
        pass
    t0 = time.perf_counter()
    me = psutil.Process()
    cpu0 = sum(me.cpu_times()[:2])
    next_account = iter(range(first, first + count))

    async def opener() -> None:
        for account_no in next_account:
            await tally.slots.acquire()
            session = HeldSession(tally, account_no)
            sessions.append(session)
            try:
                await loop.create_connection(lambda s=session: s, "127.0.0.1", port)
            except OSError:
                session.state = HeldSession.CLOSED
                tally.failed += 1
                tally.settled()

    async def heartbeats() -> None:
        tick, slot = heartbeat / HEARTBEAT_SLOTS, 0
        while True:
            await asyncio.sleep(tick)
            for session in sessions[slot::HEARTBEAT_SLOTS]:
                if session.state == HeldSession.IN_GAME:
                    assert session.transport is not None
                    session.transport.write(heartbeat_packet)
                    tally.heartbeats += 1
            slot = (slot + 1) % HEARTBEAT_SLOTS

    def status(**extra: Any) -> None:
        emit(logged_in=tally.logged_in, failed=tally.failed, closed=tally.closed_by_server,
             heartbeats=tally.heartbeats, **extra)  # fmt: skip

    async def report() -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            status()

    openers = [asyncio.create_task(opener()) for _ in range(OPENERS)]
    beating = asyncio.create_task(heartbeats())
    reporting = asyncio.create_task(report())
    if count:
        await tally.all_done
    login_seconds = time.perf_counter() - t0
    latencies = sorted(tally.latencies)
    status(done=True, seconds=login_seconds,
           p50_ms=common.percentile(latencies, 50) * 1000 if latencies else 0.0,
           p99_ms=common.percentile(latencies, 99) * 1000 if latencies else 0.0)  # fmt: skip
    while await commands.get() != "stop":
        pass
    for task in (*openers, beating, reporting):
        task.cancel()
    cpu_seconds = sum(me.cpu_times()[:2]) - cpu0
    status(final=True, cpu_seconds=cpu_seconds, elapsed=time.perf_counter() - t0)
    for session in sessions:
        session.close()
    await asyncio.sleep(0.2)


def run_client(argv: list[str]) -> int:
    port, first, count, heartbeat = int(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    common.run_async(client_main(port, first, count, heartbeat))
    return 0


# -- the benchmark ---------------------------------------------------------------------------------


class Clients:
    """The client processes, and the latest status line of each."""

    def __init__(self, procs: list[common.Proc]) -> None:
        self.procs = procs
        self.latest: list[dict[str, Any]] = [{} for _ in procs]

    def poll(self, timeout: float) -> None:
        """Read every status line that is waiting (waiting up to `timeout` for the first)."""
        deadline = time.monotonic() + timeout
        for index, proc in enumerate(self.procs):
            while True:
                try:
                    line = proc.next_line(max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if line is None:
                    raise RuntimeError(f"client {index + 1} exited; log:\n{proc.log_tail()}")
                if line.startswith("{"):
                    self.latest[index].update(json.loads(line))
                    if self.latest[index].get("done") or self.latest[index].get("final"):
                        break

    def total(self, key: str) -> float:
        return sum(status.get(key, 0) for status in self.latest)

    def all(self, key: str) -> bool:
        return all(status.get(key) for status in self.latest)

    def send(self, command: str) -> None:
        for proc in self.procs:
            proc.send_line(command)


def snapshot(processes: dict[str, psutil.Process]) -> dict[str, dict[str, int | None]]:
    return {name: common.memory(process) for name, process in processes.items()}


def per_session(before: dict[str, Any], after: dict[str, Any], key: str, n: float) -> float | None:
    if before.get(key) is None or after.get(key) is None or n <= 0:
        return None
    return round((after[key] - before[key]) / n, 1)


def game_sessions_from_log(log: str, pids: list[int]) -> list[int | None]:
    """Each game worker's last ``sessions=`` figure in `log` (its summary line, every 10 s);
    None for a worker that logged none."""
    found: list[int | None] = []
    for pid in pids:
        matches = re.findall(rf"game\[{pid}\] INFO sessions=(\d+)", log)
        found.append(int(matches[-1]) if matches else None)
    return found


def gateway_drops_from_log(log: str) -> dict[str, int]:
    """The gateway's latest ``drops: reason=count ...`` counters."""
    lines = re.findall(r"gateway\[\d+\] .*drops: (.*)", log)
    if not lines or lines[-1].strip() == "none":
        return {}
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[-1])}


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = args.sessions
    broker, login, game, metrics = testkit.free_ports(4)
    config = testkit.write_config(
        workdir / "cluster.toml",
        {
            "cluster": {"data_dir": str(workdir / "data"), "log_level": "info"},
            "broker": {"bind": f"tcp://127.0.0.1:{broker}"},
            "gateway": {"host": "127.0.0.1", "login_port": login, "game_port": game},
            "workers": {"auth": 0, "game": GAME_WORKERS},
            "game": {"verify_key": False},
            "chat": {"enabled": False},
            "monitor": {"metrics_port": metrics, "summary_interval": 3600.0},
        },
    )
    log_path = workdir / "cluster.log"
    common.progress(f"starting the cluster (broker, {GAME_WORKERS} game workers, gateway)")
    cluster = common.start_cluster(config, log_path, ROLES, "--skip-db-init")
    clients: Clients | None = None
    try:
        roles = common.cluster_roles(cluster)
        gateway = roles["gateway"][0]
        games = roles["game"]
        watched = {"gateway": gateway, **{f"game{i}": p for i, p in enumerate(games, 1)}}
        time.sleep(1.0)  # let start-up allocations settle
        before = snapshot(watched)
        common.progress(
            "idle: " + ", ".join(f"{k} RSS {v['rss'] / 2**20:.1f} MB" for k, v in before.items())
        )
        procs = max(args.client_procs, math.ceil(n / SESSIONS_PER_CLIENT))
        shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        firsts = [1 + sum(shares[:i]) for i in range(procs)]
        common.progress(f"starting {procs} client process(es)")
        script = str(Path(__file__).resolve())
        procs_started = []
        for i, (first, share) in enumerate(zip(firsts, shares, strict=True)):
            argv = [sys.executable, script, "--client", str(game), str(first), str(share),
                    str(args.heartbeat)]  # fmt: skip
            procs_started.append(common.Proc(argv, workdir / f"client{i + 1}.log", stdin=True))
        clients = Clients(procs_started)
        for proc in clients.procs:
            proc.wait_for("{", 60)
        cpu = common.CpuMeter(watched)
        cpu.start()
        t0 = time.monotonic()
        clients.send("go")
        common.progress(f"logging in {n:,} sessions")
        last_shown = t0
        while not clients.all("done"):
            clients.poll(0.5)
            now = time.monotonic()
            if now - t0 > LOGIN_TIMEOUT:
                raise RuntimeError(f"sessions not all logged in after {LOGIN_TIMEOUT:.0f}s")
            if now - last_shown >= STATUS_EVERY and not clients.all("done"):
                last_shown = now
                common.progress(
                    f"  {clients.total('logged_in'):,.0f}/{n:,} in game after {now - t0:.0f}s, "
                    f"failed {clients.total('failed'):.0f}"
                )
        login_seconds = max(status["seconds"] for status in clients.latest)
        login_cpu = cpu.stop()
        logged_in = int(clients.total("logged_in"))
        failed = int(clients.total("failed"))
        common.progress(
            f"{logged_in:,} in game in {login_seconds:.2f}s ({logged_in / login_seconds:,.0f}/s), "
            f"failed {failed}"
        )
        after_login = snapshot(watched)
        log_offset = log_path.stat().st_size  # game workers' session counts are read after this
        common.progress(
            f"holding them for {args.hold:g}s, a heartbeat every {args.heartbeat:g}s each"
        )
        cpu.start()
        hold_end = time.monotonic() + args.hold
        next_show = time.monotonic() + 5.0
        while time.monotonic() < hold_end:
            clients.poll(min(0.5, max(0.0, hold_end - time.monotonic())))
            if time.monotonic() >= next_show:
                next_show += 5.0
                rss = common.memory(gateway)["rss"] or 0
                common.progress(
                    f"  held {args.hold - (hold_end - time.monotonic()):.0f}/{args.hold:g}s: "
                    f"gateway RSS {rss / 2**20:.1f} MB, "
                    f"closed by server {clients.total('closed'):.0f}, "
                    f"heartbeats {clients.total('heartbeats'):,.0f}"
                )
        hold_cpu = cpu.stop()
        after = snapshot(watched)
        with log_path.open("rb") as log_file:
            log_file.seek(log_offset)
            log_text = log_file.read().decode(errors="replace")
        held = game_sessions_from_log(log_text, [p.pid for p in games])
        clients.send("stop")
        while not clients.all("final"):
            clients.poll(10.0)
        for proc in clients.procs:
            proc.stop()
    finally:
        if clients is not None:
            for proc in clients.procs:
                proc.stop()
        common.progress("stopping the cluster")
        cluster.stop()
    drops = gateway_drops_from_log(log_path.read_text(errors="replace"))
    game_names = [f"game{i}" for i in range(1, len(games) + 1)]
    return {
        "sessions": n,
        "logged_in": logged_in,
        "login_failed": failed,
        "login_seconds": round(login_seconds, 3),
        "logins_per_s": round(logged_in / login_seconds, 1),
        "login_p50_ms": round(common.median(s["p50_ms"] for s in clients.latest), 2),
        "login_p99_ms": round(max(s["p99_ms"] for s in clients.latest), 2),
        "gateway_bytes_per_session": per_session(before["gateway"], after["gateway"], "rss", n),
        "gateway_uss_bytes_per_session": per_session(before["gateway"], after["gateway"], "uss", n),
        "gateway_bytes_per_session_after_login": per_session(
            before["gateway"], after_login["gateway"], "rss", n
        ),
        "game_bytes_per_session": [per_session(before[g], after[g], "rss", n) for g in game_names],
        "game_uss_bytes_per_session": [
            per_session(before[g], after[g], "uss", n) for g in game_names
        ],
        "game_sessions": held,
        "game_bytes_per_held_session": [
            per_session(before[g], after[g], "rss", h) if h else None
            for g, h in zip(game_names, held, strict=True)
        ],
        "closed_by_server": int(clients.total("closed")),
        "heartbeats_sent": int(clients.total("heartbeats")),
        "gateway_drops": drops,
        "hold_seconds": args.hold,
        "heartbeat_interval": args.heartbeat,
        "heartbeat_timeout": 40.0,
        "client_processes": len(clients.procs),
        "client_cpu_seconds": round(clients.total("cpu_seconds"), 2),
        "cpu_percent_login": {k: round(v) for k, v in login_cpu.items()},
        "cpu_percent_hold": {k: round(v, 1) for k, v in hold_cpu.items()},
        "memory": {
            name: {"before": before[name], "after_login": after_login[name], "after": after[name]}
            for name in watched
        },
        "machine": common.machine(),
    }


def print_table(r: dict[str, Any]) -> None:
    def kb(value: float | None) -> str:
        return "-" if value is None else f"{value / 1024:.2f} KB"

    print(
        f"{r['sessions']:,} sessions on one gateway, {len(r['game_bytes_per_session'])} game "
        f"workers, held {r['hold_seconds']:g}s with a heartbeat every {r['heartbeat_interval']:g}s"
    )
    print(
        f"login: {r['logged_in']:,} in game in {r['login_seconds']:.2f}s "
        f"({r['logins_per_s']:,.0f}/s, p50 {r['login_p50_ms']:.1f} ms, "
        f"p99 {r['login_p99_ms']:.1f} ms), failed {r['login_failed']}"
    )
    print(f"{'process':10} {'RSS/session':>12} {'USS/session':>12} {'sessions':>9} "
          f"{'RSS/held':>10} {'RSS before':>11} {'RSS after':>10}")  # fmt: skip
    mem = r["memory"]
    print(
        f"{'gateway':10} {kb(r['gateway_bytes_per_session']):>12} "
        f"{kb(r['gateway_uss_bytes_per_session']):>12} {r['sessions']:>9,} "
        f"{kb(r['gateway_bytes_per_session']):>10} "
        f"{mem['gateway']['before']['rss'] / 2**20:>8.1f} MB "
        f"{mem['gateway']['after']['rss'] / 2**20:>7.1f} MB"
    )
    for i, rss in enumerate(r["game_bytes_per_session"]):
        name = f"game{i + 1}"
        held = r["game_sessions"][i]
        print(
            f"{name:10} {kb(rss):>12} {kb(r['game_uss_bytes_per_session'][i]):>12} "
            f"{'?' if held is None else f'{held:,}':>9} "
            f"{kb(r['game_bytes_per_held_session'][i]):>10} "
            f"{mem[name]['before']['rss'] / 2**20:>8.1f} MB "
            f"{mem[name]['after']['rss'] / 2**20:>7.1f} MB"
        )
    drops = " ".join(f"{k}={v}" for k, v in sorted(r["gateway_drops"].items())) or "none"
    print(
        f"closed by the server during the run: {r['closed_by_server']} "
        f"(gateway drops: {drops}); heartbeats sent: {r['heartbeats_sent']:,}"
    )
    hold = " ".join(f"{k}={v}%" for k, v in r["cpu_percent_hold"].items())
    login = " ".join(f"{k}={v}%" for k, v in r["cpu_percent_login"].items())
    print(f"CPU (% of one core) while logging in: {login}; while holding: {hold}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 sessions, heartbeat 5 s, hold 15 s"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--sessions", type=int, help="sessions to hold (default 10,000)")
    parser.add_argument("--hold", type=float, help="seconds to hold them (default 60)")
    parser.add_argument(
        "--heartbeat", type=float, help="seconds between a session's heartbeats (default 30)"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="client processes (more are used above 15,000 sessions)",
    )
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return args
    quick = args.quick
    args.sessions = args.sessions or (2000 if quick else 10_000)
    args.hold = args.hold if args.hold is not None else (15.0 if quick else 60.0)
    args.heartbeat = args.heartbeat or (5.0 if quick else 30.0)
    if args.sessions < 1 or args.client_procs < 1:
        parser.error("--sessions and --client-procs must be at least 1")
    if args.hold < 0 or args.heartbeat <= 0:
        parser.error("--hold must be >= 0 and --heartbeat > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return run_client(args.client)
    common.install_signal_handlers()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sessions-") as tmp:
            report = bench(args, Path(tmp))
    except KeyboardInterrupt:
        common.progress("interrupted; everything started was stopped")
        return 130
    except RuntimeError as exc:
        common.progress(f"failed: {exc}")
        return 1
    finally:
        common.stop_all()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
