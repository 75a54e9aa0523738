"""The dummy's closing check (connect_total == accept_total) when gateways come and go during a
run: accept_total is counted per gateway process (dummy.accept), so a restarted gateway, whose
counters start again from 0, does not make the check fail; and a monitor that cannot be reached at
the end is said plainly instead of a mismatch."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from cluster.testkit import wait_until
from dummy.accept import AcceptLedger, accepted_during
from dummy.engine import Totals
from dummy.histogram import Histogram
from dummy.report import build_report, summary
from dummy.run import exit_code
from tests.harness import ClusterUnderTest, RoleProcess

WAIT = 30.0  # generous bound for every condition below


def cluster_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def roles_cluster(make_cluster):
    """A cluster of separately started roles (so one gateway can be killed and replaced without a
    supervisor restarting it): broker, monitor, 2 game workers, an auth worker, a gateway; and
    60 accounts."""
    cluster = make_cluster(game={"verify_key": True}, monitor={"summary_interval": 3600.0})
    accounts = cluster.dir / "accounts.tsv"
    created = cluster_cli("accounts", "create", "--config", str(cluster.config), "--count", "60",
                          "--out", str(accounts))  # fmt: skip
    assert created.returncode == 0, created.stderr
    for role in ("broker", "monitor", "game", "game", "auth"):
        cluster.start(role)
    gateway = cluster.start("gateway")
    return cluster, accounts, gateway


def start_dummy(cluster: ClusterUnderTest, accounts, duration: float, report) -> RoleProcess:
    return RoleProcess(
        ["dummy", "run", "--config", str(cluster.config), "--accounts", str(accounts),
         "--clients", "30", "--rand-disconnect", "10", "--echo-overlap", "2",
         "--duration", str(duration), "--report", str(report)],
        cluster.dir / "dummy.log", wait_ready=False,
    )  # fmt: skip


def stdout_of(process: RoleProcess) -> str:
    """Everything a finished process printed on stdout."""
    lines = []
    while True:
        try:
            line = process.lines.get(timeout=10)
        except queue.Empty:
            break
        if line is None:
            break
        lines.append(line)
    return "\n".join(lines)


def snapshot(cluster: ClusterUnderTest) -> dict[str, Any]:
    url = f"http://127.0.0.1:{cluster.metrics_port}/status.json"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def gateway_sample(cluster: ClusterUnderTest, pid: int) -> dict[str, Any] | None:
    for sample in snapshot(cluster)["processes"]:
        if sample["role"] == "gateway" and sample["pid"] == pid:
            return sample
    return None


def accepted(sample: dict[str, Any]) -> int:
    return sample["accept_total_login"] + sample["accept_total_game"]


def test_a_gateway_killed_and_replaced_mid_run_leaves_no_false_mismatch(roles_cluster):
    cluster, accounts, old = roles_cluster
    report_path = cluster.dir / "report.json"
    dummy = start_dummy(cluster, accounts, 15, report_path)

    # The run is under way: the gateway has accepted some of its connects.
    wait_until(lambda: (s := gateway_sample(cluster, old.pid)) and accepted(s) > 0,
               "the gateway accepting the dummy's connects", timeout=WAIT)  # fmt: skip

    # What a gateway killed outright accepted after its last sample is known to nobody, nor are
    # connects the kernel completed into its backlog just before it died (the dummy counts those
    # in connect_total, they never reached a gateway). So the dummy is frozen first, and the
    # gateway is killed only once its samples show it took every connect made until then.
    dummy.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.time()
        seen: list[dict[str, Any]] = []

        def settled() -> bool:
            sample = gateway_sample(cluster, old.pid)
            newer = seen[-1]["time"] if seen else frozen_at
            if sample and sample["time"] > newer:
                seen.append(sample)
            return len(seen) >= 2 and accepted(seen[-1]) == accepted(seen[-2])

        wait_until(settled, "two equal samples of the gateway after the dummy froze", timeout=WAIT)
        old.kill()
    finally:
        dummy.send_signal(signal.SIGCONT)
    last_of_old = accepted(seen[-1])

    # With no gateway, the dummy's connects are refused: Connect Fail, not Connect Total.
    dummy.wait_log(r"connects to \S+ fail \(Connection refused\)", timeout=WAIT)
    new = cluster.start("gateway")  # same config, same ports; returns on its ready line
    assert new.pid != old.pid
    dummy.wait_log(r"connects to \S+ succeed again", timeout=WAIT)

    assert dummy.proc.wait(90) == 0, dummy.log()
    out = stdout_of(dummy)
    report = json.loads(report_path.read_text())
    assert report["errors"].get("packet_error", 0) == 0, report["errors"]
    assert report["connect_fail"] > 0  # refused while the gateway was down ...
    assert report["down_client"] > 0  # ... and the kill cut the sessions it held
    # Every connect attempt is in connect_total or connect_fail: a connect refused while no gateway
    # listened is in connect_fail only, so "connect_total less the connects refused while the
    # gateway was down" is connect_total itself, and that is what the gateways accepted.
    assert report["accept_total"] == report["connect_total"], out
    assert report["connect_matches_accept"] is True
    assert "MISMATCH" not in out
    assert f"connect_total == accept_total == {report['accept_total']}: OK" in out

    gateways = {g["id"]: g for g in report["accept_gateways"]}
    assert len(gateways) == 2, gateways
    by_status = {(g["seen"], g["status"]): g for g in gateways.values()}
    old_gateway = by_status[("before the run", "gone")]
    new_gateway = by_status[("during the run", "live")]
    # The old way (the live gateways' totals after, less those before) would have missed all that
    # the killed gateway accepted: here, what it had reached in its last sample.
    assert old_gateway["accepted"] == last_of_old > 0
    assert new_gateway["accepted"] > 0
    assert old_gateway["accepted"] + new_gateway["accepted"] == report["accept_total"]
    assert f"{old_gateway['id']} went away ({last_of_old} accepted)" in out
    assert f"{new_gateway['id']} started during the run" in out


def test_a_monitor_gone_at_the_end_is_said_plainly_not_a_mismatch(roles_cluster):
    cluster, accounts, gateway = roles_cluster
    monitor = next(p for p in cluster.processes if p.args[0] == "monitor")
    report_path = cluster.dir / "report.json"
    dummy = start_dummy(cluster, accounts, 4, report_path)
    dummy.wait_log(r"following the gateways' accept totals", timeout=WAIT)
    wait_until(lambda: (s := gateway_sample(cluster, gateway.pid)) and accepted(s) > 0,
               "the gateway accepting the dummy's connects", timeout=WAIT)  # fmt: skip
    monitor.kill()

    assert dummy.proc.wait(90) == 0, dummy.log()
    out = stdout_of(dummy)
    report = json.loads(report_path.read_text())
    assert report["accept_total"] is None
    assert report["connect_matches_accept"] is None
    assert "could not be reached at the end of the run" in report["accept_note"]
    assert "accept_total unknown (the monitor could not be reached at the end of the run" in out
    assert "connect check not made" in out
    assert "MISMATCH" not in out


def test_two_dummies_at_once_say_why_their_counts_cannot_match(roles_cluster):
    """Each dummy sees the other's accepts on the gateway: both report the mismatch (exit 1) and
    say it is other clients' connections, pointing at a distributed run."""
    cluster, accounts, _ = roles_cluster
    dummies = []
    for name, first, last in (("a", 1, 30), ("b", 31, 60)):
        dummies.append(RoleProcess(
            ["dummy", "run", "--config", str(cluster.config), "--accounts", str(accounts),
             "--first", str(first), "--last", str(last), "--clients", "30",
             "--rand-disconnect", "10", "--duration", "8",
             "--report", str(cluster.dir / f"report-{name}.json")],
            cluster.dir / f"dummy-{name}.log", wait_ready=False,
        ))  # fmt: skip
    for dummy in dummies:
        assert dummy.proc.wait(90) == 1, dummy.log()
        out = stdout_of(dummy)
        line = next(line for line in out.splitlines() if line.startswith("MISMATCH"))
        assert "(difference +" in line and "other clients" in line, out
        assert "distributed run" in line


