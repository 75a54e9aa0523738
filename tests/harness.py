"""Real processes on real loopback sockets, for the integration tests.

:class:`RoleProcess` starts ``python -m cluster ROLE --config F`` and waits for its ``ready``
line on stdout (never a sleep); its stderr goes to a file that tests can search while it runs
(:meth:`RoleProcess.wait_log`). :class:`ClusterUnderTest` writes a config with free ports and
starts the roles a test asks for. Everything started is killed at teardown. Ports, config files
and waiting for a condition come from :mod:`cluster.testkit`; databases from
:mod:`tests.backends`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cluster.testkit import free_ports, wait_until, write_config

READY_TIMEOUT = 20.0


class RoleProcess:
    """One started ``cluster`` subcommand."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        timeout: float = READY_TIMEOUT,
        prefix: list[str] | None = None,
    ) -> None:
        self.args = args
        self.log_path = log_path
        self._stderr = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "cluster", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ready_line = ""
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if wait_ready:
            self.wait_ready(timeout)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """Block until the ``ready`` line; fail with the process's log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{self.args} not ready in {timeout}s:\n{self.log()}"
                ) from None
            if line is None:
                code = self.proc.wait()
                raise AssertionError(f"{self.args} exited with {code} before ready:\n{self.log()}")
            if line.startswith("ready"):
                self.ready_line = line
                return line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the stderr log matches `pattern` (polling the file, which is how a
        process's log output is observed from outside)."""
        regex = re.compile(pattern)
        return wait_until(
            lambda: regex.search(self.log()),
            f"{pattern!r} in the log of {self.args}",
            timeout=timeout,
            detail=self.log,
        )

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal and wait; kill after `timeout`. Returns the exit code."""
        self.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._stderr.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class ClusterUnderTest:
    """A config with free ports, and the role processes started from it."""

    def __init__(self, tmp_path: Path, **sections: dict[str, Any]) -> None:
        self.dir = tmp_path
        ports = free_ports(6)
        broker_port, self.game_port, self.login_port, self.metrics_port, self.chat_port = ports[:5]
        self.web_port = ports[5]
        self.sections: dict[str, dict[str, Any]] = {
            "cluster": {"data_dir": str(tmp_path / "data"), "log_level": "debug"},
            "broker": {"bind": f"tcp://127.0.0.1:{broker_port}", "heartbeat_interval": 0.5},
            "gateway": {
                "game_port": self.game_port,
                "login_port": self.login_port,
                "chat_port": self.chat_port,
            },
            "game": {"verify_key": False},
            # Chat only where a test asks for it (chat={"enabled": True}): logins need a chat
            # worker while it is on.
            "chat": {"enabled": False},
            "monitor": {"metrics_port": self.metrics_port},
            # The web login only where a test asks for it (web={"enabled": True}).
            "web": {"enabled": False, "port": self.web_port},
        }
        self.config = tmp_path / "cluster.toml"
        self.reconfigure(**sections)
        self.processes: list[RoleProcess] = []
        self._count = 0

    def reconfigure(self, **sections: dict[str, Any]) -> None:
        """Set these keys and rewrite the config file (processes started later read it)."""
        for name, values in sections.items():
            self.sections.setdefault(name, {}).update(values)
        write_config(self.config, self.sections)

    def variant(self, name: str, **sections: dict[str, Any]) -> Path:
        """Another config file: this cluster's keys with these set (for a process started on
        "another host" with a config of its own)."""
        merged = {key: dict(values) for key, values in self.sections.items()}
        for section, values in sections.items():
            merged.setdefault(section, {}).update(values)
        return write_config(self.dir / f"{name}.toml", merged)

    @property
    def endpoint(self) -> str:
        """The broker's bus address (what a test's own bus peer connects to)."""
        broker = self.sections["broker"]
        return broker.get("endpoint") or broker["bind"]

    def start(
        self,
        role: str,
        *extra: str,
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
        config: Path | None = None,
    ) -> RoleProcess:
        """Start `role` with the cluster's config file (or `config`, see :meth:`variant`)."""
        self._count += 1
        log_path = self.dir / f"{self._count:02d}-{role}.log"
        process = RoleProcess(
            [role, "--config", str(config or self.config), *extra], log_path, env,
            wait_ready=wait_ready,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def start_spine(
        self, game_workers: int = 1
    ) -> tuple[RoleProcess, RoleProcess, list[RoleProcess]]:
        """Broker, `game_workers` game workers, and a gateway, each ready."""
        broker = self.start("broker")
        games = [self.start("game") for _ in range(game_workers)]
        gateway = self.start("gateway")
        return broker, gateway, games

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.proc.poll() is None:
                process.kill()
            else:
                process._stderr.close()


def run(coro: Any) -> Any:
    """Run a client scenario to completion."""
    return asyncio.run(coro)


class ScriptedPeer:
    """A bus peer driven by the test: registers with a role, heartbeats, records every message
    it receives, and sends what the test tells it to (to script a misbehaving worker)."""

    def __init__(self, endpoint: str, role: str, interval: float) -> None:
        import zmq

        from cluster import bus

        self._bus = bus
        self.identity = f"scripted-{role}-{os.getpid()}-{time.monotonic_ns() % 10**6}".encode()
        self.received: queue.Queue[list[bytes]] = queue.Queue()
        self._outgoing: queue.Queue[list[bytes]] = queue.Queue()
        self._stop = threading.Event()
        self._socket = zmq.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.ROUTING_ID, self.identity)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._socket.send_multipart([bus.READY, role.encode(), bus.pack_info({"scripted": True})])
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_beat = time.monotonic()
        while not self._stop.is_set():
            if self._socket.poll(20):
                frames = self._socket.recv_multipart()
                if frames[0] != self._bus.HEARTBEAT:
                    self.received.put(frames)
            while not self._outgoing.empty():
                self._socket.send_multipart(self._outgoing.get())
            if time.monotonic() >= next_beat:
                self._socket.send_multipart([self._bus.HEARTBEAT, self._bus.pack_load(0)])
                next_beat = time.monotonic() + self._interval
        self._socket.close()

    def send(self, frames: list[bytes]) -> None:
        self._outgoing.put(frames)

    def expect(self, command: bytes, timeout: float = 10.0) -> list[bytes]:
        """The next received message with this command (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                frames = self.received.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {command!r} within {timeout}s") from None
            if frames[0] == command:
                return frames

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
