"""The dummy load tool against a real cluster: local runs, controller + agents, the demo."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from cluster.testkit import free_ports
from dummy.distributed import split
from dummy.engine import LoadOptions, Totals
from dummy.histogram import Histogram
from tests.harness import RoleProcess

SUMMED = ("connect_total", "connect_fail", "down_client", "disconnects", "login_ok",
          "echo_sent", "echo_recv")  # fmt: skip


def cluster_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def loaded_cluster(make_cluster):
    """A whole cluster (systemlink, keys verified) under `cluster up`, and 200 accounts."""
    cluster = make_cluster(game={"verify_key": True}, workers={"game": 2, "auth": 1},
                           monitor={"summary_interval": 3600.0})  # fmt: skip
    accounts = cluster.dir / "accounts.tsv"
    created = cluster_cli("accounts", "create", "--config", str(cluster.config), "--count", "200",
                          "--out", str(accounts))  # fmt: skip
    assert created.returncode == 0, created.stderr
    cluster.start("up")
    return cluster, accounts


def test_run_with_random_disconnects_has_no_packet_errors_and_every_connect_is_accepted(
    loaded_cluster,
):
    cluster, accounts = loaded_cluster
    report_path, csv_path = cluster.dir / "report.json", cluster.dir / "seconds.csv"
    result = cluster_cli(
        "dummy", "run", "--config", str(cluster.config), "--accounts", str(accounts),
        "--clients", "40", "--rand-disconnect", "10", "--echo-overlap", "5", "--duration", "4",
        "--report", str(report_path), "--csv", str(csv_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["errors"].get("packet_error", 0) == 0
    assert report["down_client"] == 0
    assert report["disconnects"] > 0  # the knob worked: clients left and came back
    assert report["connect_total"] > 40
    assert report["connect_total"] == report["accept_total"]
    assert report["connect_matches_accept"] is True
    assert report["echo_recv"] > 0 and report["echo_sent"] >= report["echo_recv"]
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert report["latency_ms"]["p99"] <= report["latency_ms"]["max"]
    assert "connect_total == accept_total" in result.stdout
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("elapsed_s,") and len(rows) >= 4


def _controller(cluster, accounts, agents: int, duration: float, report) -> tuple[RoleProcess, str]:
    port = free_ports(1)[0]
    endpoint = f"tcp://127.0.0.1:{port}"
    controller = RoleProcess(
        ["dummy", "controller", "--config", str(cluster.config), "--listen", endpoint,
         "--agents", str(agents), "--accounts", str(accounts), "--clients", "30",
         "--duration", str(duration), "--report", str(report), "--wait", "30"],
        cluster.dir / "controller.log", wait_ready=False,
    )  # fmt: skip
    return controller, endpoint


def _agent(cluster, endpoint: str, n: int) -> RoleProcess:
    return RoleProcess(["dummy", "agent", "--controller", endpoint],
                       cluster.dir / f"agent{n}.log", wait_ready=False)  # fmt: skip


def test_controller_with_two_agents_reports_the_sums_of_the_agents(loaded_cluster):
    cluster, accounts = loaded_cluster
    report_path = cluster.dir / "report.json"
    controller, endpoint = _controller(cluster, accounts, 2, 4, report_path)
    agents = [_agent(cluster, endpoint, n) for n in range(2)]
    assert controller.proc.wait(90) == 0, controller.log()
    for agent in agents:
        assert agent.proc.wait(30) == 0, agent.log()
    report = json.loads(report_path.read_text())
    assert [a["status"] for a in report["agents"]] == ["finished", "finished"]
    assert sorted(a["clients"] for a in report["agents"]) == [15, 15]
    for key in SUMMED:
        assert report[key] == sum(a[key] for a in report["agents"]), key
    assert report["echo_recv"] > 0
    assert report["connect_total"] == report["accept_total"]
    assert report["errors"].get("packet_error", 0) == 0


def test_an_agent_killed_mid_run_is_reported_and_the_run_ends(loaded_cluster):
    cluster, accounts = loaded_cluster
    report_path = cluster.dir / "report.json"
    controller, endpoint = _controller(cluster, accounts, 2, 8, report_path)
    agents = [_agent(cluster, endpoint, n) for n in range(2)]
    agents[0].wait_log(r"agent: running", timeout=30)
    agents[1].wait_log(r"agent: running", timeout=30)
    agents[0].kill()
    controller.proc.wait(90)  # ends, whatever the exit code says about the lost counts
    controller.wait_log(r"agent \S+ lost")
    report = json.loads(report_path.read_text())
    assert sorted(a["status"] for a in report["agents"]) == ["finished", "lost"]
    survivor = next(a for a in report["agents"] if a["status"] == "finished")
    assert survivor["echo_recv"] > 0
    assert agents[1].proc.wait(30) == 0


def test_demo_runs_the_whole_cluster_under_load_and_stops_it(make_cluster):
    cluster = make_cluster()
    report = cluster.dir / "demo.json"
    result = cluster_cli("demo", "--config", str(cluster.config), "--duration", "3",
                         "--clients", "20", "--link-mode", "non-systemlink",
                         "--report", str(report))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "connect_total == accept_total" in result.stdout
    assert "demo: cluster stopped" in result.stdout
    data = json.loads(report.read_text())
    assert data["echo_recv"] > 0 and data["login_ok"] >= 20
    assert data["errors"] == {}


def test_dummy_screen_pauses_with_s_and_quits_with_q(loaded_cluster):
    cluster, accounts = loaded_cluster
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster", "dummy", "run", "--config", str(cluster.config),
         "--accounts", str(accounts), "--clients", "10", "--duration", "3600"],
        stdin=secondary, stdout=secondary, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(secondary)
    seen = b""

    def read_until(text: str, timeout: float = 20) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while text.encode() not in seen:
            assert time.monotonic() < deadline, seen[-2000:]
            if select.select([main], [], [], 0.2)[0]:
                seen += os.read(main, 65536)

    try:
        read_until("MODE : PLAY")
        read_until("In Game")
        os.write(main, b"s")
        read_until("MODE : STOP")
        os.write(main, b"q")
        # A run of an hour can only end this soon because Q ended it: the wait is the check.
        assert proc.wait(60) in (0, 1)
        read_until("connect_total")  # and it closed with its summary
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        os.close(main)


def test_accounts_fewer_than_clients_is_a_clear_error(loaded_cluster):
    cluster, accounts = loaded_cluster
    result = cluster_cli("dummy", "run", "--config", str(cluster.config), "--accounts",
                         str(accounts), "--clients", "500", "--duration", "1")  # fmt: skip
    assert result.returncode == 2
    assert "500 clients need 500 accounts" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("flag", "value"), [("--rand-connect", "101"), ("--echo-overlap", "0"),
                                             ("--duration", "0")])  # fmt: skip
def test_bad_knob_exits_2_with_one_line(tmp_path, flag, value):
    accounts = tmp_path / "a.tsv"
    accounts.write_text("1\tID_1\tNICK_1\t" + "k" * 64 + "\n")
    result = cluster_cli("dummy", "run", "--accounts", str(accounts), flag, value)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and flag in result.stderr


# -- the parts, in isolation ---------------------------------------------------------------------


def test_histogram_percentiles_are_within_two_percent_and_merge_exactly():
    values = [i * 7 for i in range(1, 20001)]
    whole, halves = Histogram(), [Histogram(), Histogram()]
    for i, value in enumerate(values):
        whole.record(value)
        halves[i % 2].record(value)
    merged = Histogram.merged(halves)
    for p in (50, 90, 99, 99.9):
        exact = values[int(len(values) * p / 100) - 1]
        assert abs(whole.percentile(p) - exact) <= exact * 0.02, p
        assert merged.percentile(p) == whole.percentile(p)
    assert merged.max == whole.max == values[-1]
    assert Histogram.from_dict(merged.to_dict()).percentile(99) == merged.percentile(99)


def test_totals_add_up_and_travel():
    a = Totals(connect_total=3, echo_recv=10)
    a.errors["packet_error"] = 1
    b = Totals.from_dict(Totals(connect_total=2, echo_recv=5).to_dict())
    b.errors["echo_not_recv"] = 2
    total = Totals().add(a).add(b)
    assert (total.connect_total, total.echo_recv) == (5, 15)
    assert total.errors == {"packet_error": 1, "echo_not_recv": 2}


def test_split_gives_shares_that_differ_by_at_most_one():
    assert split(30, 2) == [15, 15]
    assert split(10, 3) == [4, 3, 3]
    assert sum(split(1001, 7)) == 1001


def test_load_options_reject_bad_knobs():
    with pytest.raises(ValueError, match="rand-disconnect"):
        LoadOptions(rand_disconnect=-1).check()
    with pytest.raises(ValueError, match="path"):
        LoadOptions(path="teleport").check()
