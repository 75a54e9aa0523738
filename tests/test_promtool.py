"""Prometheus' own checker on what the cluster ships: ``promtool check metrics`` on the monitor's
/metrics of a live cluster running every role that samples (after logins on the web, login, game
and chat ports, chat messages, a refused chat key and a dropped client, so counters are not 0)
and on hostile samples; ``promtool check config`` / ``check rules`` on deploy/prometheus; and the
Grafana dashboard (deploy/grafana) and the rules name only metrics the live /metrics has.

promtool (Debian package ``prometheus``) missing: these tests fail under ``CI=true`` and skip
otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster import metrics
from cluster.testkit import wait_until
from dummy.client import ChatClient, GameClient, login_once
from tests.backends import Backend
from tests.harness import ClusterUnderTest, run

DEPLOY = Path(__file__).parent.parent / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "iocp-cluster.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "iocp-cluster.json"
PASSWORDS = ["correct horse 1", "battery staple 2", "tr0ub4dor&3xyz"]
#: Every role that sends samples.
ROLES = {"broker", "monitor", "gateway", "auth", "game", "chat", "web"}


def promtool() -> str:
    """promtool's path; fails under CI=true when it is not installed, else skips."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (Debian package prometheus); CI=true needs it")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def check_metrics(text: bytes) -> None:
    """``promtool check metrics`` on `text`: exit 0 and no finding."""
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                            timeout=60)  # fmt: skip
    findings = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0 and not findings.strip(), findings