# -- the per-process accounting, on synthetic samples --------------------------------------------


def gw(ident: str, at: float, login: int, game: int, role: str = "gateway") -> dict[str, Any]:
    return {"id": ident, "role": role, "time": at, "accept_total_login": login,
            "accept_total_game": game}  # fmt: skip


def test_a_gateway_known_before_the_run_counts_its_last_total_less_its_first():
    before = [gw("a", 100.0, 40, 60)]
    assert accepted_during(before, [gw("a", 101.0, 45, 70)], [gw("a", 102.0, 50, 75)]) == 25


def test_a_restarted_gateway_counts_both_processes():
    before = [gw("a", 100.0, 10, 10)]
    # "a" is killed after reaching 50; "b" (same ports, new identity) starts from 0.
    during = [gw("a", 101.0, 25, 25)]
    after = [gw("a", 101.0, 25, 25), gw("b", 104.0, 7, 8)]  # "a" only in the gone list now
    assert accepted_during(before, during, after) == (50 - 20) + 15
    # The old sum-after less sum-before would have said 15 - 20 = -5.


def test_a_vanished_gateway_counts_what_its_last_seen_sample_had_reached():
    before = [gw("a", 100.0, 0, 0), gw("b", 100.0, 5, 5)]
    during = [gw("a", 101.0, 3, 4), gw("b", 101.0, 6, 6)]
    after = [gw("b", 103.0, 8, 8)]  # "a" forgotten by the monitor: its last sample seen stands
    assert accepted_during(before, during, after) == 7 + 6


