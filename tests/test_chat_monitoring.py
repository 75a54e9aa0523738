"""Monitoring of the chat workers: their status_server.chat rows (the DB layer, the monitor's
write_rows, and end to end over the bus), `cluster status` and /metrics.

The end-to-end test plays the chat workers and a gateway itself: a scripted bus peer sends their
1-second samples (STATS, the contract of cluster.stats) to a real broker and monitor."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cluster import bus, metrics
from cluster.db import ChatSample, Database
from cluster.monitor import Monitor
from cluster.status import as_json, as_table, figures, rows
from cluster.testkit import wait_until
from dummy.client import ChatClient
from tests.backends import with_db
from tests.harness import ScriptedPeer, run
from tests.test_monitoring import by_role, wait_status

CHAT_COLUMNS = "CPUUsage, CommitMemory, PacketPool, SessionAll, SessionLogin, writer"


def chat_sample(ident: str, **fields: Any) -> dict[str, Any]:
    """A chat worker's sample as the contract has it (every role field), taken now."""
    sample: dict[str, Any] = {
        "id": ident, "role": "chat", "host": "chat-host", "pid": 4242, "time": time.time(),
        "cpu_percent": 12.6, "memory_mb": 48.4, "packet_pool": 7, "sessions": 30,
        "session_auth": 2, "session_login": 28, "sectors_occupied": 11, "sector_max": 4,
        "message_tps": 150.0, "delivery_tps": 1200.0, "cast_in_tps": 30.0, "cast_out_tps": 40.0,
        "update_tps": 49.5, "recv_tps": 160.0, "send_tps": 1200.0, "pending_keys": 3,
        "key_miss": 5, "login_tps": 2.0, "drops": {"timeout": 1},
        "hw": {"cpu_total": 20.0, "available_mb": 4096.0, "nonpaged_mb": 100.0,
               "net_recv_kbps": 1.0, "net_send_kbps": 1.0},
    }  # fmt: skip
    sample.update(fields)
    return sample


def gateway_sample(ident: str) -> dict[str, Any]:
    return {
        "id": ident, "role": "gateway", "host": "chat-host", "pid": 4243, "time": time.time(),
        "cpu_percent": 3.0, "memory_mb": 40.0, "packet_pool": 1, "sessions": 45,
        "sessions_login": 0, "sessions_game": 0, "sessions_chat": 45, "accept_total_login": 0,
        "accept_total_game": 0, "accept_total_chat": 60, "accept_tps_login": 0.0,
        "accept_tps_game": 0.0, "accept_tps_chat": 2.0, "recv_tps": 160.0, "send_tps": 1200.0,
    }  # fmt: skip


# -- the DB layer -----------------------------------------------------------------------------


def test_chat_rows_land_with_their_writer_and_the_current_date(backend):
    async def scenario(db: Database) -> None:
        await db.insert_chat(ChatSample(14, 300, 25, 1000, 950, writer="chat#1"))
        await db.insert_chat(ChatSample(0, 0, 0, 0, 0, writer="chat#2"))

    before = datetime.datetime.now().replace(microsecond=0)
    with_db(backend.config(), scenario)
    after = datetime.datetime.now()
    rows = backend.execute(f"SELECT {CHAT_COLUMNS}, date FROM status_server.chat ORDER BY no")
    assert [tuple(row[:-1]) for row in rows] == [
        (14, 300, 25, 1000, 950, "chat#1"),
        (0, 0, 0, 0, 0, "chat#2"),
    ]
    slack = datetime.timedelta(seconds=1)
    for *_, date in rows:
        if isinstance(date, str):  # SQLite keeps the text
            date = datetime.datetime.fromisoformat(date)
        assert before - slack <= date <= after + slack


# -- the monitor's rows -----------------------------------------------------------------------


def test_write_rows_writes_one_chat_row_per_live_chat_worker(backend):
    monitor = Monitor()
    monitor.record(chat_sample("chat@h/1/aaaa"))
    monitor.record(chat_sample("chat@h/2/bbbb", sessions=10, session_login=9, cpu_percent=0.4,
                               memory_mb=20.5, packet_pool=0))  # fmt: skip
    monitor.record(chat_sample("chat@h/3/cccc", sessions=99))
    monitor.entries["chat@h/3/cccc"].received_at -= 60  # gone: no row
    monitor.record(gateway_sample("gateway@h/4/dddd"))  # gateways write no row
    monitor.record({"id": "chat@h/5/eeee", "role": "chat", "time": time.time(),
                    "sessions": "many", "session_login": True})  # fmt: skip

    async def scenario(db: Database) -> int:
        return await monitor.write_rows(db)

    written = with_db(backend.config(), scenario)
    rows = backend.execute(f"SELECT {CHAT_COLUMNS} FROM status_server.chat ORDER BY writer")
    assert [tuple(row) for row in rows] == [
        (13, 48, 7, 30, 28, "chat@h/1/aaaa"),  # 12.6 % and 48.4 MB rounded
        (0, 20, 0, 10, 9, "chat@h/2/bbbb"),
        (0, 0, 0, 0, 0, "chat@h/5/eeee"),  # odd values count as 0
    ]
    hosts = backend.execute("SELECT writer FROM status_server.hardware")
    assert [row[0] for row in hosts] == ["chat-host"]
    assert written == len(rows) + len(hosts)
    assert backend.execute("SELECT COUNT(*) FROM status_server.battle")[0][0] == 0


