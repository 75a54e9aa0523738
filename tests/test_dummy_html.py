"""The dummy's HTML load report (``--html``): real runs against a real cluster (echo, chat
interrupted by SIGTERM, controller + 2 agents), each page opened from file:// in real headless
Chromium: every chart has its points, the per-second figures add up to the JSON report of the same
run, the console has no error, nothing is fetched; and hostile strings in the data stay text."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.testkit import free_ports
from dummy.engine import Totals
from dummy.histogram import Histogram
from dummy.html_report import json_for_script, point, render
from dummy.report import View, build_report
from tests.harness import RoleProcess
from tests.test_chat_dummy import start_chat_cluster
from tests.test_dummy import cluster_cli, loaded_cluster  # noqa: F401 - the fixture

CHARTS = ("tps", "latency", "connections", "logins", "errors", "down")
CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync")  # fmt: skip
HOSTILE = ("</script><script>window.pwned=1</script><!--<img src=x onerror='window.pwned=2'>"
           "\u2028\u2029 __SCRIPT__ __DATA__ ${x} \" ' & \\u003c")  # fmt: skip


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver, with the browser console recorded."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    for tool in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(tool, os.X_OK):
            _unavailable(f"{tool} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def open_report(driver: Any, path: Path) -> dict[str, Any]:
    """Open the page from file://, wait for its charts, check that the console has no error and
    that nothing was fetched; returns the page's test hook (``window.report``) and what it
    drew."""
    driver.get(path.resolve().as_uri())
    deadline = time.monotonic() + 30
    while not driver.execute_script("return !!(window.report && window.report.ready)"):
        problems = driver.execute_script("return window.report && window.report.problems")
        assert not problems, problems
        assert time.monotonic() < deadline, driver.get_log("browser")
        time.sleep(0.1)
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith('data:') && !n.startsWith('file:'))"
    )
    assert fetched == []
    page: dict[str, Any] = driver.execute_script("""
        const figures = {};
        for (const fig of document.querySelectorAll('figure[data-chart]')) {
          figures[fig.dataset.chart] = {
            points: Number(fig.dataset.points),
            drawn: [...fig.querySelectorAll('path.series')].map(p => Number(p.dataset.drawn)),
          };
        }
        return {hook: window.report, figures: figures, text: document.body.innerText,
                scripts: document.scripts.length, images: document.images.length,
                verdict: document.getElementById('verdict').textContent,
                pwned: window.pwned === undefined ? null : window.pwned};
    """)
    assert page["pwned"] is None and page["scripts"] == 2 and page["images"] == 0
    return page


def check_charts(page: dict[str, Any], seconds: int) -> dict[str, dict[str, list[Any]]]:
    """Every chart has a point per second (and the closing one, if any) and draws them; returns
    the series of every chart."""
    hook = page["hook"]
    assert hook["points"] >= seconds >= 3
    assert sorted(page["figures"]) == sorted(CHARTS) == sorted(hook["charts"])
    for name in CHARTS:
        figure, chart = page["figures"][name], hook["charts"][name]
        assert figure["points"] == chart["points"] == hook["points"], name
        assert len(chart["x"]) == hook["points"]
        assert max(figure["drawn"]) >= seconds, (name, figure)
        for label, values in chart["series"].items():
            assert len(values) == hook["points"], (name, label)
    return {name: hook["charts"][name]["series"] for name in CHARTS}


def csv_seconds(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1


def check_common(series: dict[str, dict[str, list[Any]]], report: dict[str, Any]) -> None:
    """What echo and chat pages share: logins, connects, errors, Down Client, latency."""
    assert sum(series["logins"]["logins"]) == report["login_ok"] > 0
    assert sum(series["connections"]["connects / s"]) == report["connect_total"]
    assert sum(series["connections"]["disconnects / s (on purpose)"]) == report["disconnects"]
    assert sum(series["logins"]["connect failures"]) == report["connect_fail"]
    assert sum(series["errors"]["all errors"]) == sum(report["errors"].values())
    assert sum(series["down"]["Down Client / s"]) == report["down_client"]
    assert series["down"]["Down Client total"][-1] == report["down_client"]
    p50 = [v for v in series["latency"]["p50"] if v is not None]
    maxes = [v for v in series["latency"]["max"] if v is not None]
    assert p50 and all(v > 0 for v in p50)
    assert 0 < max(maxes) <= report["latency_ms"]["max"]
    for p50_, p95, p99, top in zip(*(series["latency"][k] for k in ("p50", "p95", "p99", "max")),
                                   strict=True):  # fmt: skip
        if p50_ is not None:
            assert p50_ <= p95 <= p99 <= top


def test_an_echo_run_writes_a_page_whose_seconds_add_up_to_its_json_report(
    loaded_cluster,  # noqa: F811 - the fixture
    browser,
):
    cluster, accounts = loaded_cluster
    out = {k: cluster.dir / f"run.{k}" for k in ("json", "csv", "html")}
    result = cluster_cli(
        "dummy", "run", "--config", str(cluster.config), "--accounts", str(accounts),
        "--clients", "20", "--rand-disconnect", "10", "--echo-overlap", "3", "--duration", "4",
        "--report", str(out["json"]), "--csv", str(out["csv"]), "--html", str(out["html"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out["json"].read_text())
    page = open_report(browser, out["html"])
    seconds = csv_seconds(out["csv"])  # the same seconds as the CSV's rows
    series = check_charts(page, seconds)
    assert page["hook"]["points"] - seconds in (0, 1)  # and the wind-down, when it added any
    assert sum(series["tps"]["echo replies"]) == report["echo_recv"] > 0
    assert sum(series["tps"]["echoes sent"]) == report["echo_sent"]
    assert max(v for v in series["tps"]["recv TPS (packets)"] if v is not None) > 0
    assert max(v for v in series["connections"]["logged in (game)"] if v is not None) > 0
    check_common(series, report)
    assert page["verdict"] == "PASS"
    assert "systemlink" in page["text"] and "echo (game port)" in page["text"]
    assert "connect_total == accept_total" in page["text"]
    source = out["html"].read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", source)  # nothing to fetch


def test_a_chat_run_stopped_by_sigterm_still_writes_its_page(make_cluster, browser):
    chat = start_chat_cluster(make_cluster)
    out = {k: chat.cluster.dir / f"chat.{k}" for k in ("json", "csv", "html")}
    dummy = RoleProcess(
        ["dummy", "run", "--app", "chat", "--config", str(chat.config), "--accounts",
         str(chat.accounts), "--clients", "30", "--delay-action", "50", "--sector-range", "3",
         "--rand-disconnect", "3", "--duration", "600", "--report", str(out["json"]),
         "--csv", str(out["csv"]), "--html", str(out["html"])],
        chat.cluster.dir / "chat-dummy.log", wait_ready=False,
    )  # fmt: skip
    dummy.wait_log(r"chat dummy \d+s in_chat=[1-9]", timeout=60)
    assert dummy.stop(signal.SIGTERM, timeout=60) == 0, dummy.log()
    report = json.loads(out["json"].read_text())
    assert report["app"] == "chat" and report["duration_s"] < 300
    page = open_report(browser, out["html"])
    seconds = csv_seconds(out["csv"])
    series = check_charts(page, seconds)
    assert sum(series["tps"]["messages sent"]) == report["messages_sent"] > 0
    assert sum(series["tps"]["messages received"]) == report["messages_recv"] > 0
    assert sum(series["tps"]["sector moves sent"]) == report["moves_sent"]
    assert max(v for v in series["connections"]["logged in (chat)"] if v is not None) > 0
    assert sum(series["down"]["Chat DownClient / s"]) == report["chat_down"]
    check_common(series, report)
    assert page["verdict"] == "PASS" and "chat (chat port)" in page["text"]


def test_a_controller_page_merges_both_agents(loaded_cluster, browser):  # noqa: F811
    cluster, accounts = loaded_cluster
    report_path, html_path = cluster.dir / "ctl.json", cluster.dir / "ctl.html"
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    controller = RoleProcess(
        ["dummy", "controller", "--config", str(cluster.config), "--listen", endpoint,
         "--agents", "2", "--accounts", str(accounts), "--clients", "30", "--duration", "4",
         "--report", str(report_path), "--html", str(html_path), "--wait", "30"],
        cluster.dir / "controller.log", wait_ready=False,
    )  # fmt: skip
    agents = [RoleProcess(["dummy", "agent", "--controller", endpoint],
                          cluster.dir / f"agent{n}.log", wait_ready=False)
              for n in range(2)]  # fmt: skip
    assert controller.proc.wait(90) == 0, controller.log()
    for agent in agents:
        assert agent.proc.wait(30) == 0, agent.log()
    report = json.loads(report_path.read_text())
    assert [a["status"] for a in report["agents"]] == ["finished", "finished"]
    page = open_report(browser, html_path)
    series = check_charts(page, 3)
    # every second counts the clients of both agents (15 each)
    hook = browser.execute_script(
        "return JSON.parse(document.getElementById('report-data').textContent).seconds"
    )
    assert max(s["clients"] for s in hook) == 30 and max(s["agents"] for s in hook) == 2
    assert sum(series["tps"]["echo replies"]) == report["echo_recv"]
    assert report["echo_recv"] == sum(a["echo_recv"] for a in report["agents"]) > 0
    assert all(a["echo_recv"] > 0 for a in report["agents"])
    assert sum(series["tps"]["echoes sent"]) == report["echo_sent"]
    check_common(series, report)
    agents_rows = browser.execute_script(
        "return [...document.querySelectorAll('#agents tr')].slice(1)"
        ".map(r => r.cells[0].textContent)"
    )
    assert sorted(agents_rows) == sorted(a["id"] for a in report["agents"])


def hostile_page(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A page whose every string field carries HOSTILE (agent id, error kind, knob, notes, the
    closing lines, the link mode)."""
    totals = Totals()
    seconds = []
    for second in range(1, 4):
        totals.echo_recv += 10
        totals.errors[HOSTILE] += 1
        latency = Histogram()
        latency.record(1500)
        seconds.append(point(View(elapsed=float(second), clients=5, in_game=5, totals=totals.copy(),
                                  latency=latency)))  # fmt: skip
    report = build_report(
        totals, Histogram(), duration=3.2, clients=5, accept_total=None, accept_note=HOSTILE,
        agents=[{"id": HOSTILE, "status": "finished", "clients": 5, **totals.to_dict()}],
        options={"path": HOSTILE, HOSTILE: HOSTILE},
    )  # fmt: skip
    path = tmp_path / "hostile.html"
    path.write_text(render(report, seconds, totals.to_dict(), passed=False, closing=HOSTILE,
                           link_mode=HOSTILE), encoding="utf-8")  # fmt: skip
    return path, report


