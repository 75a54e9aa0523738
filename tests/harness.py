"""Real processes on real loopback sockets, for the integration tests.

:class:`RoleProcess` starts ``python -m cluster ROLE --config F`` and waits for its ``ready``
line on stdout (never a sleep); its stderr goes to a file that tests can search while it runs
(:meth:`RoleProcess.wait_log`). :class:`ClusterUnderTest` writes a config with free ports and
starts the roles a test asks for. Everything started is killed at teardown.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

READY_TIMEOUT = 20.0


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that were free on 127.0.0.1 a moment ago."""
    sockets, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
    path.write_text("\n".join(lines) + "\n")
    return path


class RoleProcess:
    """One started ``cluster`` subcommand."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        timeout: float = READY_TIMEOUT,
    ) -> None:
        self.args = args
        self.log_path = log_path
        self._stderr = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cluster", *args],
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
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.log())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {self.args} log:\n{self.log()}")
            time.sleep(0.05)

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
        broker_port, self.game_port, self.login_port = free_ports(3)
        base: dict[str, dict[str, Any]] = {
            "cluster": {"data_dir": str(tmp_path / "data"), "log_level": "debug"},
            "broker": {"bind": f"tcp://127.0.0.1:{broker_port}", "heartbeat_interval": 0.5},
            "gateway": {"game_port": self.game_port, "login_port": self.login_port},
            "game": {"verify_key": False},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        self.config = write_config(tmp_path / "cluster.toml", base)
        self.processes: list[RoleProcess] = []
        self._count = 0

    def start(
        self, role: str, *extra: str, wait_ready: bool = True, env: dict[str, str] | None = None
    ) -> RoleProcess:
        self._count += 1
        log_path = self.dir / f"{self._count:02d}-{role}.log"
        process = RoleProcess(
            [role, "--config", str(self.config), *extra], log_path, env, wait_ready=wait_ready
        )
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