# -- `cluster status` ---------------------------------------------------------------------------


def test_status_table_shows_chat_workers_and_their_figures():
    snapshot = {
        "processes": [
            {**gateway_sample("gateway@h/4/dddd"), "heartbeat_age_s": 0.3},
            {**chat_sample("chat@h/1/aaaa"), "heartbeat_age_s": 0.2},
        ],
        "gone": [{**chat_sample("chat@h/2/bbbb"), "heartbeat_age_s": 9.0}],
    }
    lines = as_table(snapshot).splitlines()
    assert lines[0].split() == ["ROLE", "HOST", "PID", "HB", "AGE", "SESSIONS", "TPS", "CPU",
                                "%", "MEM", "MB", "ID", "FIGURES"]  # fmt: skip
    chat = next(line for line in lines if line.startswith("chat "))
    assert chat.split()[:9] == ["chat", "chat-host", "4242", "0.2s", "30", "150", "12.6",
                                "48.4", "chat@h/1/aaaa"]  # fmt: skip
    assert chat.split()[9:] == [
        "players=28", "auth=2", "deliver_tps=1200", "update_tps=49.5", "sectors=11",
        "sector_max=4", "keys=3", "key_miss=5",
    ]  # fmt: skip
    gateway = next(line for line in lines if line.startswith("gateway "))
    assert gateway.split()[9:] == ["login=0", "game=0", "chat=45"]
    assert lines[-1] == "GONE chat chat@h/2/bbbb (silent 9s)"
    data = json.loads(as_json(snapshot))
    chat_row = next(p for p in data["processes"] if p["role"] == "chat")
    assert chat_row["tps"] == 150.0 and chat_row["key_miss"] == 5
    assert figures({"role": "chat"}) == ""  # fields it does not have are left out


# -- end to end over the bus --------------------------------------------------------------------


