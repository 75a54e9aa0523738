#!/usr/bin/env python3
"""Echo throughput and latency of the cluster, as a ratio to a single-process baseline.

    python bench/echo.py [--quick] [--json] [--runs N] [--seconds S]

Two systems under the same load, one after the other, on this machine:

- **cluster**: broker + 1 game worker (``verify_key = false``) + 1 gateway, started with
  ``cluster up --only broker,game,gateway``;
- **baseline**: one uvloop process with an ``asyncio.Protocol`` speaking the same client protocol
  through the same codec (decode every packet, encode every reply, one write per read) -- the
  best a single Python process does, with no bus in between.

Scenarios: ``closed`` (100 sessions, 1 echo in flight each), ``pipelined`` (1,000 sessions, 20 in
flight each: the original dummy's profile), ``latency`` (1 session, 1 in flight: p50/p99 of a
round trip). The load runs in a separate process (uvloop, replies counted by size, requests
pre-encoded) whose CPU is reported, so it is visible when the load client is the limit.
It also samples, at the instants the measured window starts and ends, the CPU time (user +
system) of every server process -- the gateway, broker and game worker, or the baseline's one
process -- and its own, and reports each as microseconds of CPU per echo answered in the window
(``cpu_us_per_echo`` and ``baseline_cpu_us_per_echo`` of each scenario): a figure that moves far
less than throughput when the machine is shared. CPU times tick in 10 ms steps, so a figure below
``10 ms / echoes in the window`` is noise.
Figures are medians of ``--runs`` runs. Nothing here is a test; it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster.codec import Codec  # noqa: E402
from cluster.messages import (  # noqa: E402
    GAME_CLIENT_MESSAGES,
    GameReqEcho,
    GameReqLogin,
    GameResEcho,
    GameResLogin,
)
from cluster.testkit import free_ports, write_config  # noqa: E402

SCENARIOS = {"closed": (100, 1), "pipelined": (1000, 20), "latency": (1, 1)}
REPLY_SIZE = 5 + 18  # a CS_GAME_RES_ECHO packet
LOGIN_REPLY_SIZE = 5 + 11


# -- the load client (a separate process) ---------------------------------------------------------


class LoadSession(asyncio.Protocol):
    """One client: logs in, then keeps `inflight` echoes outstanding; counts replies by size."""

    def __init__(self, account: int, inflight: int, shared: dict[str, Any]) -> None:
        codec = Codec()
        self.login = codec.encode(GameReqLogin(account, b"\0" * 64, 1))
        self.request = codec.encode(GameReqEcho(account, 7))
        self.inflight = inflight
        self.shared = shared
        self.pending = b""
        self.logged_in = asyncio.get_running_loop().create_future()
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.login)

    def data_received(self, data: bytes) -> None:
        if not self.logged_in.done():
            data = self.pending + data
            if len(data) < LOGIN_REPLY_SIZE:
                self.pending = data
                return
            self.pending = data[LOGIN_REPLY_SIZE:]
            self.logged_in.set_result(True)
            return
        size = len(self.pending) + len(data)
        replies, rest = divmod(size, REPLY_SIZE)
        self.pending = b"\0" * rest
        if not replies:
            return
        shared = self.shared
        shared["replies"] += replies
        if shared["timing"]:
            shared["rtts"].append(time.perf_counter_ns() - self.sent_at)
        if shared["running"]:
            self.sent_at = time.perf_counter_ns()
            assert self.transport is not None
            self.transport.write(self.request * replies)

    def start(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.request * self.inflight)


def cpu_seconds(processes: dict[str, Any]) -> dict[str, float]:
    """User + system CPU seconds so far of each of `processes` (psutil.Process by name); a process
    that is gone is left out."""
    import psutil

    out = {}
    for name, process in processes.items():
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        out[name] = times.user + times.system
    return out


async def load(
    port: int, sessions: int, inflight: int, seconds: float, watch: dict[str, int] | None = None
) -> dict[str, Any]:
    """Drive the load and measure one window. `watch` names server processes (role -> pid) whose
    CPU time is sampled at the same instants as the window's reply count."""
    import psutil

    loop = asyncio.get_running_loop()
    shared: dict[str, Any] = {"replies": 0, "running": True, "timing": sessions == 1,
                              "rtts": []}  # fmt: skip
    clients = []
    for account in range(1, sessions + 1):
        _, client = await loop.create_connection(
            lambda a=account: LoadSession(a, inflight, shared), "127.0.0.1", port
        )
        clients.append(client)
    await asyncio.gather(*(c.logged_in for c in clients))
    for client in clients:
        client.start()
    await asyncio.sleep(min(1.0, seconds / 3))  # warm up
    me = psutil.Process()
    watched = {"client": me}
    for name, pid in (watch or {}).items():
        with contextlib.suppress(psutil.Error):
            watched[name] = psutil.Process(pid)
    cpu0, replies0, t0 = me.cpu_times(), shared["replies"], time.perf_counter()
    used0 = cpu_seconds(watched)
    shared["rtts"] = []
    await asyncio.sleep(seconds)
    cpu1, replies1, t1 = me.cpu_times(), shared["replies"], time.perf_counter()
    used1 = cpu_seconds(watched)
    shared["running"] = False
    rtts = sorted(shared["rtts"])
    for client in clients:
        assert client.transport is not None
        client.transport.close()
    echoes = replies1 - replies0
    result = {
        "msgs_per_s": echoes / (t1 - t0),
        "load_cpu_percent": 100
        * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system))
        / (t1 - t0),
        "echoes": echoes,
        "cpu_s": {name: used1[name] - used0[name] for name in used0 if name in used1},
    }
    result["cpu_us_per_echo"] = {
        name: (1e6 * used / echoes if echoes else None) for name, used in result["cpu_s"].items()
    }
    if rtts:
        result["p50_us"] = rtts[len(rtts) // 2] / 1000
        result["p99_us"] = rtts[int(len(rtts) * 0.99)] / 1000
    return result


def run_load(
    port: int, scenario: str, seconds: float, watch: dict[str, int] | None = None
) -> dict[str, Any]:
    """The load, in its own process (so its CPU does not count as the server's)."""
    sessions, inflight = SCENARIOS[scenario]
    watched = ",".join(f"{name}={pid}" for name, pid in (watch or {}).items())
    out = subprocess.run(
        [sys.executable, __file__, "--load-client", str(port), str(sessions), str(inflight),
         str(seconds), *(["--watch", watched] if watched else [])],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def server_pids(system: str, proc: subprocess.Popen[str]) -> dict[str, int]:
    """The processes whose CPU counts as the server's: the baseline's one process, or each role
    under ``cluster up`` (broker, gateway, game) by name."""
    import psutil

    if system != "cluster":
        return {"server": proc.pid}
    from bench.common import role_of

    roles: dict[str, int] = {}
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for child in sorted(children, key=lambda c: c.pid):
        role = role_of(child)
        if role is not None:
            roles.setdefault(role, child.pid)
    return roles


# -- the baseline server --------------------------------------------------------------------------


class BaselineSession(asyncio.Protocol):
    """Decode with the shared codec, answer, one write per read."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.decoder = codec.decoder(GAME_CLIENT_MESSAGES)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        encode = self.codec.encode_fields
        out = []
        for message in self.decoder.feed(data):
            if message.TYPE == GameReqEcho.TYPE:
                out.append(encode(GameResEcho.TYPE, message))
            elif message.TYPE == GameReqLogin.TYPE:
                out.append(encode(GameResLogin.TYPE, (1, message.account_no)))
        if out:
            assert self.transport is not None
            self.transport.write(b"".join(out))


async def baseline_server(port: int) -> None:
    codec = Codec()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BaselineSession(codec), "127.0.0.1", port,
                                      backlog=4096)  # fmt: skip
    print("ready", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


# -- the systems under test -----------------------------------------------------------------------


def start(argv: list[str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready"):
            return proc
        if not line and proc.poll() is not None:
            break
    stop(proc)
    raise RuntimeError(f"{argv[:4]} did not start; see {log}")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_cluster(workdir: Path) -> tuple[subprocess.Popen[str], int]:
    broker, game, login, metrics = free_ports(4)
    config = write_config(workdir / "cluster.toml", {
        "cluster": {"data_dir": str(workdir), "log_level": "warning"},
        "broker": {"bind": f"tcp://127.0.0.1:{broker}"},
        "gateway": {"game_port": game, "login_port": login},
        "workers": {"game": 1, "auth": 0},
        "game": {"verify_key": False},
        "chat": {"enabled": False},
        "monitor": {"metrics_port": metrics},
    })  # fmt: skip
    argv = [sys.executable, "-m", "cluster", "up", "--config", str(config), "--skip-db-init",
            "--only", "broker,game,gateway"]  # fmt: skip
    return start(argv, workdir / "cluster.log"), game


def start_baseline(workdir: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_ports(1)[0]
    return start([sys.executable, __file__, "--baseline-server", str(port)],
                 workdir / "baseline.log"), port  # fmt: skip


def measure(
    system: str, workdir: Path, runs: int, seconds: float, scenarios: list[str]
) -> dict[str, list[dict]]:
    proc, port = start_cluster(workdir) if system == "cluster" else start_baseline(workdir)
    results: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    try:
        watch = server_pids(system, proc)
        for run in range(runs):
            for scenario in scenarios:
                result = run_load(port, scenario, seconds, watch)
                results[scenario].append(result)
                extra = (f" p50 {result['p50_us']:.0f} us p99 {result['p99_us']:.0f} us"
                         if "p50_us" in result else "")  # fmt: skip
                print(f"  {system:8} run {run + 1}/{runs} {scenario:9} "
                      f"{result['msgs_per_s']:>10,.0f} msg/s{extra} "
                      f"(load client CPU {result['load_cpu_percent']:.0f}%)",
                      file=sys.stderr, flush=True)  # fmt: skip
                cpu = " ".join(f"{name} {us:.1f}" for name, us in
                               result["cpu_us_per_echo"].items() if us is not None)  # fmt: skip
                print(f"  {system:8} run {run + 1}/{runs} {scenario:9} CPU us/echo: {cpu}",
                      file=sys.stderr, flush=True)  # fmt: skip
    finally:
        stop(proc)
    return results


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def cpu_per_echo(results: list[dict], names: tuple[str, ...]) -> dict[str, float | None]:
    """Median over runs of each process's CPU microseconds per echo answered (None when not
    measured: the process was gone or no echo was answered)."""
    out: dict[str, float | None] = {}
    for name in names:
        values = [r["cpu_us_per_echo"].get(name) for r in results]
        values = [v for v in values if v is not None]
        out[name] = round(statistics.median(values), 2) if values else None
    return out


def fmt_us(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 3 s per scenario (< 2 min)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--scenario",
        choices=list(SCENARIOS),
        action="append",
        help="run only this scenario (repeatable; the summary needs all three)",
    )
    parser.add_argument("--load-client", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--watch", default="", help=argparse.SUPPRESS)  # role=pid,...
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    run = uvloop.run if uvloop is not None else asyncio.run
    if args.load_client:
        port, sessions, inflight, seconds = args.load_client
        watch = {name: int(pid) for name, _, pid in
                 (item.partition("=") for item in args.watch.split(",") if item)}  # fmt: skip
        print(json.dumps(run(load(int(port), int(sessions), int(inflight), float(seconds),
                                  watch))))  # fmt: skip
        return 0
    if args.baseline_server:
        run(baseline_server(args.baseline_server))
        return 0
    runs, seconds = (1, 3.0) if args.quick else (args.runs, args.seconds)
    scenarios = args.scenario or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="bench-echo-") as tmp:
        measured = {system: measure(system, Path(tmp), runs, seconds, scenarios)
                    for system in ("baseline", "cluster")}  # fmt: skip
    if len(scenarios) < len(SCENARIOS):
        print(json.dumps(measured, indent=1))
        return 0
    report: dict[str, Any] = {"scenarios": {}, "runs": runs, "seconds": seconds,
                              "machine": machine()}  # fmt: skip
    for scenario in ("closed", "pipelined"):
        cluster = median(measured["cluster"][scenario], "msgs_per_s")
        baseline = median(measured["baseline"][scenario], "msgs_per_s")
        report["scenarios"][scenario] = {
            "cluster": round(cluster), "baseline": round(baseline),
            "ratio": round(cluster / baseline, 3),
            "load_cpu_percent": round(median(measured["cluster"][scenario],
                                             "load_cpu_percent")),
        }  # fmt: skip
    latency = measured["cluster"]["latency"]
    report["scenarios"]["latency"] = {
        "p50_us": round(median(latency, "p50_us")), "p99_us": round(median(latency, "p99_us")),
        "baseline_p50_us": round(median(measured["baseline"]["latency"], "p50_us")),
        "baseline_p99_us": round(median(measured["baseline"]["latency"], "p99_us")),
    }  # fmt: skip
    for scenario in SCENARIOS:  # CPU per echo answered in the window, by process
        report["scenarios"][scenario]["cpu_us_per_echo"] = cpu_per_echo(
            measured["cluster"][scenario], ("gateway", "broker", "game", "client")
        )
        report["scenarios"][scenario]["baseline_cpu_us_per_echo"] = cpu_per_echo(
            measured["baseline"][scenario], ("server", "client")
        )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        s = report["scenarios"]
        print(f"{'scenario':10} {'cluster':>12} {'baseline':>12} {'ratio':>7}")
        for name in ("closed", "pipelined"):
            print(f"{name:10} {s[name]['cluster']:>12,} {s[name]['baseline']:>12,} "
                  f"{s[name]['ratio']:>7.2f}")  # fmt: skip
        lat = s["latency"]
        print(
            f"latency    p50 {lat['p50_us']} us, p99 {lat['p99_us']} us "
            f"(baseline p50 {lat['baseline_p50_us']} us, p99 {lat['baseline_p99_us']} us)"
        )
        print()
        print("CPU per echo (us): cluster roles, then the baseline's process; client = load client")
        print(f"{'scenario':10} {'gateway':>8} {'broker':>8} {'game':>8} {'sum':>8} {'client':>8}"
              f" | {'baseline':>8} {'client':>8}")  # fmt: skip
        for name in SCENARIOS:
            c, b = s[name]["cpu_us_per_echo"], s[name]["baseline_cpu_us_per_echo"]
            total = sum(c[k] for k in ("gateway", "broker", "game") if c[k] is not None)
            cells = [c["gateway"], c["broker"], c["game"], total, c["client"]]
            print(f"{name:10} " + " ".join(fmt_us(v) for v in cells)
                  + f" | {fmt_us(b['server'])} {fmt_us(b['client'])}")  # fmt: skip
    return 0


def machine() -> dict[str, Any]:
    import platform

    import psutil

    return {"cpus": psutil.cpu_count(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine()}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
