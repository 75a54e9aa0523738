"""Helpers shared by the benchmark scripts in ``bench/``: processes and figures.

Nothing here knows a particular benchmark. Free ports and config files come from
:mod:`cluster.testkit` (``free_ports``, ``write_config``), which the tests use too. This gives:

- :class:`Proc`: one child process (a ``cluster`` role, ``cluster up``, or any other command) in
  its own process group, stderr to a log file, stdout read line by line on a thread, with
  :meth:`Proc.wait_ready` for the ``ready ...`` line every cluster process prints, and
  :meth:`Proc.stop` (SIGTERM to the group, then SIGKILL to the group and every descendant seen);
  :func:`start_cluster` and :func:`start_role` build the ``python -m cluster ...`` command lines;
- cleanup that holds on error and Ctrl-C: every started :class:`Proc` is stopped by
  :func:`stop_all`, called at exit and by :func:`install_signal_handlers` (SIGTERM/SIGHUP become
  KeyboardInterrupt, so ``finally`` blocks run); children also get SIGTERM if this process dies
  (PR_SET_PDEATHSIG), so ``cluster up`` stops its roles even after a SIGKILL of the benchmark.
  Start processes from the main thread: the death signal follows the starting thread;
- figures: :func:`median`, :func:`percentile`, :class:`CpuMeter` (CPU % of one core over an
  interval), :func:`memory` (RSS and USS), :func:`cluster_roles` (the role processes under a
  ``cluster up``), :func:`machine`;
- :func:`progress` (a timestamped line on stderr; stdout is left for the result) and
  :func:`run_async` (uvloop when importable).

Environment variables ``CLUSTER_*`` are removed from the children's environment: a benchmark's
config file is the whole configuration, whatever the calling shell exports.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_GRACE = 30.0

_LIVE: list[Proc] = []
_STARTED = time.monotonic()


# -- output ----------------------------------------------------------------------------------------


def progress(message: str) -> None:
    """One progress line on stderr, prefixed with the seconds since the script started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# -- child processes -------------------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``CLUSTER_*`` overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTER_")}
    env.update(extra or {})
    return env


# -- processes -------------------------------------------------------------------------------------


try:  # resolved here, not in the forked child (no dlopen between fork and exec)
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _term_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (thread) dies (PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))


class Proc:
    """One started child process. Its stdout lines are queued (read on a thread); its stderr goes
    to `log_path`. With `stdin=True`, :meth:`send_line` writes to its stdin."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        stdin: bool = False,
        cwd: Path = ROOT,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._seen: dict[int, psutil.Process] = {}
        with open(log_path, "ab") as log_file:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=child_env(env),
                cwd=cwd,
                process_group=0,
                preexec_fn=_term_with_parent,
            )
        _LIVE.append(self)
        threading.Thread(target=self._read_stdout, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def name(self) -> str:
        return " ".join(self.argv[1:4])

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line; None once stdout is closed. Raises TimeoutError."""
        try:
            return self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output within {timeout:g}s") from None

    def wait_for(self, prefix: str, timeout: float) -> str:
        """Skip stdout lines until one starts with `prefix` and return it. RuntimeError (with the
        end of the log) if the process exits or stays silent for `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.next_line(deadline - time.monotonic())
            except TimeoutError:
                raise RuntimeError(
                    f"{self.name}: no {prefix!r} line within {timeout:g}s; log:\n{self.log_tail()}"
                ) from None
            if line is None:
                code = self.popen.wait()
                raise RuntimeError(
                    f"{self.name} exited with code {code} before {prefix!r}; log:\n"
                    f"{self.log_tail()}"
                )
            if line.startswith(prefix):
                return line

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        """The ``ready ...`` line (see :meth:`wait_for`); remembers the descendants then running
        so that :meth:`stop` can reach them even if they changed process group."""
        line = self.wait_for("ready", timeout)
        self.descendants()
        return line

    def send_line(self, text: str) -> None:
        assert self.popen.stdin is not None, "started without stdin=True"
        self.popen.stdin.write(text.encode() + b"\n")
        self.popen.stdin.flush()

    def descendants(self) -> list[psutil.Process]:
        """Every live descendant (and remember them for :meth:`stop`)."""
        try:
            found = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            found = []
        for child in found:
            self._seen.setdefault(child.pid, child)
        return found

    def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM the process group and wait up to `grace` s, then SIGKILL the group and every
        descendant ever seen. Idempotent; returns the exit code."""
        if self in _LIVE:
            _LIVE.remove(self)
        self.descendants()
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        for child in self._seen.values():
            # psutil checks the creation time, so a recycled pid is never killed
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.wait(timeout=5)
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()
        return self.popen.returncode