def test_chat_workers_samples_reach_rows_status_and_metrics(make_cluster, backend):
    cluster = make_cluster(monitor={"db_interval": 1.0}, db=backend.db_section)
    init = subprocess.run(
        [sys.executable, "-m", "cluster", "db", "init", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    cluster.start("broker")
    cluster.start("monitor")
    peer = ScriptedPeer(cluster.endpoint, "chat", interval=0.5)
    ids = ("chat@chat-host/4242/0000aaaa", "chat@chat-host/4244/0000bbbb")
    gateway_id = "gateway@chat-host/4243/0000cccc"

    def send_samples() -> None:
        """One round of 1-second samples, as the chat workers and a gateway send them."""
        for sample in (
            chat_sample(ids[0]),
            chat_sample(ids[1], pid=4244, sessions=12, session_login=12, session_auth=0,
                        message_tps=60.0, cpu_percent=3.2, memory_mb=31.0, packet_pool=0),
            gateway_sample(gateway_id),
        ):  # fmt: skip
            sample["time"] = time.time()
            peer.send([bus.STATS, bus.pack_info(sample)])

    def chat_rows() -> list[tuple[Any, ...]]:
        send_samples()
        return backend.execute(f"SELECT {CHAT_COLUMNS} FROM status_server.chat")

    try:
        peer.expect(bus.WELCOME)
        wait_until(lambda: {row[-1] for row in chat_rows()} >= set(ids),
                   "a status_server.chat row from each chat worker", timeout=20, interval=0.3,
                   detail=chat_rows)  # fmt: skip
        rows = {tuple(row) for row in chat_rows()}
        assert (13, 48, 7, 30, 28, ids[0]) in rows
        assert (3, 31, 0, 12, 12, ids[1]) in rows
        assert {row[-1] for row in rows} == set(ids)  # no chat row from the gateway

        def both_live(snapshot: dict[str, Any]) -> bool:
            send_samples()
            return len(by_role(snapshot, "chat")) == 2 and len(by_role(snapshot, "gateway")) == 1

        snapshot = wait_status(cluster, both_live)
        chat = {p["id"]: p for p in by_role(snapshot, "chat")}
        assert chat[ids[0]]["tps"] == 150.0 and chat[ids[1]]["tps"] == 60.0  # MessageTPS
        assert chat[ids[0]]["session_login"] == 28 and chat[ids[0]]["key_miss"] == 5
        assert by_role(snapshot, "gateway")[0]["sessions_chat"] == 45

        send_samples()
        table = subprocess.run(
            [sys.executable, "-m", "cluster", "status", "--config", str(cluster.config)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        chat_lines = [line for line in lines if line.startswith("chat ")]
        assert len(chat_lines) == 2 and "players=28" in " ".join(chat_lines)
        roles = [line.split()[0] for line in lines[1:] if not line.startswith("GONE")]
        assert roles.index("gateway") < roles.index("chat")  # chat workers are listed last

        send_samples()
        url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        logins = {s.labels["process"]: s.value for s in families["cluster_session_login"].samples}
        assert logins == {ids[0]: 28.0, ids[1]: 12.0}
        assert {s.labels["role"] for s in families["cluster_message_tps"].samples} == {"chat"}
        assert families["cluster_key_misses"].type == "counter"  # parser names it sans _total
        assert families["cluster_key_misses"].documentation.startswith("Chat worker")
        chat_port = [s for s in families["cluster_port_sessions"].samples
                     if s.labels["port"] == "chat"]  # fmt: skip
        assert [(s.labels["process"], s.value) for s in chat_port] == [(gateway_id, 45.0)]
    finally:
        peer.close()


# -- a real chat worker -------------------------------------------------------------------------


def test_a_chat_worker_with_players_gets_its_rows_and_figures(make_cluster, backend):
    cluster = make_cluster(monitor={"db_interval": 1.0}, db=backend.db_section,
                           chat={"enabled": True})  # fmt: skip
    init = subprocess.run(
        [sys.executable, "-m", "cluster", "db", "init", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    cluster.start("broker")
    cluster.start("monitor")
    worker = cluster.start("chat")
    cluster.start("gateway")
    ident = worker.ready_line.split("id=")[1].split()[0]
    assert ident.startswith("chat@")
    sectors = [(3, 4), (3, 4), (7, 7)]  # two occupied sectors, two players in the busiest

    def busy(snapshot: dict[str, Any]) -> bool:
        chat, gateways = by_role(snapshot, "chat"), by_role(snapshot, "gateway")
        return (
            len(chat) == 1 and len(gateways) == 1
            and chat[0]["sessions"] == 3 and chat[0]["session_login"] == 3
            and chat[0]["session_auth"] == 0
            and chat[0]["sectors_occupied"] == 2 and chat[0]["sector_max"] == 2
            and chat[0]["message_tps"] > 0 and chat[0]["delivery_tps"] > 0
            and chat[0]["update_tps"] > 0 and chat[0]["login_tps"] == 0
            and gateways[0]["sessions_chat"] == 3 and gateways[0]["accept_total_chat"] == 3
        )  # fmt: skip

    def rows() -> list[tuple[Any, ...]]:
        return backend.execute(f"SELECT {CHAT_COLUMNS} FROM status_server.chat")

    async def scenario() -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
        clients = []
        for account, sector in enumerate(sectors, start=1):
            client = await ChatClient.connect("127.0.0.1", cluster.chat_port)
            assert (await client.login(account, f"id{account}", f"nick{account}")).status == 1
            await client.move(*sector)
            clients.append(client)
        stop = asyncio.Event()

        async def chatting() -> None:
            while not stop.is_set():
                for client in clients:
                    client.say("hello")
                    await client.writer.drain()
                    await client.quiet(0.05)  # read what it hears, so nothing backs up
                await asyncio.sleep(0.1)

        talk = asyncio.create_task(chatting())
        try:
            snapshot = await asyncio.to_thread(wait_status, cluster, busy, 20.0)
            row = await asyncio.to_thread(
                wait_until, lambda: [r for r in rows() if r[-1] == ident and r[3:5] == (3, 3)],
                "a chat row with the worker's 3 players", timeout=20, interval=0.3, detail=rows,
            )  # fmt: skip
        finally:
            stop.set()
            await talk
            for client in clients:
                await client.close()
        return snapshot, row

    snapshot, row = run(scenario())
    chat = by_role(snapshot, "chat")[0]
    assert chat["id"] == ident
    assert chat["delivery_tps"] >= chat["message_tps"]  # each message reaches its sender at least
    assert row[0][1] > 0  # CommitMemory
    url = f"http://127.0.0.1:{cluster.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    for name in ("cluster_session_login", "cluster_message_tps", "cluster_update_tps",
                 "cluster_key_misses", "cluster_sectors_occupied"):  # fmt: skip
        assert [s.labels["process"] for s in families[name].samples] == [ident], name
    # every figure the chat worker sends is exported with a HELP text of its own ("tps" is
    # the column `cluster status` adds)
    numeric = [k for k, v in chat.items() if metrics.is_number(v)
               and k not in metrics.SKIPPED and k != "tps"]  # fmt: skip
    assert [k for k in numeric if k not in metrics.FIELDS] == []


def test_status_table_shows_web_logins_and_their_figures():
    snapshot = {"processes": [{
        "id": "web@h/1/x", "role": "web", "host": "h", "pid": 1, "heartbeat_age_s": 0.2,
        "sessions": 0, "cpu_percent": 1.0, "memory_mb": 30.0, "login_ok_tps": 12.0,
        "login_ok": 40, "login_invalid": 3, "login_locked": 1, "login_rate_limited": 7,
        "accounts_locked": 1,
    }], "gone": []}  # fmt: skip
    (row,) = rows(snapshot)
    assert row["tps"] == 12.0
    assert figures(row) == "ok=40 invalid=3 locked=1 limited=7 accounts_locked=1"