def test_a_gateway_appearing_during_the_run_counts_in_full_and_even_if_it_vanished():
    before = [gw("a", 100.0, 1, 1)]
    during = [gw("a", 101.0, 1, 1), gw("new", 101.5, 3, 2)]  # new: every accept is in the run
    later = [gw("a", 102.0, 2, 1), gw("new", 102.5, 4, 4)]
    after = [gw("a", 103.0, 2, 2)]  # "new" went away again
    assert accepted_during(before, during, later, after) == 2 + 8


def test_stale_repeats_other_roles_and_gateways_gone_before_the_run_add_nothing():
    ledger = AcceptLedger()
    ledger.observe([gw("a", 100.0, 5, 5), gw("dead", 90.0, 70, 30), gw("g", 100.0, 9, 9, "game")],
                   before_run=True)  # fmt: skip
    ledger.observe([gw("a", 100.0, 5, 5), gw("dead", 90.0, 70, 30)])  # the same samples again
    ledger.observe([gw("a", 99.0, 0, 0)])  # an older sample arriving late: ignored
    ledger.observe([gw("g", 101.0, 50, 50, "game"), {"role": "gateway", "time": 101.0}])
    assert ledger.total == 0
    ledger.observe([gw("a", 101.0, 6, 7)])
    assert ledger.total == 3
    assert {g.id: g.accepted for g in ledger.gateways.values()} == {"a": 3, "dead": 0}


def test_the_chat_port_accepts_count_too_and_a_gateway_without_it_counts_0():
    before = [gw("a", 100.0, 10, 10) | {"accept_total_chat": 5}, gw("old", 100.0, 1, 1)]
    after = [gw("a", 101.0, 12, 10) | {"accept_total_chat": 9}, gw("old", 101.0, 2, 1)]
    assert accepted_during(before, after) == (2 + 4) + 1


def test_a_counter_going_back_within_one_identity_keeps_what_was_counted():
    before = [gw("a", 100.0, 10, 0)]
    assert accepted_during(before, [gw("a", 101.0, 30, 0)], [gw("a", 102.0, 4, 0)]) == 20 + 4


def test_an_unknown_accept_total_is_said_with_its_reason_and_is_not_a_failure():
    report = build_report(
        Totals(connect_total=12, login_ok=4), Histogram(), duration=3.0, clients=4,
        accept_total=None,
        accept_note="the monitor could not be reached at the end of the run (the monitor "
        "monitor@h/1/ab did not answer)", agents=[], options={},
    )  # fmt: skip
    text = summary(report)
    assert (
        "accept_total unknown (the monitor could not be reached at the end of the run (the "
        "monitor monitor@h/1/ab did not answer)): connect check not made"
    ) in text
    assert "MISMATCH" not in text
    assert report["connect_matches_accept"] is None
    assert exit_code(report) == 0


def test_a_run_where_no_client_got_into_the_game_exits_1_and_says_why(caplog):
    totals = Totals(connect_total=8)
    totals.errors["game_login_failed"] += 8
    report = build_report(
        totals, Histogram(), duration=3.0, clients=8, accept_total=8, agents=[], options={},
    )  # fmt: skip
    with caplog.at_level("ERROR", logger="dummy"):
        assert exit_code(report) == 1
    assert "no client got into the game (game_login_failed=8)" in caplog.text
    totals.login_ok = 1
    ok = build_report(
        totals, Histogram(), duration=3.0, clients=8, accept_total=8, agents=[], options={},
    )  # fmt: skip
    assert exit_code(ok) == 0
