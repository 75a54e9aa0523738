"""The screens' figures from a real cluster, and the console keys of `cluster up`:

- each close is counted once in the screens' Drops (a worker's close is not counted again by the
  gateway that carries it out);
- AuthFPS and GameFPS are two loops' figures: echo traffic alone raises GameFPS, refused logins
  alone raise AuthFPS;
- SessionAll (the login rows and the LoginServer screen) is the login ports' sessions;
- the console starts locked; U unlocks, L locks, Q quits only when unlocked (through a real
  pseudo-terminal).
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from typing import Any

import psutil

from cluster.codec import Codec
from cluster.launch.keys import LOCKED_HINT, ConsoleLock
from cluster.launch.screens import drops_by_reason, render_screens
from cluster.launch.supervisor import CLEAR
from cluster.messages import ChatReqSectorMove, GameLoginStatus, GameReqEcho
from cluster.testkit import free_ports, wait_until, write_config
from dummy.client import ChatClient, GameClient
from tests.harness import run
from tests.test_monitoring import by_role, status_json, wait_status

# -- drops: one close, one count ----------------------------------------------------------------


def _section(screen: str, name: str) -> str:
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"== {name}"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("== ", "GONE"))),
               len(lines))  # fmt: skip
    return "\n".join(lines[start:end])


def test_each_close_is_counted_once_in_the_screens_drops(make_cluster):
    cluster = make_cluster(chat={"enabled": True})
    for role in ("broker", "monitor", "game", "chat", "gateway"):
        cluster.start(role)

    async def scenario() -> None:
        game = await GameClient.connect("127.0.0.1", cluster.game_port)  # a worker's close
        assert (await game.login(5000, version=2)).status == GameLoginStatus.VERSION_MISS
        assert await game.wait_closed(5)
        chat = await ChatClient.connect("127.0.0.1", cluster.chat_port)  # a chat worker's close
        assert (await chat.login(5001)).status == 1
        chat.send(ChatReqSectorMove(5001, 9999, 0))
        assert await chat.wait_closed(5)
        login = await GameClient.connect("127.0.0.1", cluster.login_port)  # the gateway's own
        login.send_raw(Codec(code=120).encode(GameReqEcho(5002, 1)))
        assert await login.wait_closed(5)

    run(scenario())

    def carried_out(snapshot: dict[str, Any]) -> bool:
        gateways, games = by_role(snapshot, "gateway"), by_role(snapshot, "game")
        worker_closes = gateways[0].get("worker_closes", {}) if gateways else {}
        return (
            worker_closes.get("version_miss") == 1  # the gateway closed the client...
            and worker_closes.get("sector_out_of_range") == 1
            and bool(games)
            and games[0]["drops"].get("version_miss") == 1  # ...the worker too
            and gateways[0]["drops"].get("bad_code") == 1
        )

    snapshot = wait_status(cluster, carried_out, timeout=20)
    screen = render_screens(snapshot["processes"], snapshot["gone"], time.time(), width=120)
    drops = _section(screen, "Drops")
    assert drops.startswith("== Drops (total 3)"), screen
    assert drops.splitlines()[1].split() == [
        "bad_code=1", "sector_out_of_range=1", "version_miss=1"
    ]  # fmt: skip
    assert drops_by_reason(snapshot["processes"]) == {
        "bad_code": 1.0, "sector_out_of_range": 1.0, "version_miss": 1.0
    }  # fmt: skip


# -- AuthFPS and GameFPS: two loops -------------------------------------------------------------


def _game_sample(cluster) -> dict[str, Any] | None:
    games = by_role(status_json(cluster), "game")
    return games[0] if games else None


def test_echo_traffic_raises_game_fps_and_refused_logins_raise_auth_fps(make_cluster):
    # Each loop's timer runs it twice a second; anything faster is its own work.
    cluster = make_cluster(game={"frame_interval": 0.5})
    for role in ("broker", "monitor", "game", "gateway"):
        cluster.start(role)
    seen: list[dict[str, Any] | None] = []

    def sampled(predicate) -> bool:
        seen.append(_game_sample(cluster))
        return seen[-1] is not None and predicate(seen[-1])

    async def with_load(load, predicate) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(load(stop))
        try:
            await asyncio.to_thread(
                wait_until, lambda: sampled(predicate), "the loops' figures", timeout=40,
                interval=0.3, detail=lambda: seen[-1],
            )  # fmt: skip
        finally:
            stop.set()
            await task

    async def echoing(stop: asyncio.Event) -> None:
        client = await GameClient.connect("127.0.0.1", cluster.game_port)
        assert (await client.login(7)).status == GameLoginStatus.OK
        tick = 0
        while not stop.is_set():
            await client.echo(1, first_tick=tick)  # one request at a time: a frame each
            tick += 1
        await client.close()

    async def refused_logins(stop: asyncio.Event) -> None:
        account = 100
        while not stop.is_set():
            account += 1
            client = await GameClient.connect("127.0.0.1", cluster.game_port)
            reply = await client.login(account, version=2)  # refused in the auth loop
            assert reply.status == GameLoginStatus.VERSION_MISS
            await client.wait_closed(5)

    run(with_load(echoing, lambda g: g["game_fps"] >= 4 * max(g["auth_fps"], 1.0)))
    run(with_load(refused_logins, lambda g: g["auth_fps"] >= 4 * max(g["game_fps"], 1.0)))


# -- SessionAll: the login ports' sessions ------------------------------------------------------


def test_session_all_is_the_login_ports_sessions_in_rows_and_on_the_screen(make_cluster, backend):
    cluster = make_cluster(monitor={"db_interval": 1.0}, db=backend.db_section,
                           gateway={"login_timeout": 120.0})  # fmt: skip
    init = subprocess.run(
        [sys.executable, "-m", "cluster", "db", "init", "--config", str(cluster.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    for role in ("broker", "monitor", "auth", "game", "gateway"):
        cluster.start(role)
    idle = 3

    async def scenario() -> None:
        # Connected and idle on the login port: no login in flight on any auth worker.
        clients = [await GameClient.connect("127.0.0.1", cluster.login_port) for _ in range(idle)]

        def rows() -> list[tuple[Any, ...]]:
            return backend.execute("SELECT SessionAll FROM status_server.login")

        await asyncio.to_thread(
            wait_until, lambda: (idle,) in rows(), "a login row with the idle sessions",
            timeout=30, interval=0.3, detail=rows,
        )  # fmt: skip
        snapshot = await asyncio.to_thread(
            wait_status, cluster,
            lambda s: sum(g["sessions_login"] for g in by_role(s, "gateway")) == idle,
        )  # fmt: skip
        assert [a["sessions"] for a in by_role(snapshot, "auth")] == [0]  # nothing in flight
        screen = render_screens(snapshot["processes"], snapshot["gone"], time.time(), width=120)
        login = _section(screen, "LoginServer")
        assert "SessionAll" in login and login.split("SessionAll")[1].split()[1] == str(idle)
        assert f" Login: SESSION {idle} " in _section(screen, "MonitoringServer")
        for client in clients:
            await client.close()

    run(scenario())


# -- the console keys ---------------------------------------------------------------------------


def test_console_lock_state() -> None:
    quits: list[int] = []
    lock = ConsoleLock(quit=lambda: quits.append(1))
    assert lock.locked and lock.status().startswith("console LOCKED")
    lock.key("q")
    assert quits == [] and LOCKED_HINT in lock.status()
    lock.key("x")
    assert quits == [] and lock.locked
    lock.key("U")
    assert not lock.locked and lock.status().startswith("console UNLOCKED")
    assert LOCKED_HINT not in lock.status()
    lock.key("L")
    lock.key("Q")
    assert quits == [] and lock.locked
    lock.key("u")
    lock.key("Q")
    lock.key("q")
    assert quits == [1]


class Terminal:
    """The parent's side of a pseudo-terminal: what the child printed, and keys to type."""

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.text = ""

    def read(self, timeout: float = 0.3) -> bool:
        """Read what is there; False once the child side is closed."""
        if select.select([self.leader], [], [], timeout)[0]:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            self.text += chunk.decode(errors="replace")
        return True

    def screens(self) -> list[str]:
        """The complete redraws so far (the last one may still be arriving: left out)."""
        return self.text.split(CLEAR)[1:-1]

    def wait_screen(self, predicate, what: str, after: int = 0, timeout: float = 40.0) -> str:
        """The first complete redraw after the first `after` ones for which `predicate` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for screen in self.screens()[after:]:
                if predicate(screen):
                    return screen
            if not self.read():
                break
        raise AssertionError(f"no screen with {what}:\n{self.text[-3000:]}")

    def wait_exit(self, proc: subprocess.Popen[bytes], timeout: float = 40.0) -> int:
        """Read what the child prints until `proc` exits (it may block writing to a full
        terminal otherwise); its exit code."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            self.read()
        return proc.wait(5)

    def type(self, key: bytes) -> int:
        """Type `key`; the number of complete redraws before it."""
        count = len(self.screens())
        os.write(self.leader, key)
        return count