def stop_all() -> None:
    """Stop every :class:`Proc` still running, newest first."""
    for proc in reversed(list(_LIVE)):
        with contextlib.suppress(Exception):
            proc.stop()


atexit.register(stop_all)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt (as Ctrl-C does), so cleanup code runs."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def cluster_argv(command: str, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cluster", command, "--config", str(config), *extra]


def start_cluster(
    config: Path,
    log_path: Path,
    only: Iterable[str] | None = None,
    *extra: str,
    timeout: float = READY_TIMEOUT,
) -> Proc:
    """``cluster up --config CONFIG [--only ROLES] EXTRA...``, ready (its ``ready`` line read)."""
    args = [*(["--only", ",".join(only)] if only else []), *extra]
    proc = Proc(cluster_argv("up", config, *args), log_path)
    try:
        proc.wait_ready(timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def start_role(role: str, config: Path, log_path: Path, timeout: float = READY_TIMEOUT) -> Proc:
    """One role (``broker``, ``gateway``, ``auth``, ``game``, ``monitor``) in the foreground,
    ready."""
    proc = Proc(cluster_argv(role, config), log_path)
    try:
        proc.wait_ready(timeout)
    except BaseException:
        proc.stop()
        raise
    return proc


def run_cluster_command(config: Path, *args: str, timeout: float = 600.0) -> str:
    """Run a one-shot ``cluster ARGS... --config CONFIG`` (e.g. ``accounts create``); returns its
    stdout, raises RuntimeError with its stderr when it fails."""
    argv = [sys.executable, "-m", "cluster", *args, "--config", str(config)]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=child_env(), cwd=ROOT, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"cluster {' '.join(args)}: {done.stderr.strip()[-800:]}")
    return done.stdout


def role_of(process: psutil.Process) -> str | None:
    """The role a ``python -m cluster ROLE`` process runs (None for ``cluster up`` and others)."""
    try:
        argv = process.cmdline()
    except psutil.Error:
        return None
    if "-m" in argv and "cluster" in argv:
        rest = argv[argv.index("cluster") + 1 :]
        if rest and rest[0] != "up":
            return rest[0]
    return None


def cluster_roles(proc: Proc) -> dict[str, list[psutil.Process]]:
    """The role processes under a ``cluster up`` (or the process itself for a single role), by
    role name (``broker``, ``gateway``, ``auth``, ``game``, ``monitor``), each list by pid."""
    roles: dict[str, list[psutil.Process]] = {}
    for candidate in [psutil.Process(proc.pid), *proc.descendants()]:
        role = role_of(candidate)
        if role is not None:
            roles.setdefault(role, []).append(candidate)
    for group in roles.values():
        group.sort(key=lambda p: p.pid)
    return roles


# -- figures ---------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100, nearest rank) of `values` (any order); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


class CpuMeter:
    """CPU used by some processes between :meth:`start` and :meth:`stop`, as % of one core.
    Processes that vanished meanwhile count as 0."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    @staticmethod
    def _cpu(process: psutil.Process) -> float | None:
        try:
            times = process.cpu_times()
        except psutil.Error:
            return None
        return times.user + times.system

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {}
        for name, process in self.processes.items():
            used = self._cpu(process)
            if used is not None:
                self._start[name] = used

    def stop(self) -> dict[str, float]:
        elapsed = max(1e-9, time.monotonic() - self._t0)
        out = {}
        for name, before in self._start.items():
            after = self._cpu(self.processes[name])
            out[name] = 0.0 if after is None else 100.0 * (after - before) / elapsed
        return out


def memory(process: psutil.Process) -> dict[str, int | None]:
    """``{"rss": bytes, "uss": bytes or None}``: resident set and, where /proc allows it, the
    unique set (memory only this process holds)."""
    try:
        full = process.memory_full_info()
        return {"rss": int(full.rss), "uss": int(full.uss)}
    except psutil.AccessDenied:
        return {"rss": int(process.memory_info().rss), "uss": None}


def find_process(names: Iterable[str]) -> psutil.Process | None:
    """The first running process whose name is one of `names` (e.g. the database server)."""
    wanted = set(names)
    for process in psutil.process_iter(["name"]):
        if process.info.get("name") in wanted:
            return process
    return None


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": psutil.cpu_count(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
