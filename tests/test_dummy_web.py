"""The dummy on the real client's whole path (``--path web``): web login -> login port -> game or
chat port, on real processes (broker, monitor, game, auth, gateway, web, and chat when on), with
accounts and passwords made by ``cluster accounts create``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.testkit import free_ports
from dummy.accounts import Account, check_passwords, read_accounts
from dummy.engine import Totals
from dummy.histogram import Histogram
from dummy.report import build_report, summary
from tests.backends import Backend
from tests.harness import ClusterUnderTest, RoleProcess

#: The web login's per-address rate limit out of the way (all the dummy's clients share one
#: address), as load tests configure it; one test keeps the default to see the 429s.
NO_RATE_LIMIT = {"address_rate": 0.0}


def cluster_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


class WebCluster:
    def __init__(self, cluster: ClusterUnderTest, accounts: Path) -> None:
        self.cluster = cluster
        self.accounts = accounts

    def dummy(self, *args: str, accounts: Path | None = None, app: str = "echo",
              timeout: float = 180) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return cluster_cli("dummy", "run", "--app", app, "--config", str(self.cluster.config),
                           "--accounts", str(accounts or self.accounts), "--path", "web",
                           *args, timeout=timeout)  # fmt: skip


def start_web_cluster(make_cluster, count: int, chat: bool = False, link_mode: str = "systemlink",
                      backend: Backend | None = None, web: dict[str, Any] | None = None
                      ) -> WebCluster:  # fmt: skip
    sections: dict[str, Any] = {
        "cluster": {"link_mode": link_mode},
        "game": {"verify_key": True},
        "web": {"enabled": True, **(NO_RATE_LIMIT if web is None else web)},
        "monitor": {"summary_interval": 3600.0},
        "chat": {"enabled": chat},
    }
    if backend is not None:
        sections["db"] = backend.db_section
    cluster = make_cluster(**sections)
    accounts = cluster.dir / "accounts.tsv"
    created = cluster_cli("accounts", "create", "--config", str(cluster.config), "--count",
                          str(count), "--out", str(accounts))  # fmt: skip
    assert created.returncode == 0, created.stderr
    roles = ["broker", "monitor", "game", *(["chat"] if chat else []), "auth", "gateway", "web"]
    for role in roles:
        cluster.start(role)
    return WebCluster(cluster, accounts)


def last_row(csv_path: Path) -> dict[str, str]:
    header, *rows = csv_path.read_text().splitlines()
    return dict(zip(header.split(","), rows[-1].split(","), strict=True))


# -- the accounts file ---------------------------------------------------------------------------


def test_accounts_files_with_four_or_five_columns_are_read(tmp_path):
    key = "k" * 64
    path = tmp_path / "a.tsv"
    path.write_text(f"1\tID_1\tNICK_1\t{key}\tsecret-one\n\n2\tID_2\tNICK_2\t{key}\t\n"
                    f"3\tID_3\tNICK_3\t{key}\n")  # fmt: skip
    assert read_accounts(path) == [
        Account(1, "ID_1", "NICK_1", key.encode(), "secret-one"),
        Account(2, "ID_2", "NICK_2", key.encode(), ""),
        Account(3, "ID_3", "NICK_3", key.encode(), ""),
    ]
    check_passwords(read_accounts(path)[:1], path)
    with pytest.raises(ValueError, match=r"--path web .* no password for 2 of the 3 accounts"):
        check_passwords(read_accounts(path), path)
    path.write_text(f"1\tID_1\tNICK_1\t{key}\tpw\textra\n")
    with pytest.raises(ValueError, match=r"a.tsv:1: expected 4 or 5 tab-separated fields"):
        read_accounts(path)


def test_the_report_and_summary_show_the_web_logins():
    totals = Totals(web_ok=7, login_ok=7)
    totals.errors.update({"web_rate_limited": 3, "web_invalid": 1})
    report = build_report(totals, Histogram(), duration=1.0, clients=7, accept_total=None,
                          agents=[], options={})  # fmt: skip
    assert report["web"] == {"web_ok": 7, "web_invalid": 1, "web_rate_limited": 3,
                             "web_busy": 0, "web_error": 0}  # fmt: skip
    assert "web logins: ok 7, invalid 1, rate limited 3, busy 0, error 0" in summary(report)


# -- against a real cluster ----------------------------------------------------------------------


@pytest.mark.parametrize("link_mode", ["systemlink", "non-systemlink"])
def test_echo_clients_log_in_on_the_web_then_the_login_and_game_ports(
    make_cluster, backend, link_mode
):
    wc = start_web_cluster(make_cluster, 30, link_mode=link_mode, backend=backend)
    report_path, csv_path = wc.cluster.dir / "report.json", wc.cluster.dir / "seconds.csv"
    result = wc.dummy("--clients", "30", "--duration", "4", "--report", str(report_path),
                      "--csv", str(csv_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["errors"] == {}, report["errors"]
    assert report["web"]["web_ok"] == 30 and report["login_ok"] == 30
    assert report["connect_total"] == 60  # login port + game port, each client once
    assert report["connect_total"] == report["accept_total"]
    assert report["down_client"] == 0 and report["echo_recv"] > 0
    assert int(last_row(csv_path)["in_game"]) == 30
    assert "web logins: ok 30, invalid 0" in result.stdout
    assert "connect_total == accept_total" in result.stdout


def test_reconnecting_echo_clients_log_in_on_the_web_each_time(make_cluster):
    wc = start_web_cluster(make_cluster, 20)
    report_path = wc.cluster.dir / "report.json"
    result = wc.dummy("--clients", "20", "--rand-disconnect", "5", "--duration", "4",
                      "--report", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["errors"] == {}, report["errors"]
    assert report["disconnects"] > 0 and report["login_ok"] > 20
    # every game login had a web login of its own (one more may be under way at the end)
    assert report["login_ok"] <= report["web"]["web_ok"] <= report["login_ok"] + 20
    assert report["connect_total"] == report["accept_total"]


def test_chat_clients_log_in_on_the_web_then_the_login_and_chat_ports(make_cluster):
    wc = start_web_cluster(make_cluster, 30, chat=True)
    report_path, csv_path = wc.cluster.dir / "chat.json", wc.cluster.dir / "seconds.csv"
    result = wc.dummy("--clients", "30", "--delay-action", "50", "--sector-range", "3",
                      "--duration", "4", "--report", str(report_path), "--csv", str(csv_path),
                      app="chat")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["check_errors"] == 0 and report["errors"] == {}, report["errors"]
    assert report["web"]["web_ok"] == 30 and report["login_ok"] == 30
    assert report["connect_total"] == 60
    assert report["connect_total"] == report["accept_total"]
    assert report["down_client"] == 0 and report["deliveries"] > 0
    assert int(last_row(csv_path)["in_chat"]) == 30


def test_a_wrong_password_is_counted_and_gets_no_client_in(make_cluster):
    wc = start_web_cluster(make_cluster, 5)
    wrong = wc.cluster.dir / "wrong.tsv"
    wrong.write_text("".join(
        "\t".join([*line.split("\t")[:4], "not-the-password"]) + "\n"
        for line in wc.accounts.read_text().splitlines()
    ))  # fmt: skip
    report_path, csv_path = wc.cluster.dir / "report.json", wc.cluster.dir / "seconds.csv"
    result = wc.dummy("--clients", "5", "--duration", "3", "--report", str(report_path),
                      "--csv", str(csv_path), accounts=wrong)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # nobody got in
    assert "no client got into the game (web_invalid=" in result.stderr
    report = json.loads(report_path.read_text())
    assert report["web"]["web_ok"] == 0 and report["login_ok"] == 0
    # each client tries again after about a second, and each try is counted
    assert 5 <= report["errors"]["web_invalid"] <= 5 * 5
    assert set(report["errors"]) == {"web_invalid"}
    assert report["connect_total"] == 0 and report["connect_total"] == report["accept_total"]
    assert int(last_row(csv_path)["in_game"]) == 0


def test_the_default_address_rate_limit_holds_clients_back_and_they_retry(make_cluster):
    wc = start_web_cluster(make_cluster, 60, web={})  # 10 a second, burst 20
    report_path, csv_path = wc.cluster.dir / "report.json", wc.cluster.dir / "seconds.csv"
    result = wc.dummy("--clients", "60", "--duration", "8", "--report", str(report_path),
                      "--csv", str(csv_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["errors"]["web_rate_limited"] > 0
    assert set(report["errors"]) == {"web_rate_limited"}
    assert report["web"]["web_ok"] == 60 and report["login_ok"] == 60
    assert int(last_row(csv_path)["in_game"]) == 60
    assert report["connect_total"] == report["accept_total"] == 120


def test_a_file_without_passwords_is_refused_with_one_line(make_cluster):
    cluster = make_cluster()
    accounts = cluster.dir / "accounts.tsv"
    accounts.write_text("".join(f"{n}\tID_{n}\tNICK_{n}\t{'k' * 64}\n" for n in range(1, 4)))
    for app in ("echo", "chat"):
        result = cluster_cli("dummy", "run", "--app", app, "--config", str(cluster.config),
                             "--accounts", str(accounts), "--path", "web",
                             "--clients", "3")  # fmt: skip
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--path web" in lines[0] and "no password" in lines[0], lines
        assert str(accounts) in lines[0]


def test_controller_and_agents_on_the_web_path(make_cluster):
    wc = start_web_cluster(make_cluster, 30)
    report_path = wc.cluster.dir / "report.json"
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    controller = RoleProcess(
        ["dummy", "controller", "--config", str(wc.cluster.config), "--listen", endpoint,
         "--agents", "2", "--accounts", str(wc.accounts), "--clients", "30", "--path", "web",
         "--duration", "4", "--report", str(report_path), "--wait", "30"],
        wc.cluster.dir / "controller.log", wait_ready=False,
    )  # fmt: skip
    agents = [RoleProcess(["dummy", "agent", "--controller", endpoint],
                          wc.cluster.dir / f"agent{n}.log", wait_ready=False)
              for n in range(2)]  # fmt: skip
    assert controller.proc.wait(90) == 0, controller.log()
    for agent in agents:
        assert agent.proc.wait(30) == 0, agent.log()
    report = json.loads(report_path.read_text())
    assert [a["status"] for a in report["agents"]] == ["finished", "finished"]
    assert report["errors"] == {}, report["errors"]
    assert report["web"]["web_ok"] == 30 == sum(a["web_ok"] for a in report["agents"])
    assert report["login_ok"] == 30
    assert report["connect_total"] == report["accept_total"] == 60


def test_demo_takes_the_web_path_by_default(make_cluster):
    cluster = make_cluster(chat={"enabled": True})  # its [web] is off: the demo turns it on
    report_path = cluster.dir / "demo.json"
    result = cluster_cli("demo", "--config", str(cluster.config), "--duration", "3",
                         "--clients", "20", "--report", str(report_path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "path web" in result.stdout and "demo: cluster stopped" in result.stdout
    assert "connect_total == accept_total" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["connect_matches_accept"] is True
    for part in ("game", "chat"):
        assert report[part]["errors"] == {}, report[part]["errors"]
        assert report[part]["web"]["web_ok"] >= 20 and report[part]["login_ok"] >= 1