def _up_on_terminal(tmp_path: Any, stdin: int, stdout: int) -> subprocess.Popen[bytes]:
    """`cluster up` of a broker and a monitor (free ports) writing its screens to `stdout`."""
    broker, metrics = free_ports(2)
    config = write_config(tmp_path / "cluster.toml", {
        "cluster": {"data_dir": str(tmp_path / "data")},
        "broker": {"bind": f"tcp://127.0.0.1:{broker}", "heartbeat_interval": 0.3},
        "monitor": {"metrics_port": metrics},
    })  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "cluster", "up", "--config", str(config),
         "--only", "broker,monitor", "--skip-db-init"],
        stdin=stdin, stdout=stdout, stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120", "LINES": "50"},
    )  # fmt: skip


def test_console_keys_through_a_terminal(tmp_path) -> None:
    leader, follower = pty.openpty()
    cooked = termios.tcgetattr(follower)[3]
    assert cooked & termios.ICANON and cooked & termios.ECHO
    proc = _up_on_terminal(tmp_path, stdin=follower, stdout=follower)
    term = Terminal(leader)
    try:
        term.wait_screen(lambda s: "console LOCKED" in s, "the locked console")
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        mode = termios.tcgetattr(follower)[3]
        assert not mode & termios.ICANON and not mode & termios.ECHO  # single keys, no echo

        before = term.type(b"q")  # locked: a hint, nothing else
        term.wait_screen(lambda s: LOCKED_HINT in s, "the locked hint", after=before)
        assert proc.poll() is None

        before = term.type(b"u")
        term.wait_screen(lambda s: "console UNLOCKED" in s, "the unlocked console", after=before)
        before = term.type(b"l")  # locked again: Q does nothing
        term.wait_screen(lambda s: "console LOCKED" in s, "the console locked again",
                         after=before)  # fmt: skip
        before = term.type(b"Q")
        term.wait_screen(lambda s: LOCKED_HINT in s, "the hint again", after=before)
        assert proc.poll() is None

        before = term.type(b"u")
        term.wait_screen(lambda s: "console UNLOCKED" in s, "the unlocked console", after=before)
        term.type(b"q")
        assert term.wait_exit(proc) == 0
        assert psutil.wait_procs(children, timeout=10)[1] == []
        restored = termios.tcgetattr(follower)[3]
        assert restored & termios.ICANON and restored & termios.ECHO  # the terminal's mode back
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(follower)
        os.close(leader)
    ready = next(line for line in term.text.splitlines() if line.startswith("ready"))
    screens = term.text.split(CLEAR)[1:]
    assert len(screens) >= 5
    for screen in screens:  # every redraw, the last one included, starts with the ready line
        assert screen.startswith(ready.strip()), screen[:200]
    assert "console UNLOCKED" in screens[-1].splitlines()[1]


