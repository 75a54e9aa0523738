"""The monitor's live dashboard: its in-memory history (bounded), its JSON API, the DB history
endpoint on both backends, hostile HTTP requests, and the page itself in a real headless Chromium
against a live cluster under load."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from cluster.dashboard import history as hist
from cluster.dashboard import server as web
from cluster.db import MAX_STATUS_ROWS, BattleSample, Database
from cluster.messages import GameLoginStatus, LoginStatus
from cluster.monitor import Monitor
from cluster.testkit import wait_until
from dummy.client import GameClient, login_once
from tests.backends import with_db
from tests.harness import run
from tests.test_chat import chatter
from tests.test_chat_monitoring import chat_sample, gateway_sample
from tests.test_login import create_accounts

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def game_sample(ident: str, **fields: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "id": ident, "role": "game", "host": "game-host", "pid": 77, "time": time.time(),
        "cpu_percent": 30.5, "memory_mb": 80.25, "packet_pool": 3, "sessions": 10,
        "session_auth": 2, "session_game": 8, "auth_fps": 49.0, "game_fps": 50.0,
        "drops": {"timeout": 0},
        "hw": {"cpu_total": 40.0, "available_mb": 2048.0, "nonpaged_mb": 90.0,
               "net_recv_kbps": 3.5, "net_send_kbps": 7.25},
    }  # fmt: skip
    sample.update(fields)
    return sample


def auth_sample(ident: str, **fields: Any) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "id": ident, "role": "auth", "host": "game-host", "pid": 78, "time": time.time(),
        "cpu_percent": 5.0, "memory_mb": 60.0, "packet_pool": 0, "sessions": 1,
        "login_success_tps": 12.0, "login_total": 100, "login_latency_min_ms": 1.5,
        "login_latency_avg_ms": 3.25, "login_latency_max_ms": 9.0,
    }  # fmt: skip
    sample.update(fields)
    return sample


# -- an in-process monitor HTTP port ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(monitor: Monitor, db: Database | None = None) -> AsyncIterator[int]:
    """The monitor's HTTP responder on a free loopback port; fails the test if any connection
    handler raised (the loop's exception handler sees those)."""
    loop = asyncio.get_running_loop()
    raised: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: raised.append(context))
    site = web.Site(monitor, db)
    server = await asyncio.start_server(
        lambda r, w: web.handle(site, r, w), "127.0.0.1", 0, limit=web.MAX_LINE
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        assert raised == [], raised


async def request(
    port: int, raw: bytes, timeout: float = 15.0
) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` bytes, read the whole answer: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(timeout):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return status, headers, body


async def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await request(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def get_json(port: int, path: str) -> Any:
    status, headers, body = await get(port, path)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


# -- the in-memory history -------------------------------------------------------------------------


def test_series_api_has_every_charted_figure_and_since_returns_only_new_points():
    monitor = Monitor()
    game, auth = "game@game-host/77/0000a1b2", "auth@game-host/78/0000c3d4"
    chat, gateway = "chat@h/1/aaaa", "gateway@h/2/bbbb"

    async def scenario() -> None:
        async with serving(monitor) as port:
            for tick in range(3):
                monitor.record(game_sample(game, drops={"timeout": 4 * tick}, time=1000.0 + tick))
                monitor.record(auth_sample(auth))
                monitor.record(chat_sample(chat))
                monitor.record(gateway_sample(gateway))
            full = await get_json(port, "/api/series")
            assert full["window"] == 3600
            entries = {e["key"]: e for e in full["series"]}
            assert set(entries) == {
                "host:game-host", "host:chat-host", f"process:{game}", f"process:{auth}",
                f"process:{chat}", f"process:{gateway}",
            }  # fmt: skip
            g = entries[f"process:{game}"]
            assert (g["kind"], g["role"], g["host"], g["label"]) == (
                "process", "game", "game-host", "game a1b2"
            )  # fmt: skip
            assert len(g["t"]) == 3 and g["t"] == sorted(g["t"])
            assert g["fields"]["auth_fps"] == [49.0] * 3
            assert g["fields"]["session_game"] == [8.0] * 3
            assert g["fields"]["memory_mb"] == [80.25] * 3
            # drops: the per-second rate over the samples' own times (4 per 1 s); none at first
            assert g["fields"]["drops.timeout"] == [None, 4.0, 4.0]
            a = entries[f"process:{auth}"]["fields"]
            assert a["login_success_tps"] == [12.0] * 3
            assert a["login_latency_avg_ms"] == [3.25] * 3
            assert a["login_latency_max_ms"] == [9.0] * 3
            c = entries[f"process:{chat}"]["fields"]
            assert c["session_login"] == [28.0] * 3 and c["message_tps"] == [150.0] * 3
            assert c["delivery_tps"] == [1200.0] * 3
            gw = entries[f"process:{gateway}"]["fields"]
            assert gw["sessions_chat"] == [45.0] * 3 and "accept_total_chat" not in gw
            # one host point per second at most, whoever of its processes sends the figures
            host = entries["host:game-host"]
            assert len(host["t"]) == 1 and host["kind"] == "host"
            assert host["fields"]["net_send_kbps"] == [7.25]
            assert host["fields"]["cpu_total"] == [40.0]

            # incremental: nothing new, then exactly the newer points
            cursor = full["now"]
            assert cursor >= max(t for e in full["series"] for t in e["t"])
            empty = await get_json(port, f"/api/series?since={cursor!r}")
            assert all(e["t"] == [] for e in empty["series"])
            assert {e["key"] for e in empty["series"]} == set(entries)  # still listed
            monitor.record(game_sample(game, drops={"timeout": 12}, time=1003.0, auth_fps=7))
            newer = await get_json(port, f"/api/series?since={empty['now']!r}")
            moved = {e["key"]: e for e in newer["series"] if e["t"]}
            assert set(moved) == {f"process:{game}"}
            assert moved[f"process:{game}"]["fields"]["auth_fps"] == [7.0]
            assert moved[f"process:{game}"]["fields"]["drops.timeout"] == [4.0]
            assert moved[f"process:{game}"]["t"][0] > empty["now"]

    run(scenario())


def test_the_history_is_bounded_to_history_seconds_whatever_is_fed(caplog):
    clock = [1000.0]
    history = hist.History(10, clock=lambda: clock[0])
    monitor = Monitor(10)
    monitor.history = history
    for n in range(35):  # more samples than history_seconds, one a second
        clock[0] += 1
        drops = {f"reason{r}": n for r in range(30)}  # more reasons than are charted
        monitor.record(game_sample("game@h/1/aaaa", time=clock[0], drops=drops, sessions=n))
    ring = history.processes["game@h/1/aaaa"]
    assert len(ring) == 10 and ring.capacity == 10
    assert len(ring.fields) <= hist.MAX_FIELDS
    assert sum(name.startswith("drops.") for name in ring.fields) == hist.MAX_DROP_REASONS
    assert all(len(points) == 10 for points in ring.fields.values())
    assert ring.times.itemsize == 8 and ring.times.typecode == "d"  # packed, not objects
    series = history.series()["series"]
    process = next(e for e in series if e["kind"] == "process")
    assert process["fields"]["sessions"] == [float(n) for n in range(25, 35)]  # the newest 10
    assert process["t"] == sorted(process["t"])
    # `since` in the middle of a wrapped ring
    middle = process["t"][4]
    assert history.series(middle)["series"][1]["fields"]["sessions"] == [
        float(n) for n in range(30, 35)
    ]

    # a silent process is forgotten once its last point leaves the window
    clock[0] += 11
    monitor.record(game_sample("game@h/2/bbbb", time=clock[0]))
    assert set(history.processes) == {"game@h/2/bbbb"}

    # sources are capped: a flood of identities cannot grow memory without bound
    for n in range(hist.MAX_SOURCES + 50):
        monitor.record(auth_sample(f"auth@h/{n}/x", host="h"))
    assert len(history.processes) + len(history.hosts) == hist.MAX_SOURCES
    assert history.ignored > 0
    capped = [r for r in caplog.records if "not charted" in r.getMessage()]
    assert len(capped) == 1 and capped[0].levelname == "WARNING"  # said once, not per sample


def test_odd_sample_values_are_left_out_never_raised_on():
    history = hist.History(60)
    monitor = Monitor(60)
    monitor.history = history
    odd: list[Any] = [None, "12", True, math.nan, math.inf, [1], {"a": 1}, -math.inf]
    for value in odd:
        monitor.record(game_sample("game@h/1/aaaa", cpu_percent=value, auth_fps=value,
                                   drops={"x": value, 3: 4, "y" * 500: 1}, time=value,
                                   hw={"cpu_total": value}))  # fmt: skip
    monitor.record(game_sample("game@h/1/aaaa", hw="not a map", drops=["no"]))
    monitor.record({"id": 5, "role": "game"})  # no string id: not kept, not charted
    series = {e["key"]: e for e in history.series()["series"]}
    fields = series["process:game@h/1/aaaa"]["fields"]
    assert fields["cpu_percent"] == [None] * len(odd) + [30.5]
    assert all(len(name) <= len("drops.") + hist.MAX_NAME for name in fields)
    json.dumps(history.series(), allow_nan=False)  # valid JSON for the browser: no NaN


# -- hostile requests ------------------------------------------------------------------------------

HOSTILE = [
    (b"\x00\xff garbage\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"GET / SPDY/9\r\n\r\n", 400),
    (b"GET nothing-absolute HTTP/1.1\r\n\r\n", 400),
    (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 100_000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 500 + b"\r\n", 431),
    (b"POST /api/series HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405),
    (b"DELETE / HTTP/1.1\r\n\r\n", 405),
    (b"GET /../pyproject.toml HTTP/1.1\r\n\r\n", 404),
    (b"GET /static/index.html HTTP/1.1\r\n\r\n", 404),
    (b"GET /history.py HTTP/1.1\r\n\r\n", 404),
    (b"GET /api/series?since=abc HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?since=nan HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?since=inf HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?since=-1 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?since=1e400 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?since= HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?since=1&since=2 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/series?" + b"a=1&" * 40 + b" HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=account HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle;DROP%20TABLE%20x HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle&limit=0 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle&limit=-5 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle&limit=1.5 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle&limit=99999999999 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle&since=1e99 HTTP/1.1\r\n\r\n", 400),
    (b"GET /api/history?table=battle&until=%FF%FE HTTP/1.1\r\n\r\n", 400),
]


def test_hostile_requests_get_a_4xx_and_the_port_keeps_serving(monkeypatch):
    monitor = Monitor()
    monitor.record(game_sample("game@h/1/aaaa"))
    monkeypatch.setattr(web, "READ_TIMEOUT", 0.5)

    async def scenario() -> None:
        async with serving(monitor) as port:
            for raw, expected in HOSTILE:
                status, headers, body = await request(port, raw)
                assert status == expected, (raw[:80], status, body)
                assert headers["content-type"].startswith("text/plain")
                assert body.endswith(b"\n") and body.count(b"\n") == 1  # one line
            # a client that says nothing (or stops half way) is answered 408 and let go
            assert (await request(port, b""))[0] == 408
            assert (await request(port, b"GET / HTTP/1.1\r\nHost: x\r\n"))[0] == 408
            # one that hangs up at once costs nothing
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            # many at once, then the real endpoints still answer
            answers = await asyncio.gather(*(request(port, raw) for raw, _ in HOSTILE * 3))
            assert [a[0] for a in answers] == [e for _, e in HOSTILE * 3]
            status, headers, body = await get(port, "/")
            assert status == 200 and b"dashboard.js" in body
            assert "default-src 'self'" in headers["content-security-policy"]
            assets = [("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css"),
                      ("/metrics", "text/plain"), ("/status.json", "application/json")]  # fmt: skip
            for path, ctype in assets:
                status, headers, body = await get(port, path)
                assert status == 200 and headers["content-type"].startswith(ctype), path
                assert body
            assert (await get_json(port, "/api/series?since=0"))["series"]

    run(scenario())


def test_no_database_gives_503_not_an_error():
    async def scenario() -> None:
        async with serving(Monitor()) as port:
            status, _, body = await get(port, "/api/history?table=battle")
            assert status == 503 and body == b"no database\n"

    run(scenario())


# -- the DB history --------------------------------------------------------------------------------


def test_status_rows_read_back_what_write_rows_wrote_on_each_backend(backend):
    monitor = Monitor()
    game, auth, chat = "game@game-host/77/0000a1b2", "auth@game-host/78/0000c3d4", "chat@h/1/aaaa"
    monitor.record(game_sample(game))
    monitor.record(auth_sample(auth))
    monitor.record(chat_sample(chat))
    old = ["old-1", "old-2", "old-3"]

    async def scenario(db: Database) -> dict[str, Any]:
        for writer in old:  # rows dated back, to check range, order and limit
            await db.insert_battle(BattleSample(1, 2, 3, 4, 5, 6, 7, 8, writer=writer))
        backend.execute("UPDATE status_server.battle SET date = CASE writer"
                        " WHEN 'old-1' THEN '2020-01-01 10:00:00'"
                        " WHEN 'old-2' THEN '2020-01-01 11:00:00'"
                        " ELSE '2020-01-01 12:00:00' END")  # fmt: skip
        before = datetime.datetime.now().replace(microsecond=0) - datetime.timedelta(seconds=2)
        assert await monitor.write_rows(db) == 5  # battle, login, chat, two hosts
        after = datetime.datetime.now() + datetime.timedelta(seconds=2)
        found: dict[str, Any] = {}
        for table in ("battle", "login", "chat", "hardware"):
            found[table] = await db.status_rows(table, before, after, 100)
        found["old"] = await db.status_rows(
            "battle", datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 2), 100
        )
        found["old_newest_two"] = await db.status_rows(
            "battle", datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 2), 2
        )
        found["none"] = await db.status_rows(
            "battle", datetime.datetime(2019, 1, 1), datetime.datetime(2019, 1, 2), 10
        )
        for table, limit in [("account", 1), ("battle", 0), ("battle", MAX_STATUS_ROWS + 1)]:
            with pytest.raises(ValueError):
                await db.status_rows(table, before, after, limit)
        # the HTTP endpoint serves the same rows, with Unix times
        async with serving(monitor, db) as port:
            since, until = int(before.timestamp()), int(after.timestamp()) + 1
            found["http"] = await get_json(
                port, f"/api/history?table=battle&since={since}&until={until}&limit=10"
            )
            found["http_old"] = await get_json(
                port, "/api/history?table=battle&since=0&until=" + str(until) + "&limit=2"
            )
        return found

    found = with_db(backend.config(), scenario)
    (battle,) = found["battle"]
    assert battle.writer == game
    assert battle.values == {
        "CPUUsage": 30, "CommitMemory": 80, "PacketPool": 3, "AuthFPS": 49, "GameFPS": 50,
        "SessionAll": 10, "SessionAuth": 2, "SessionGame": 8,
    }  # fmt: skip
    assert [r.writer for r in found["login"]] == [auth]
    assert found["login"][0].values["LoginSuccessTPS"] == 12
    assert [r.writer for r in found["chat"]] == [chat]
    assert found["chat"][0].values["SessionLogin"] == 28
    assert sorted(r.writer for r in found["hardware"]) == ["chat-host", "game-host"]
    assert {r.writer: r.values["AvailableMBytes"] for r in found["hardware"]}["game-host"] == 2048
    assert [r.writer for r in found["old"]] == ["old-1", "old-2", "old-3"]  # oldest first
    assert found["old"][0].date == datetime.datetime(2020, 1, 1, 10)
    assert [r.writer for r in found["old_newest_two"]] == ["old-2", "old-3"]
    assert found["none"] == []

    http = found["http"]
    assert http["table"] == "battle" and http["truncated"] is False
    assert http["columns"][:3] == ["CPUUsage", "CommitMemory", "PacketPool"]
    (row,) = http["rows"]
    assert row["writer"] == game and row["AuthFPS"] == 49 and row["SessionGame"] == 8
    assert abs(row["t"] - time.time()) < 60
    # limit keeps the newest rows: the monitor's, after the crafted old ones
    assert [r["writer"] for r in found["http_old"]["rows"]] == ["old-3", game]
    assert found["http_old"]["truncated"] is True


# -- the page in a real browser --------------------------------------------------------------------


def _need_browser() -> None:
    """Skip (fail under CI=true) when selenium, Chromium or chromedriver is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        why = f"real-browser test needs {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI=true needs it")
        pytest.skip(why)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium driven by selenium, recording the browser console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def start_loaded_cluster(make_cluster: Any) -> Any:
    """Broker, monitor (DB rows every second), gateway, auth, game and chat workers, with
    accounts in the DB."""
    cluster = make_cluster(chat={"enabled": True}, monitor={"db_interval": 1.0})
    init = subprocess.run(
        [sys.executable, "-m", "cluster", "db", "init", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    cluster.accounts = create_accounts(cluster, 30)
    cluster.roles = {role: cluster.start(role) for role in
                     ("broker", "monitor", "game", "auth", "chat", "gateway")}  # fmt: skip
    return cluster


async def drive_load(cluster: Any, stop: asyncio.Event) -> None:
    """Logins on the login port, game logins and echo, chat messages, and a client dropped for
    a malformed packet, until `stop`."""
    accounts = cluster.accounts
    for account in accounts[:10]:
        reply = await login_once("127.0.0.1", cluster.login_port, account.no, account.key)
        assert reply.status == LoginStatus.OK, reply
    games = []
    for account in accounts[10:16]:
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await client.login(account.no)).status == GameLoginStatus.OK
        games.append(client)
    chats = [await chatter(cluster.chat_port, a.no, sector=(3, 3)) for a in accounts[16:20]]
    tick = 0
    logins = 0
    while not stop.is_set():
        bad = await GameClient.connect("127.0.0.1", cluster.game_port)
        bad.send_raw(b"\xff" * 64)  # a malformed packet: dropped, counted by reason
        await bad.wait_closed()
        account = accounts[logins % 10]
        await login_once("127.0.0.1", cluster.login_port, account.no, account.key)
        logins += 1
        await asyncio.gather(*(g.echo(2, first_tick=tick) for g in games))
        tick += 2
        for c in chats:
            c.say(f"hello {tick}")
        for c in chats:
            await c.messages(len(chats))
        await asyncio.sleep(0.1)
    for client in [*games, *chats]:
        await client.close()


@contextlib.contextmanager
def loaded(cluster: Any) -> Iterator[None]:
    """`drive_load` on a thread of its own for the duration of the block."""
    import threading

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            loop.run_until_complete(drive_load(cluster, stop))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    assert not errors, errors


def chart_counts(driver: Any) -> dict[str, dict[str, Any]]:
    return driver.execute_script("return window.dashboard ? window.dashboard.charts : {}") or {}


def severe(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_the_page_charts_a_live_cluster_in_chromium(make_cluster):
    _need_browser()
    cluster = start_loaded_cluster(make_cluster)
    url = f"http://127.0.0.1:{cluster.metrics_port}/"
    assert f" dashboard={url}" in cluster.roles["monitor"].ready_line  # where to point a browser
    with loaded(cluster), chromium() as driver:
        driver.get(url)
        assert driver.title == "Cluster dashboard"
        charts = wait_until(
            lambda: (c := chart_counts(driver)) and all(v["points"] > 0 for v in c.values()) and c,
            "every chart has points", timeout=60, interval=0.5,
            detail=lambda: json.dumps(chart_counts(driver)),
        )  # fmt: skip
        assert set(charts) >= {"host_cpu", "host_network", "proc_cpu", "proc_sessions",
                               "login_tps", "login_latency", "game_fps", "game_sessions",
                               "chat_players", "chat_messages", "drops"}  # fmt: skip
        first = {k: v["points"] for k, v in charts.items()}
        wait_until(
            lambda: all(chart_counts(driver)[k]["points"] > first[k] for k in first),
            "every chart's point count grows", timeout=30, interval=0.5,
            detail=lambda: json.dumps(chart_counts(driver)),
        )  # fmt: skip
        legend = driver.execute_script(
            "return [...document.querySelectorAll('[data-chart=proc_cpu] .legend li')]"
            ".map(li => li.textContent)"
        )
        for role in ("broker", "monitor", "gateway", "auth", "game", "chat"):
            assert any(text.startswith(role + " ") for text in legend), (role, legend)
        drops = driver.execute_script(
            "return document.querySelector('[data-chart=drops] .legend').textContent"
        )
        assert "gateway" in drops, drops
        assert driver.execute_script("return window.dashboard.error") is None

        # the DB range: the status_server rows the monitor writes every second
        driver.find_element("css selector", "button[data-range=db1h]").click()

        def db_charts() -> dict[str, Any] | None:
            c = chart_counts(driver)
            with_db = {k: v for k, v in c.items() if v["db"]}
            if driver.execute_script("return window.dashboard.mode") != "db1h":
                return None
            return c if with_db and all(v["points"] > 0 for v in with_db.values()) else None

        in_db = wait_until(db_charts, "DB-range charts have points", timeout=30, interval=0.5,
                           detail=lambda: json.dumps(chart_counts(driver)))  # fmt: skip
        assert in_db["proc_cpu"]["lines"] >= 3  # battle, login, chat writers
        assert in_db["drops"]["points"] == 0  # not in the tables: drawn as such
        driver.find_element("css selector", "button[data-range=live10m]").click()
        wait_until(lambda: chart_counts(driver)["drops"]["points"] > 0, "back to live", timeout=10)
        assert severe(driver) == []


def test_the_page_logs_no_errors_and_shows_an_empty_cluster(make_cluster):
    """A broker and a monitor alone: the page loads, charts what there is (those two, their
    host), shows no data in the other charts, and the console stays clean."""
    _need_browser()
    cluster = make_cluster()
    cluster.start("broker")
    cluster.start("monitor")
    with chromium() as driver:
        driver.get(f"http://127.0.0.1:{cluster.metrics_port}/")
        wait_until(lambda: chart_counts(driver).get("proc_cpu", {}).get("points", 0) > 1,
                   "the monitor's own CPU is charted", timeout=30, interval=0.5)  # fmt: skip
        assert chart_counts(driver)["host_cpu"]["points"] > 0
        assert chart_counts(driver)["chat_players"]["points"] == 0
        assert severe(driver) == []
