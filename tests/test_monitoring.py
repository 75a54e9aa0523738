"""Monitoring end to end: samples over the bus, the monitor, status_server rows, `cluster status`,
/metrics, and the console of `cluster up`."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from cluster.messages import GameLoginStatus
from cluster.testkit import wait_until
from dummy.client import GameClient
from tests.harness import run

ROLES = {"broker", "monitor", "gateway", "auth", "game"}


def _monitored(make_cluster, **sections):
    return make_cluster(**sections)


def _start_all(cluster, games: int = 2):
    roles = {"broker": cluster.start("broker"), "monitor": cluster.start("monitor")}
    roles["games"] = [cluster.start("game") for _ in range(games)]
    roles["auth"] = cluster.start("auth")
    roles["gateway"] = cluster.start("gateway")
    return roles


def status_json(cluster) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "status", "--json", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_status(cluster, predicate, timeout: float = 15.0) -> dict:
    """Poll `cluster status --json` until `predicate(snapshot)` holds; that snapshot."""
    seen: list[dict] = []

    def matched() -> dict | None:
        seen.append(status_json(cluster))
        return seen[-1] if predicate(seen[-1]) else None

    return wait_until(matched, "a matching `cluster status`", timeout=timeout, interval=0.3,
                      detail=lambda: json.dumps(seen[-1])[:3000])  # fmt: skip


def by_role(snapshot: dict, role: str) -> list[dict]:
    return [p for p in snapshot["processes"] if p["role"] == role]


def _ident(process) -> str:
    return process.ready_line.split("id=")[1].split()[0]


def test_status_lists_every_role_that_was_started(make_cluster):
    cluster = _monitored(make_cluster)
    roles = _start_all(cluster)
    started = [roles["broker"], roles["monitor"], *roles["games"], roles["auth"], roles["gateway"]]
    snapshot = wait_status(cluster, lambda s: len(s["processes"]) == 6)
    assert {p["role"] for p in snapshot["processes"]} == ROLES
    # Listed as live (heartbeating): each process that was started, by pid and id; none gone.
    assert sorted(p["pid"] for p in snapshot["processes"]) == sorted(r.pid for r in started)
    workers = [*roles["games"], roles["auth"]]  # the roles whose ready line names their id
    assert {_ident(r) for r in workers} <= {p["id"] for p in snapshot["processes"]}
    assert snapshot["gone"] == []
    for process in snapshot["processes"]:
        assert process["host"] and process["heartbeat_age_s"] >= 0
        assert process["memory_mb"] > 1
        assert "cpu_percent" in process and "sessions" in process


def test_counters_move_under_load(make_cluster):
    cluster = _monitored(make_cluster)
    _start_all(cluster)
    clients_count = 20

    async def scenario():
        clients = []
        for account in range(1, clients_count + 1):
            client = await GameClient.connect("127.0.0.1", cluster.game_port)
            assert (await client.login(account)).status == GameLoginStatus.OK
            clients.append(client)
        stop = asyncio.Event()

        async def keep_echoing(client: GameClient) -> None:
            tick = 0
            while not stop.is_set():
                await client.echo(5, first_tick=tick)
                tick += 5

        load = [asyncio.create_task(keep_echoing(c)) for c in clients]

        def loaded(s: dict) -> bool:
            games = by_role(s, "game")
            gateways = by_role(s, "gateway")
            return (
                len(gateways) == 1
                and sum(g["sessions"] for g in games) == clients_count
                and sum(g["session_game"] for g in games) == clients_count
                and all(g["recv_tps"] > 0 for g in games)
                and gateways[0]["sessions_game"] == clients_count
                and gateways[0]["recv_tps"] > 0
                and gateways[0]["send_tps"] > 0
            )

        snapshot = await asyncio.to_thread(wait_status, cluster, loaded)
        stop.set()
        await asyncio.gather(*load)
        return snapshot

    snapshot = run(scenario())
    gateway = by_role(snapshot, "gateway")[0]
    assert gateway["accept_total_game"] == clients_count
    for game in by_role(snapshot, "game"):
        assert game["auth_fps"] > 0 and game["game_fps"] > 0
        assert game["sessions"] > 0  # least-loaded placement used both workers


def test_status_server_rows_are_written_on_each_backend(make_cluster, backend):
    cluster = _monitored(make_cluster, monitor={"db_interval": 1.0}, db=backend.db_section)
    init = subprocess.run(
        [sys.executable, "-m", "cluster", "db", "init", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    roles = _start_all(cluster)
    game_ids = {_ident(g) for g in roles["games"]}
    auth_id = _ident(roles["auth"])

    def writers(table: str) -> set[str]:
        return {row[0] for row in backend.execute(f"SELECT writer FROM status_server.{table}")}

    def busy_battle_rows() -> list[tuple]:
        return backend.execute(  # rows whose sample had a full second of frames
            "SELECT AuthFPS, GameFPS, CommitMemory FROM status_server.battle "
            "WHERE AuthFPS > 0 AND GameFPS > 0"
        )

    wait_until(lambda: game_ids <= writers("battle") and auth_id in writers("login")
               and writers("hardware") and busy_battle_rows(),
               "a row from every writer", timeout=20, interval=0.3,
               detail=lambda: (writers("battle"), writers("login")))  # fmt: skip
    assert all(memory > 0 for _, _, memory in busy_battle_rows())
    hardware = backend.execute("SELECT CPUUsage, AvailableMBytes, date FROM status_server.hardware")
    assert all(available > 0 and date for _, available, date in hardware)


def test_metrics_endpoint_parses_as_prometheus_text(make_cluster):
    cluster = _monitored(make_cluster)
    _start_all(cluster)
    wait_status(cluster, lambda s: len(s["processes"]) == 6)
    url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    roles = {s.labels["role"] for s in families["cluster_sessions"].samples}
    assert roles == ROLES
    assert {s.labels["host"] for s in families["cluster_host_memory_available_bytes"].samples}
    auth_fps = [s.value for s in families["cluster_auth_fps"].samples]
    assert len(auth_fps) == 2 and all(v > 0 for v in auth_fps)


def test_an_ipv6_metrics_host_is_bracketed_in_the_ready_line_and_serves(make_cluster):
    cluster = _monitored(make_cluster, monitor={"metrics_host": "::1"})
    cluster.start("broker")
    monitor = cluster.start("monitor")
    port = cluster.metrics_port
    assert f" metrics=http://[::1]:{port}/metrics " in monitor.ready_line + " "
    assert f" dashboard=http://[::1]:{port}/ " in monitor.ready_line + " "
    with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as response:
        assert response.status == 200


def test_a_silent_process_is_shown_as_gone(make_cluster):
    cluster = _monitored(make_cluster)
    roles = _start_all(cluster)
    victim = roles["games"][0]
    victim_id = _ident(victim)
    wait_status(cluster, lambda s: len(s["processes"]) == 6)
    victim.kill()
    snapshot = wait_status(cluster, lambda s: any(g["id"] == victim_id for g in s["gone"]))
    assert victim_id not in {p["id"] for p in snapshot["processes"]}


def test_status_without_a_broker_exits_1_with_one_line(make_cluster):
    cluster = _monitored(make_cluster)
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "status", "--config", str(cluster.config),
         "--timeout", "1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot reach the broker" in result.stderr


def test_status_without_a_monitor_exits_1_with_one_line(make_cluster):
    cluster = _monitored(make_cluster)
    cluster.start("broker")
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "status", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "no monitor" in result.stderr


def test_status_table_shows_every_process(make_cluster):
    cluster = _monitored(make_cluster)
    _start_all(cluster, games=1)
    wait_status(cluster, lambda s: len(s["processes"]) == 5)
    result = subprocess.run(
        [sys.executable, "-m", "cluster", "status", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["ROLE", "HOST", "PID"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(ROLES)


def test_up_off_a_terminal_logs_a_summary_line(make_cluster):
    cluster = _monitored(make_cluster, monitor={"summary_interval": 1.0},
                         workers={"game": 1, "auth": 1})  # fmt: skip
    up = cluster.start("up")
    match = up.wait_log(r"procs=(\d+) ", timeout=20)
    assert int(match.group(1)) >= 1
    assert up.stop() == 0


def test_up_on_a_terminal_shows_the_login_game_and_chat_screens(make_cluster):
    cluster = _monitored(make_cluster, workers={"game": 1, "auth": 1, "chat": 1},
                         chat={"enabled": True})  # fmt: skip
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster", "up", "--config", str(cluster.config)],
        stdin=subprocess.DEVNULL, stdout=secondary, stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120", "LINES": "50"},
    )  # fmt: skip
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(main, 65536)
                except OSError:
                    break
            text = screen.decode(errors="replace")
            last = text.rsplit("\x1b[2J", 1)[-1]  # a redraw may arrive in pieces: wait for all
            shown = ("LoginServer", "GameServer", "ChatServer (chat workers: 1)")
            if all(name in last for name in shown) and text.count("\x1b[2J") >= 2:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        os.close(main)
    text = screen.decode(errors="replace")
    last = text.rsplit("\x1b[2J", 1)[-1]
    assert "LoginServer" in last and "GameServer" in last, text[-3000:]
    assert "ChatServer (chat workers: 1)" in last, text[-3000:]
    assert "LoginSuccess TPS" in last and "Game Mode" in last and "SessionKey Miss" in last
    assert " Chat : SESSION 0  PLAYER 0" in last  # the MonitoringServer's line for chat