def test_a_hangup_stops_the_cluster_gracefully_and_restores_the_terminal(tmp_path) -> None:
    """SIGHUP (the terminal went away) is a graceful stop, as SIGTERM: children drained, exit 0,
    the console's mode restored (it would otherwise die at once and leave its children)."""
    leader, follower = pty.openpty()
    proc = _up_on_terminal(tmp_path, stdin=follower, stdout=follower)
    term = Terminal(leader)
    try:
        term.wait_screen(lambda s: "console LOCKED" in s, "the locked console")
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        proc.send_signal(signal.SIGHUP)
        assert term.wait_exit(proc) == 0
        assert psutil.wait_procs(children, timeout=10)[1] == []  # stopped, not left behind
        restored = termios.tcgetattr(follower)[3]
        assert restored & termios.ICANON and restored & termios.ECHO
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(follower)
        os.close(leader)


def test_keys_are_not_read_off_a_terminal(tmp_path) -> None:
    """stdin not a terminal (systemd, a pipe): a Q there stops nothing, the screen shows no
    console line."""
    leader, follower = pty.openpty()
    proc = _up_on_terminal(tmp_path, stdin=subprocess.PIPE, stdout=follower)
    os.close(follower)
    term = Terminal(leader)
    try:
        first = term.wait_screen(lambda s: "LoginServer" in s, "a screen")
        assert "console" not in first.splitlines()[1]
        assert proc.stdin is not None
        proc.stdin.write(b"uq")
        proc.stdin.flush()
        seen = len(term.screens())
        term.wait_screen(lambda s: True, "two more redraws", after=seen + 1)
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        os.close(leader)
    # stdout a terminal, stdin not: the screens are drawn all the same, each under the ready line
    ready = next(line for line in term.text.splitlines() if line.startswith("ready"))
    for screen in term.text.split(CLEAR)[1:]:
        assert screen.startswith(ready.strip()), screen[:200]