def series(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name (a counter's with ``_total``) -> {sorted labels: value} of a /metrics text."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for point in family.samples:
            out.setdefault(point.name, {})[tuple(sorted(point.labels.items()))] = point.value
    return out


def total(found: dict[str, dict[Any, float]], name: str, **labels: str) -> float:
    """The sum of `name`'s series whose labels include `labels`."""
    return sum(v for key, v in found.get(name, {}).items() if labels.items() <= dict(key).items())


# -- a live cluster with every role -------------------------------------------------------------


@dataclass
class Live:
    cluster: ClusterUnderTest
    text: str  # the /metrics text once every counter moved
    snapshot: dict[str, Any]  # /status.json at about the same time


def get(cluster: ClusterUnderTest, path: str) -> bytes:
    url = f"http://127.0.0.1:{cluster.metrics_port}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body


async def post_login(url: str, user_id: str, password: str) -> tuple[int, Any]:
    body = json.dumps({"userid": user_id, "password": password}).encode()
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return response.status, json.loads(await response.text())


async def traffic(cluster: ClusterUnderTest, accounts: list[tuple[int, str]]) -> None:
    """Web logins (two ok, one wrong password), a login-port and game-port login, a chat player
    who moves and talks, a chat login with a wrong key and a client sending garbage."""
    url = f"http://127.0.0.1:{cluster.web_port}/v1/login"
    keys = []
    for (_, user_id), password in zip(accounts[:2], PASSWORDS[:2], strict=True):
        status, answer = await post_login(url, user_id, password)
        assert status == 200, answer
        keys.append(bytes.fromhex(answer["session_key"]))
    assert (await post_login(url, accounts[2][1], "not the password"))[0] == 401
    (gamer, _), (talker, _) = accounts[:2]
    reply = await login_once("127.0.0.1", cluster.login_port, gamer, keys[0])
    assert reply.status == 1, reply
    game = await GameClient.connect("127.0.0.1", cluster.game_port)
    assert (await game.login(gamer, keys[0])).status == 1
    await game.echo(3)
    chat = await ChatClient.connect("127.0.0.1", cluster.chat_port)
    assert (await chat.login(talker, "talker", "talker", keys[1])).status == 1
    await chat.move(3, 4)
    chat.say("hello")
    await chat.messages(1)  # the sender hears itself
    stranger = await ChatClient.connect("127.0.0.1", cluster.chat_port)
    assert (await stranger.login(accounts[2][0], session_key=b"\x07" * 64)).status == 0
    garbage = await GameClient.connect("127.0.0.1", cluster.game_port)
    garbage.send_raw(b"\xff" * 64)
    assert await garbage.wait_closed(10)
    for client in (game, chat, stranger):
        await client.close()


def moved(found: dict[str, dict[Any, float]]) -> bool:
    """Every role is live and every counter the traffic moves has moved."""
    roles = {dict(key)["role"] for key in found.get("cluster_up", {})}
    return roles >= ROLES and all((
        total(found, "cluster_logins_total") >= 1,
        total(found, "cluster_web_logins_total", result="ok") >= 2,
        total(found, "cluster_web_logins_total", result="invalid") >= 1,
        total(found, "cluster_messages_total") >= 1,
        total(found, "cluster_deliveries_total") >= 1,
        total(found, "cluster_key_misses_total") >= 1,
        total(found, "cluster_drops_total") >= 1,
        *(total(found, "cluster_port_accepts_total", port=p) >= 1 for p in ("login", "game",
                                                                               "chat")),
    ))  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One cluster for the module (broker, monitor, game, chat, auth, gateway, web on SQLite),
    after :func:`traffic`."""
    promtool()
    tmp = tmp_path_factory.mktemp("live")
    backend = Backend("sqlite", tmp)
    (tmp / "cluster").mkdir()
    cluster = ClusterUnderTest(
        tmp / "cluster", cluster={"link_mode": "non-systemlink"}, game={"verify_key": True},
        chat={"enabled": True}, web={"enabled": True, "address_rate": 0.0},
        monitor={"summary_interval": 3600.0}, db=backend.db_section,
    )  # fmt: skip
    try:
        passwords, out = cluster.dir / "passwords.txt", cluster.dir / "accounts.tsv"
        passwords.write_text("".join(p + "\n" for p in PASSWORDS))
        created = subprocess.run(
            [sys.executable, "-m", "cluster", "accounts", "create", "--config",
             str(cluster.config), "--password-file", str(passwords), "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        accounts = [(int(line.split("\t")[0]), line.split("\t")[1])
                    for line in out.read_text().splitlines()]  # fmt: skip
        for role in ("broker", "monitor", "game", "chat", "auth", "gateway", "web"):
            cluster.start(role)
        run(traffic(cluster, accounts))

        def scrape() -> str | None:
            text = get(cluster, "/metrics").decode()
            return text if moved(series(text)) else None

        text = wait_until(scrape, "every role and counter on /metrics", timeout=30, interval=0.5,
                          detail=lambda: get(cluster, "/metrics").decode())  # fmt: skip
        yield Live(cluster, text, json.loads(get(cluster, "/status.json")))
    finally:
        cluster.close()
        backend.close()


def test_live_metrics_of_every_role_pass_promtool(live: Live) -> None:
    check_metrics(live.text.encode())
    assert "# TYPE cluster_drops_total counter" in live.text
    assert "# TYPE cluster_memory_bytes gauge" in live.text
    found = series(live.text)
    # base units: the monitor's memory in bytes, not MB
    monitor = next(p for p in live.snapshot["processes"] if p["role"] == "monitor")
    memory = total(found, "cluster_memory_bytes", role="monitor")
    assert memory > 2**20 and abs(memory / 2**20 - monitor["memory_mb"]) < 0.5 * monitor[
        "memory_mb"]  # fmt: skip
    # every field the roles send is in the table: none falls back to the unknown-field export
    assert "not in cluster.metrics' table" not in live.text
    unknown = sorted({
        f"{p['role']}.{k}" for p in live.snapshot["processes"] for k, v in p.items()
        if metrics.number(v) is not None and k not in metrics.SKIPPED and k not in metrics.FIELDS
    } | {
        f"hw.{k}" for p in live.snapshot["processes"] for k in p.get("hw", {})
        if k not in metrics.HOST_FIELDS
    })  # fmt: skip
    assert unknown == [], "sample fields missing from cluster.metrics.FIELDS / HOST_FIELDS"


# -- hostile samples ----------------------------------------------------------------------------


def hostile_samples() -> list[Any]:
    """What a broken or malicious peer could put in a sample (STATS is any msgpack map)."""
    now = 1_700_000_000.0
    odd_names = {
        "latency_ms": 5, "uptime_s": 9, "size_kb": 3, "Weird-Name.x": 1, "fooBar": 2,
        "a_gauge_b": 1, "x_counter": 1, "req_count": 7, "req_sum": 8, "req_bucket": 9,
        "load_kilobytes": 1, "wait_minutes": 2, "ms": 1, "": 4, "__": 5, "é": 6, "2x": 7,
        "a:b": 8, "s_s_s": 9, "memory_bytes": 1, "drops_total": 3, "up": 0,
        "sample_age_seconds": 1, "host_cpu_percent": 1, "port_sessions": 2,
    }  # fmt: skip
    return [
        {},
        "not a sample",
        None,
        {"id": "gateway@h/1/a", "role": "gateway", "host": "h", "time": now, **odd_names,
         "drops": {"timeout": 2, "": 1, "neg": -3, "nan": float("nan"), "bool": True,
                   'q"uo\\te\n': 4, 7: 1}},
        {"id": "game@h/2/b", "role": "game", "host": "h", "time": now,
         "jobs_total": 12, "errors_total": -1, "oops_total": float("nan"), "inf_total": 1e309,
         "flag": True, "name": "text", "none": None, "nested": {"a": {"b": 1}}, "list": [1, 2],
         "huge": 10**400, "big": 10**20, "small": -1e-300, "nan": float("nan"),
         "inf": float("inf"), "ninf": float("-inf"), "memory_mb": "lots", "cpu_percent": True,
         "login_total": -5, "key_miss": 10**400, 3: 4, b"raw": 5,
         "hw": {"cpu_total": "x", "available_mb": 10**400, "disk_mb": 2, "io_total": 4,
                "odd name": 1, "net_recv_kbps": float("nan"), 9: 1}},
        {"id": "chat@h/3/c", "role": "chat", "host": "h", "time": "soon", "pid": "x",
         "drops": [1, 2], "hw": "no"},
        {"id": b"\xff\xfe bytes id", "role": 7, "host": None, "time": 10**400},
        {"id": "surrogate \udcff", "role": "web\x00", "host": "h\n", "time": float("nan"),
         "login_ok": 3, "login_invalid": 1.5, "sessions_login": 1, "accept_total_login": 2},
        {"role": "auth", "host": "h", "pid": 4, "time": now, "login_latency_avg_ms": 250},
    ]  # fmt: skip


def test_hostile_samples_pass_promtool_and_never_raise() -> None:
    text = metrics.exposition(hostile_samples())
    check_metrics(text)
    found = series(text.decode())
    assert found["cluster_jobs_total"] == {(("host", "h"), ("process", "game@h/2/b"),
                                            ("role", "game")): 12.0}  # fmt: skip
    # counters that are negative, NaN, infinite or too large are left out, not made valid
    for name in ("cluster_errors_total", "cluster_oops_total", "cluster_inf_total",
                 "cluster_key_misses_total", "cluster_huge"):  # fmt: skip
        assert name not in found, name
    assert total(found, "cluster_logins_total") == 0
    # a known field: its own name, unit and type
    assert total(found, "cluster_login_latency_avg_seconds") == 0.25
    assert total(found, "cluster_web_logins_total", result="ok") == 3.0
    assert total(found, "cluster_port_sessions", port="login") == 1.0
    # names of the table are never taken by a field that is not in it
    assert set(found["cluster_up"].values()) == {1.0} and len(found["cluster_up"]) == 7
    assert "cluster_drops" not in found and "cluster_memory_bytes" not in found
    assert total(found, "cluster_drops_total", reason="timeout") == 2.0
    assert total(found, "cluster_drops_total", reason="neg") == 0
    assert total(found, "cluster_drops_total", reason='q"uo\\te\n') == 4.0
    assert total(found, "cluster_port_sessions") == 1.0  # the gateway's field was dropped
    # unknown names are made lint-safe, unknown hw figures exported per host
    for name in ("cluster_latencyms", "cluster_uptimes", "cluster_sizekb", "cluster_weird_name_x",
                 "cluster_foobar", "cluster_reqcount", "cluster_loadkilobytes", "cluster_fieldms",
                 "cluster_host_diskmb", "cluster_host_io_total",
                 "cluster_host_odd_name"):  # fmt: skip
        assert name in found, name
    assert "cluster_host_memory_available_bytes" not in found
    assert "cluster_flag" not in found and "cluster_nested" not in found


@pytest.mark.parametrize("field", ["x_ms", "kilo_minutes", "gauge", "a_count", "A-B:C", "",
                                   "s", "m_h_d", "counter", "x" * 300, "1", "\udcff",
                                   "a__b_"])  # fmt: skip
@pytest.mark.parametrize("suffix", ["", "_total"])
def test_every_unknown_field_name_passes_promtool_alone(field: str, suffix: str) -> None:
    """One field at a time, on a process and in ``hw``: a gauge, or with ``_total`` a counter."""
    name = field + suffix
    text = metrics.exposition([{"id": "p", "role": "game", "host": "h", name: 1,
                                "hw": {name: 3}}])  # fmt: skip
    check_metrics(text)
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    kinds = {f.type for name, f in families.items() if name != "cluster_up"}
    assert len(families) == 3 and kinds == {"counter" if suffix else "gauge"}, families


# -- deploy/prometheus and deploy/grafana -------------------------------------------------------


def test_the_shipped_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (["check", "config", str(PROMETHEUS_CONFIG)], ["check", "rules", str(RULES)]):
        result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    config = PROMETHEUS_CONFIG.read_text()
    assert "/metrics" in config and "9108" in config  # the monitor's default metrics port
    assert "iocp-cluster.rules.yml" in config


#: PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "absent",
    "label_values", "inf", "nan",
}  # fmt: skip
#: Series Prometheus makes itself, not the monitor.
PROMETHEUS_SERIES = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: strings, label matchers, ranges,
    ``by (...)`` lists, function names and keywords left out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        if match.group(2) is None and match.group(1).lower() not in PROMQL_WORDS:
            names.add(match.group(1))
    return names


def test_metric_names_of_promql() -> None:
    assert metric_names('sum by (reason) (rate(cluster_drops_total{host=~"$host"}[5m]))') == {
        "cluster_drops_total"
    }
    assert metric_names('max(a_b{x="y{z}"}) / on (p) group_left b:c offset 5m > 1e3') == {
        "a_b", "b:c"
    }  # fmt: skip
    assert metric_names("label_values(cluster_up, host)") == {"cluster_up", "host"}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of the Grafana dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"]
            for target in panel.get("targets", [])]  # fmt: skip


def test_the_grafana_dashboard_is_importable_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] == "timeseries" and panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source and target["refId"], panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"] == source
    titles = {panel["title"] for panel in board["panels"]}
    for title in ("Host CPU", "Available memory", "Non-paged memory", "Network in / out",
                  "Process CPU", "Process memory", "Packet pool", "Sessions",
                  "Login success TPS", "Login latency", "AuthFPS / GameFPS", "Sessions per mode",
                  "Chat players", "Message TPS", "Deliveries", "Drops by reason"):  # fmt: skip
        assert title in titles, title


def test_dashboard_and_rules_name_only_metrics_the_live_exposition_has(live: Live) -> None:
    exposed = set(series(live.text)) | PROMETHEUS_SERIES
    board = json.loads(DASHBOARD.read_text())
    queries = dashboard_exprs() + [
        (v["name"], v["query"]["query"]) for v in board["templating"]["list"]
    ]
    rules = re.findall(r"^\s*expr:\s*(.+)$", RULES.read_text(), re.MULTILINE)
    assert len(rules) >= 10
    queries += [("rules", expr) for expr in rules]
    missing = []
    for where, expr in queries:
        names = metric_names(expr) - {"host", "role"}  # label_values(metric, label)
        assert names, f"{where}: no metric name found in {expr!r}"
        missing += [f"{where}: {name}" for name in sorted(names - exposed)]
    assert missing == []
    used = {name for _, expr in queries for name in metric_names(expr)}
    for name in ("cluster_host_network_receive_bytes_per_second", "cluster_login_success_tps",
                 "cluster_login_latency_max_seconds", "cluster_session_auth",
                 "cluster_session_game", "cluster_delivery_tps",
                 "cluster_drops_total"):  # fmt: skip
        assert name in used, name
