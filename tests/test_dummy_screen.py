"""The dummy's screen fields of the original (StartTime, threads x clients per thread, Disconnect,
Minimum Check Delay) and AccountNo ranges of one shared accounts file."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import config as config_module
from cluster.db import open_database
from cluster.testkit import free_ports, wait_until
from dummy import accounts as accounts_module
from dummy.accounts import Account, account_range, read_range
from dummy.engine import Engine, LoadOptions
from tests.harness import RoleProcess
from tests.test_chat_dummy import start_chat_cluster

KEY = "k" * 64


def cluster_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster", *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


@pytest.fixture
def loaded_cluster(make_cluster):
    """A whole cluster under `cluster up` (keys verified, so logins set the status rows), and
    60 accounts."""
    cluster = make_cluster(game={"verify_key": True}, workers={"game": 1, "auth": 1},
                           monitor={"summary_interval": 3600.0})  # fmt: skip
    accounts = cluster.dir / "accounts.tsv"
    created = cluster_cli("accounts", "create", "--config", str(cluster.config), "--count", "60",
                          "--out", str(accounts))  # fmt: skip
    assert created.returncode == 0, created.stderr
    cluster.start("up")
    return cluster, accounts


class Screen:
    """A dummy (or controller) on a pseudo-terminal, and the frames of its screen."""

    def __init__(self, args: list[str]) -> None:
        self.main, secondary = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "cluster", *args], stdin=secondary,
                                     stdout=secondary, stderr=subprocess.DEVNULL)  # fmt: skip
        os.close(secondary)
        self.seen = ""

    def frames(self) -> list[str]:
        """The complete frames so far (each starts with the clear-screen code)."""
        while select.select([self.main], [], [], 0.05)[0]:
            try:
                self.seen += os.read(self.main, 65536).decode(errors="replace")
            except OSError:
                break
        return [f for f in self.seen.split("\x1b[H\x1b[2J")[1:-1] if "Errors" in f]

    def wait_frame(self, pattern: str, timeout: float = 30) -> str:
        regex = re.compile(pattern)
        return wait_until(lambda: next((f for f in self.frames() if regex.search(f)), None),
                          f"a frame matching {pattern!r}", timeout=timeout,
                          detail=lambda: self.seen[-3000:])  # fmt: skip

    def quit(self) -> None:
        os.write(self.main, b"q")
        assert self.proc.wait(60) in (0, 1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        os.close(self.main)


def field(frame: str, label: str) -> str:
    match = re.search(rf"{re.escape(label)}\s*:\s*(\S.*?)(?:\s{{4}}|\s*$)", frame, re.M)
    assert match, (label, frame)
    return match[1].strip()


def number(frame: str, label: str) -> int:
    return int(field(frame, label))


def test_echo_screen_shows_start_time_threads_disconnect_and_minimum_check_delay(loaded_cluster):
    cluster, accounts = loaded_cluster
    before = time.time()
    screen = Screen(["dummy", "run", "--config", str(cluster.config), "--accounts", str(accounts),
                     "--clients", "10", "--threads", "2", "--delay-action", "20", "--ramp", "4",
                     "--duration", "3600"])  # fmt: skip
    try:
        full = screen.wait_frame(r"In Game\s+:\s+10\b", timeout=60)
        frames = screen.frames()
        screen.quit()
    finally:
        screen.close()
    after = time.time()
    start = time.mktime(time.strptime(field(full, "StartTime"), "%Y-%m-%d %H:%M:%S"))
    assert int(before) <= start <= after
    assert all(field(f, "StartTime") == field(full, "StartTime") for f in frames)
    assert number(full, "Thread Count") == 2 and field(full, "Client per Thread") == "5"
    assert re.search(r"^ # Minimum Check Delay : 20 ms", full, re.M), full
    # Action Delay's floor is the Minimum Check Delay: no loop came round sooner
    low = float(re.search(r"Action Delay\s+: min ([\d.]+) ms", full)[1])  # type: ignore[index]
    assert low >= 19.0, full
    # Disconnect: the clients without a connection. The ramp (4 connects a second) shows them
    # going down to 0 once all 10 are in game; a client in game has its connection, an idle one
    # none.
    seen = [number(f, "Disconnect") for f in frames]
    assert max(seen) > 0 and number(full, "Disconnect") == 0, seen
    for f in frames:
        total, in_login, in_game = (number(f, k) for k in ("Client Total", "In Login", "In Game"))
        assert total - in_login - in_game <= number(f, "Disconnect") <= total - in_game, f


def test_controller_screen_sums_the_agents_threads(loaded_cluster):
    cluster, accounts = loaded_cluster
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    screen = Screen(["dummy", "controller", "--config", str(cluster.config), "--listen", endpoint,
                     "--agents", "2", "--accounts", f"{accounts}:11-15", "--clients", "5",
                     "--threads", "3", "--delay-action", "15", "--duration", "3600",
                     "--wait", "60"])  # fmt: skip
    agents = [RoleProcess(["dummy", "agent", "--controller", endpoint],
                          cluster.dir / f"agent{n}.log", wait_ready=False)
              for n in range(2)]  # fmt: skip
    try:
        full = screen.wait_frame(r"In Game\s+:\s+5\b", timeout=60)
        screen.quit()
    finally:
        screen.close()
        for agent in agents:
            agent.stop()
    # --threads is per agent, capped at its share: 3 clients in 3 loops and 2 in 2
    assert number(full, "Thread Count") == 5 and field(full, "Client per Thread") == "1"
    assert number(full, "Agents") == 2 and number(full, "Disconnect") == 0
    assert re.search(r"^ # Minimum Check Delay : 15 ms", full, re.M), full
    start = time.mktime(time.strptime(field(full, "StartTime"), "%Y-%m-%d %H:%M:%S"))
    assert abs(start - time.time()) < 600


def test_chat_screen_shows_the_new_fields_and_takes_an_account_range(make_cluster):
    chat = start_chat_cluster(make_cluster, count=30)
    screen = Screen(["dummy", "run", "--app", "chat", "--config", str(chat.config), "--accounts",
                     str(chat.accounts), "--first", "21", "--last", "26", "--clients", "6",
                     "--threads", "3", "--delay-action", "200", "--duration", "3600"])  # fmt: skip
    try:
        full = screen.wait_frame(r"IN Chat\s+:\s+6\b", timeout=60)
        screen.quit()
    finally:
        screen.close()
    assert number(full, "Thread Count") == 3 and field(full, "Client per Thread") == "2"
    assert number(full, "Disconnect") == 0 and number(full, "Client Total") == 6
    assert re.search(r"^ # Minimum Check Delay : 200 ms", full, re.M), full
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", field(full, "StartTime"))


# -- AccountNo ranges ----------------------------------------------------------------------------


def _in_game(config: Path, numbers: range) -> set[int]:
    """The accounts of `numbers` whose status row says in game (status 1), from the DB."""

    async def query() -> set[int]:
        db = await open_database(config_module.load(config))
        try:
            rows = await db.accounts(list(numbers))
        finally:
            await db.close()
        return {no for no, row in rows.items() if row.status == 1}

    return asyncio.run(query())


def test_two_dummies_with_disjoint_ranges_of_one_file_log_in_disjoint_accounts(loaded_cluster):
    cluster, accounts = loaded_cluster
    everyone = range(1, 61)
    assert _in_game(cluster.config, everyone) == set()

    def dummy(name: str, *spec: str) -> RoleProcess:
        return RoleProcess(["dummy", "run", "--config", str(cluster.config), "--clients", "10",
                            "--duration", "3600", "--report", str(cluster.dir / f"{name}.json"),
                            *spec], cluster.dir / f"{name}.log", wait_ready=False)  # fmt: skip

    first = dummy("first", "--accounts", f"{accounts}:5-14")
    wait_until(lambda: _in_game(cluster.config, everyone) == set(range(5, 15)),
               "accounts 5..14 in game", timeout=60, detail=first.log)  # fmt: skip
    second = dummy("second", "--accounts", str(accounts), "--first", "15", "--last", "24")
    wait_until(lambda: _in_game(cluster.config, everyone) == set(range(5, 25)),
               "accounts 5..24 in game", timeout=60, detail=second.log)  # fmt: skip
    # Each one's accept check counts the other's connects too (one gateway): 1 says so, not 0.
    assert first.stop(signal.SIGINT) in (0, 1), first.log()
    assert second.stop(signal.SIGINT) in (0, 1), second.log()
    for name in ("first", "second"):
        report = json.loads((cluster.dir / f"{name}.json").read_text())
        assert report["clients"] == 10 and report["connect_total"] >= 20, report
        # Each logged in its own ten once: no login took an account from the other dummy.
        assert report["login_ok"] == 10 and report["down_client"] == 0, report
        assert report["errors"] == {}, report


def test_a_range_picks_exactly_the_lines_of_its_account_numbers(tmp_path):
    path = tmp_path / "a.tsv"
    numbers = [7, 3, 100, 4, 5, 99, 6]
    path.write_text("".join(f"{n}\tID_{n}\tNICK_{n}\t{KEY}\n" for n in numbers))
    picked = read_range(f"{path}:4-99")
    assert [a.account_no for a in picked] == [7, 4, 5, 99, 6]  # in file order, bounds included
    assert [a.account_no for a in read_range(path, "6", None)] == [7, 100, 99, 6]
    assert [a.account_no for a in read_range(path, None, "4")] == [3, 4]
    assert [a.account_no for a in read_range(str(path))] == numbers
    # a file whose name has a colon is a file, not a range
    odd = tmp_path / "b:1-2"
    odd.write_text(f"1\tID_1\tNICK_1\t{KEY}\n")
    assert [a.account_no for a in read_range(str(odd))] == [1]
    assert account_range(f"{path}:1-2") == (str(path), 1, 2)
    one = [Account(1, "", "", b"k")]
    assert accounts_module.select(one, account_range(f"{path}:1-1")) == one


def test_threads_split_the_clients_into_loops_of_even_shares():
    engine_groups = asyncio.run(_groups(LoadOptions(clients=11, threads=3)))
    assert [len(g) for g in engine_groups] == [4, 4, 3]
    assert [n for g in engine_groups for n in g] == list(range(1, 12))  # each in one loop, once


async def _groups(options: LoadOptions) -> list[list[int]]:
    engine = Engine(options, [(n, b"k" * 64) for n in range(1, 12)])
    return [[c.account_no for c in group] for group in engine.groups()]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{f}:5-2"], "reversed"),
        (["{f}:20-30"], "no account of"),
        (["{f}:x"], "FILE:START-END"),
        (["{f}:3-"], "FILE:START-END"),
        (["{f}:-3"], "FILE:START-END"),
        (["{f}", "--first", "3", "--last", "1"], "reversed"),
        (["{f}:1-3", "--first", "2"], "not both"),
        (["{f}", "--first", "one"], "--first 'one' is not an AccountNo"),
        (["{f}", "--last", "-4"], "--last '-4' is not an AccountNo"),
        (["{f}", "--first", "8", "--clients", "3"], "3 clients need 3 accounts"),
        (["{f}", "--threads", "0"], "--threads must be 1..100"),
        (["{f}", "--threads", "101"], "--threads must be 1..100"),
        (["{f}:1-2", "--clients", "2", "--threads", "3"], "--threads 3 needs"),
    ],
)
@pytest.mark.parametrize("command", ["run", "controller"])
def test_bad_ranges_and_threads_exit_2_with_one_line(tmp_path, args, says, command):
    accounts = tmp_path / "a.tsv"
    accounts.write_text("".join(f"{n}\tID_{n}\tNICK_{n}\t{KEY}\n" for n in range(1, 10)))
    extra = ["--listen", "tcp://127.0.0.1:1", "--agents", "1"] if command == "controller" else []
    spec = [a.replace("{f}", str(accounts)) for a in args]
    if "--clients" not in spec:
        spec += ["--clients", "1"]
    result = cluster_cli("dummy", command, *extra, "--duration", "1", "--accounts", *spec)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
