"""The benchmark scripts run end to end in their smallest mode and print well-formed JSON.

Benchmarks print figures; they are not tests, and nothing here judges a speed. These tests only
prove that each script starts its cluster, drives it and reports its figures as positive
numbers. The MariaDB case skips when the server is unreachable (it fails
instead under ``CI=true``), as the other database tests do. ``bench/abuse.py`` is checked for the
shape of its report only: its latencies and honest-client errors are what it measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backends import MYSQL_URL, mysql_unreachable

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 110.0


def run_bench(script: str, *args: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Run ``python bench/SCRIPT ARGS --json`` from the repo root; its parsed JSON output."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_login_bench_reports_cluster_and_baseline_figures(backend: str) -> None:
    if backend == "mariadb":
        why = mysql_unreachable()
        if why is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(why)
            pytest.skip(why)
    report = run_bench(
        "login.py", "--backend", backend, "--mysql-url", MYSQL_URL,
        "--logins", "50", "--runs", "1", "--warmup", "10", "--concurrency", "8",
    )  # fmt: skip
    assert report["failed"] == {} and report["skipped"] == {}
    figures = report["backends"][backend]
    for key in ("cluster", "baseline", "ratio", "p50_ms", "p99_ms"):
        assert positive(figures[key]), (key, figures)
    assert figures["logins"] == 50
    assert figures["errors"] == {}


def test_sessions_bench_reports_memory_per_session() -> None:
    report = run_bench("sessions.py", "--sessions", "1000", "--hold", "2", "--heartbeat", "1")
    assert report["sessions"] == report["logged_in"] == 1000
    for key in ("login_seconds", "logins_per_s", "gateway_bytes_per_session", "heartbeats_sent"):
        assert positive(report[key]), (key, report[key])
    game = report["game_bytes_per_session"]
    assert len(game) == 2 and all(isinstance(b, int | float) for b in game)
    assert positive(sum(game)), game
    assert report["login_failed"] == 0
    assert report["closed_by_server"] == 0


def test_echo_bench_reports_throughput_and_cpu_per_echo() -> None:
    report = run_bench("echo.py", "--quick")
    scenarios = report["scenarios"]
    for name in ("closed", "pipelined"):
        for key in ("cluster", "baseline", "ratio"):
            assert positive(scenarios[name][key]), (name, key, scenarios[name])
    for key in ("p50_us", "p99_us", "baseline_p50_us", "baseline_p99_us"):
        assert positive(scenarios["latency"][key]), (key, scenarios["latency"])
    for name in ("closed", "pipelined", "latency"):
        cpu = scenarios[name]["cpu_us_per_echo"]
        baseline_cpu = scenarios[name]["baseline_cpu_us_per_echo"]
        assert set(cpu) == {"gateway", "broker", "game", "client"}, cpu
        assert set(baseline_cpu) == {"server", "client"}, baseline_cpu
        for value in (*cpu.values(), *baseline_cpu.values()):
            assert isinstance(value, int | float) and value >= 0, (name, cpu, baseline_cpu)


def test_chat_bench_reports_deliveries_of_both_systems_in_both_scenarios() -> None:
    # --quick takes about 15 s (1 run of 2 s per scenario and system, 100 and 300 clients).
    report = run_bench("chat.py", "--quick", timeout=90.0)
    scenarios = report["scenarios"]
    assert set(scenarios) == {"crowded", "sparse"}, scenarios
    for name, figures in scenarios.items():
        for key in ("cluster", "baseline", "ratio", "mean_fan_out", "cpu_cost_ratio"):
            assert positive(figures[key]), (name, key, figures)
        # Not speeds: the RES_MESSAGE packets received (whole ones) are as many as the receivers
        # of every message sent, no fewer and no more, and no client was closed.
        for key in ("undelivered", "misaligned", "closed_by_server"):
            assert figures[key] == 0, (name, key, figures)
        cpu = figures["cpu_us_per_delivery"]
        baseline_cpu = figures["baseline_cpu_us_per_delivery"]
        assert set(cpu) == {"gateway", "broker", "chat1", "chat2", "client"}, cpu
        assert set(baseline_cpu) == {"server", "client"}, baseline_cpu
        for value in (*cpu.values(), *baseline_cpu.values()):
            assert isinstance(value, int | float) and value >= 0, (name, cpu, baseline_cpu)
    assert report["chat_workers"] == 2


def test_abuse_bench_reports_both_windows_and_every_flooder() -> None:
    # Only the shape: the figures (and whether honest clients see errors) are what it measures.
    report = run_bench("abuse.py", "--quick")
    for name in ("quiet", "flooded"):
        window = report["windows"][name]
        for key in ("p50_us", "p99_us", "max_us", "echoes_per_s", "sessions_open",
                    "error_kinds", "peak_rss_bytes", "cpu_percent"):  # fmt: skip
            assert key in window, (name, key, window)
        assert isinstance(window["errors"], int) and not isinstance(window["errors"], bool)
        assert {"gateway", "game"} <= set(window["peak_rss_bytes"]), window["peak_rss_bytes"]
    assert "p99_ratio" in report
    assert isinstance(report["errors"], int) and not isinstance(report["errors"], bool)
    assert report["honest_sessions"] == 50
    flooders = report["flooders"]
    assert [f["kind"] for f in flooders] == ["reader"] * 5 + ["non_reader"] * 5
    for flooder in flooders:
        assert isinstance(flooder["paused"], bool) and isinstance(flooder["dropped"], bool)
        assert flooder["state"] in ("flowing", "paused", "dropped", "login_failed"), flooder