def test_hostile_strings_in_the_data_stay_text(tmp_path, browser):
    path, report = hostile_page(tmp_path)
    source = path.read_text(encoding="utf-8")
    data = source.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and "\u2028" not in data
    assert json.loads(data)["report"] == report  # the data survives the escaping intact
    page = open_report(browser, path)
    assert page["hook"]["points"] == 3  # no closing point: the last second has the final totals
    assert page["verdict"] == "FAIL"
    assert sum(page["hook"]["charts"]["errors"]["series"][HOSTILE]) == 3
    cells = browser.execute_script(
        "return [...document.querySelectorAll('td, th, .legend span')].map(c => c.textContent)"
    )
    assert cells.count(HOSTILE) >= 5  # error kind, agent id, knob name and value, legend
    closing = browser.execute_script("return document.getElementById('closing').textContent")
    assert closing == HOSTILE


def test_json_for_script_escapes_what_could_end_the_script_element():
    text = json_for_script({"a": "</script><!-- \u2028 & >", "</SCRIPT>": 1})
    assert not re.search(r"[<>&\u2028\u2029]", text)
    assert json.loads(text) == {"a": "</script><!-- \u2028 & >", "</SCRIPT>": 1}


def test_a_hostile_agent_cannot_break_the_controller_page(make_cluster, browser):
    """An agent that names itself and its error kinds with markup and script: the controller's
    page still opens cleanly and shows those strings as text."""
    import msgpack
    import zmq

    cluster = make_cluster()  # its config only: no monitor answers, so no connect check
    accounts = cluster.dir / "accounts.tsv"
    created = cluster_cli("accounts", "create", "--config", str(cluster.config), "--count", "5",
                          "--out", str(accounts))  # fmt: skip
    assert created.returncode == 0, created.stderr
    html_path, report_path = cluster.dir / "ctl.html", cluster.dir / "ctl.json"
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    controller = RoleProcess(
        ["dummy", "controller", "--config", str(cluster.config), "--listen", endpoint,
         "--agents", "1", "--accounts", str(accounts), "--clients", "5", "--duration", "3",
         "--report", str(report_path), "--html", str(html_path), "--wait", "30"],
        cluster.dir / "controller.log", wait_ready=False,
    )  # fmt: skip
    context = zmq.Context()
    agent = context.socket(zmq.DEALER)
    agent.setsockopt(zmq.LINGER, 1000)
    agent.connect(endpoint)
    try:
        deadline = time.monotonic() + 30
        started = False
        while not started:
            assert time.monotonic() < deadline, controller.log()
            agent.send_multipart([b"HELLO", msgpack.packb({"host": HOSTILE, "pid": 7})])
            if agent.poll(1000):
                started = agent.recv_multipart()[0] == b"START"
        totals = {"login_ok": 5, "echo_sent": 0, "echo_recv": 0, "errors": {}}
        latency = Histogram()
        latency.record(2500)
        stopped, sent = False, 0
        while not stopped:
            assert time.monotonic() < deadline, controller.log()
            sent += 1
            totals = {**totals, "echo_sent": 10 * sent, "echo_recv": 10 * sent,
                      "errors": {HOSTILE: sent, "<b>bold</b>": 1}}  # fmt: skip
            second = {"elapsed": float(sent), "clients": 5, "in_login": 0, "in_game": 5,
                      "reply_wait": 0, "send_tps": 10.0, "recv_tps": 10.0, "totals": totals,
                      "latency": latency.to_dict(), "action_delay_ms": [10.0, 10.0, 10.0],
                      "disconnected": 0}  # fmt: skip
            agent.send_multipart([b"SECOND", msgpack.packb(second)])
            if agent.poll(300):
                stopped = agent.recv_multipart()[0] == b"STOP"
        agent.send_multipart([b"FINAL", msgpack.packb({"totals": totals,
                                                       "latency": latency.to_dict()})])  # fmt: skip
        controller.proc.wait(60)
    finally:
        agent.close()
        context.term()
    report = json.loads(report_path.read_text())
    assert report["agents"][0]["id"] == f"{HOSTILE}/7"
    page = open_report(browser, html_path)
    assert page["hook"]["points"] >= 2
    errors = page["hook"]["charts"]["errors"]["series"]
    assert sum(errors[HOSTILE]) == report["errors"][HOSTILE] > 0
    assert sum(page["hook"]["charts"]["tps"]["series"]["echo replies"]) == report["echo_recv"]
    cells = browser.execute_script(
        "return [...document.querySelectorAll('td, th')].map(c => c.textContent)"
    )
    assert f"{HOSTILE}/7" in cells and HOSTILE in cells and "<b>bold</b>" in cells
    assert browser.execute_script("return document.querySelectorAll('b').length") == 0
