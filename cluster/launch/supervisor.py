"""`cluster up`: this host's roles as child processes, started in order, stopped together.

Unless told not to, the DB schema is created first when a role that uses the DB is started (auth
workers and the web login always; game workers when they verify keys). The broker starts next
(everyone connects to it); then the workers, the gateway and the web login. Each child
prints one ``ready ...`` line on stdout once it is listening and registered with the broker; when
every child has, the supervisor prints its own ``ready`` line with the client addresses. On
SIGINT/SIGTERM it stops the web login, then the gateways, then the workers, then the broker
(SIGTERM, then SIGKILL after a grace period) and exits 0. Children are also bound to the
supervisor's life with PR_SET_PDEATHSIG, so even a killed supervisor leaves no orphans, and run
in their own session, so a terminal's Ctrl-C reaches only the supervisor, which then stops them
in order.

On a terminal (stdin a tty) the console has the original servers' keys (:mod:`cluster.launch.keys`):
it starts LOCKED; U unlocks, L locks, Q quits (the same graceful stop as SIGINT) only when
unlocked, else shows a hint. The terminal's mode is restored on the way out, however it ends.
Off a terminal no key is read.

A child that dies while the cluster runs is reported on stderr and started again after a backoff
(1 s, doubling up to 30 s while it keeps dying young); meanwhile the rest keep running (the
broker evicts a dead worker and gateways close its clients).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field

from cluster import runtime
from cluster.config import Config
from cluster.launch.keys import ConsoleLock, KeyReader
from cluster.launch.roles import START_ORDER
from cluster.logfiles import INSTANCE_ENV
from cluster.runtime import READY_FILE_ENV

log = logging.getLogger("cluster.up")

#: Roles `cluster up` knows, in start order (stopped in reverse).
ROLES = START_ORDER
READY_TIMEOUT = 30.0
#: Restart backoff for a child that exits: doubles while it keeps dying within RESTART_RESET.
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 30.0
RESTART_RESET = 60.0
#: Home the cursor and clear the terminal.
CLEAR = "\x1b[H\x1b[2J"
STOP_GRACE = 10.0
#: Roles started ``workers.<role>`` times.
WORKER_ROLES = ("game", "chat", "auth")


@dataclass
class Child:
    """One started role process."""

    role: str
    index: int
    process: asyncio.subprocess.Process
    ready: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    watcher: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.role}#{self.index}" if self.role in WORKER_ROLES else self.role


def parse_roles(text: str | None) -> list[str]:
    """``"broker,game"`` -> ``["broker", "game"]``; raises ValueError naming an unknown role."""
    if not text:
        return list(ROLES)
    roles = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(
            f"--only: unknown role {', '.join(unknown) or '(none)'}; choose from {', '.join(ROLES)}"
        )
    return [r for r in ROLES if r in roles]


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


async def _spawn(role: str, index: int, config_path: str | None) -> Child:
    argv = [sys.executable, "-m", "cluster", role]
    if config_path:
        argv += ["--config", config_path]
    # The index names the child's log file under cluster.log_dir (game-1.log, game-2.log); a
    # ready file is `cluster up`'s own (its children would overwrite it with their lines).
    env = {k: v for k, v in os.environ.items() if k != READY_FILE_ENV}
    env[INSTANCE_ENV] = str(index)
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
        start_new_session=True,
    )
    child = Child(role, index, process)
    child.watcher = asyncio.create_task(_watch_stdout(child))
    return child


async def _watch_stdout(child: Child) -> None:
    assert child.process.stdout is not None
    async for raw in child.process.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line.startswith("ready") and not child.ready.done():
            child.ready.set_result(line)
    if not child.ready.done():
        # A result, not an exception: a child that dies while the start is given up for another
        # one's failure must not leave an exception nobody retrieves (a traceback at exit).
        child.ready.set_result("")


async def _await_ready(children: list[Child]) -> None:
    async with asyncio.timeout(READY_TIMEOUT):
        for child in children:
            if not await child.ready:  # it exited without a ready line
                code = await child.process.wait()
                raise RuntimeError(f"{child.name} exited with code {code} before it was ready")


async def _stop(children: list[Child]) -> None:
    for role in reversed(ROLES):
        group = [c for c in children if c.role == role and c.process.returncode is None]
        for child in group:
            child.process.send_signal(signal.SIGTERM)
        if group:
            await asyncio.wait(
                [asyncio.create_task(c.process.wait()) for c in group], timeout=STOP_GRACE
            )
            for child in group:
                if child.process.returncode is None:
                    log.warning("%s did not stop in %.0fs; killing it", child.name, STOP_GRACE)
                    child.process.kill()
                    await child.process.wait()


async def up(config: Config, config_path: str | None, roles: list[str], init_db: bool) -> int:
    stop = runtime.stop_event()
    children: list[Child] = []
    uses_db = (
        "monitor" in roles
        or ("auth" in roles and config.workers.auth)
        or ("game" in roles and config.workers.game and config.game.verify_key)
        or ("chat" in roles and config.workers.chat and config.chat.enabled)
        or ("web" in roles and config.web.enabled)
    )
    if init_db and uses_db:
        from cluster.db import DatabaseError
        from cluster.db.cli import init_db as create_schema

        try:
            log.info("%s", await create_schema(config))
        except (DatabaseError, ValueError, OSError) as exc:
            print(f"cluster up: database: {exc}", file=sys.stderr)
            return 1
    try:
        if "broker" in roles:
            children.append(await _spawn("broker", 1, config_path))
            await _await_ready(children)
        for role in roles:
            if role in WORKER_ROLES:
                count = getattr(config.workers, role)
                if role == "chat" and not config.chat.enabled:
                    count = 0
                for i in range(count):
                    children.append(await _spawn(role, i + 1, config_path))
            elif role in ("gateway", "monitor") or (role == "web" and config.web.enabled):
                children.append(await _spawn(role, 1, config_path))
        await _await_ready(children)
    except (RuntimeError, TimeoutError) as exc:
        why = str(exc) or f"not ready within {READY_TIMEOUT:.0f}s"
        print(f"cluster up: {why}", file=sys.stderr)
        await _stop(children)
        return 1
    fields = {"roles": ",".join(c.name for c in children)}
    if "gateway" in roles:
        fields["login"] = f"{config.gateway.public_host}:{config.gateway.login_port}"
        fields["game"] = f"{config.gateway.public_host}:{config.gateway.game_port}"
        if config.chat.enabled:
            fields["chat"] = f"{config.gateway.public_host}:{config.gateway.chat_port}"
    if "web" in roles and config.web.enabled:
        fields["web"] = f"{config.web.host}:{config.web.port}"
    ready = runtime.announce_ready(**fields)
    redraw = asyncio.Event()
    lock: ConsoleLock | None = None
    reader: KeyReader | None = None
    if sys.stdin is not None and sys.stdin.isatty():
        lock = ConsoleLock(quit=lambda: _quit_key(stop))
        reader = KeyReader(sys.stdin.fileno(), lock.key, redraw.set)
    try:
        if reader is not None:
            reader.start()
        console = asyncio.create_task(_console(config, ready, lock, redraw))
        await _supervise(children, stop, config_path)
        console.cancel()
        log.info("stopping %d processes", sum(c.process.returncode is None for c in children))
        await _stop(children)
    finally:
        if reader is not None:
            reader.close()
    return 0


def _quit_key(stop: asyncio.Event) -> None:
    log.info("console: Q pressed (unlocked): stopping")
    stop.set()


async def _supervise(children: list[Child], stop: asyncio.Event, config_path: str | None) -> None:
    """Until `stop`: restart a child that exits, after a backoff that doubles (from
    RESTART_BACKOFF to RESTART_BACKOFF_MAX) while it keeps dying young. The list is updated in
    place, so a stop reaches the replacements."""
    exits = {asyncio.create_task(c.process.wait()): c for c in children}
    restarts: dict[str, float] = {}  # child name -> its current backoff
    started_at = {c.name: time.monotonic() for c in children}
    stopping = asyncio.create_task(stop.wait())
    while not stop.is_set():
        done, _ = await asyncio.wait({*exits, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            child = exits.pop(task, None)
            if child is None or stop.is_set():
                continue
            lived = time.monotonic() - started_at[child.name]
            backoff = (
                RESTART_BACKOFF
                if lived > RESTART_RESET
                else min(restarts.get(child.name, RESTART_BACKOFF / 2) * 2, RESTART_BACKOFF_MAX)
            )
            restarts[child.name] = backoff
            log.error("%s (pid %d) exited with code %s; restarting it in %.0fs", child.name,
                      child.process.pid, child.process.returncode, backoff)  # fmt: skip
            try:
                await asyncio.wait_for(stop.wait(), backoff)
                continue
            except TimeoutError:
                pass
            replacement = await _spawn(child.role, child.index, config_path)
            children[children.index(child)] = replacement
            started_at[child.name] = time.monotonic()
            exits[asyncio.create_task(replacement.process.wait())] = replacement
            log.info("%s restarted (pid %d)", replacement.name, replacement.process.pid)


async def _console(
    config: Config, ready: str, lock: ConsoleLock | None, redraw: asyncio.Event
) -> None:
    """On a terminal: the screens, redrawn every second (and at once after a key, `redraw`)
    under the `ready` line (which stays visible: a user needs its addresses) and, when keys are
    read (`lock`), the console's lock state and keys. Otherwise: a one-line summary every
    ``[monitor] summary_interval`` seconds in the log (and a locked Q's hint, logged)."""
    from cluster.launch.screens import render_screens, summary_line
    from cluster.status import MonitorClient, StatusUnavailable

    on_terminal = sys.stdout.isatty()
    period = 1.0 if on_terminal else config.monitor.summary_interval
    client = MonitorClient(config)
    complained = False
    try:
        await client.connect(timeout=5.0)
        while True:
            hint = lock.hint if lock is not None else ""
            try:
                await asyncio.wait_for(redraw.wait(), period)
            except TimeoutError:
                pass
            redraw.clear()
            if lock is not None and not on_terminal and lock.hint and lock.hint != hint:
                log.warning("console: %s", lock.hint)
            try:
                snapshot = await client.snapshot(timeout=2.0)
            except StatusUnavailable as exc:
                if not complained:
                    log.warning("no counters to show: %s", exc)
                    complained = True
                continue
            complained = False
            live, gone = snapshot.get("processes", []), snapshot.get("gone", [])
            if on_terminal:
                width = shutil.get_terminal_size((100, 40)).columns
                screen = render_screens(live, gone, time.time(), width=max(60, width))
                status = "" if lock is None else lock.status() + "\n"
                sys.stdout.write(CLEAR + ready + "\n" + status + screen + "\n")
                sys.stdout.flush()
            else:
                log.info("%s", summary_line(live, gone))
    except StatusUnavailable as exc:
        log.warning("no counters to show: %s", exc)
    finally:
        await client.close()


def serve(config: Config, config_path: str | None, roles: list[str], init_db: bool = True) -> int:
    return runtime.run(up(config, config_path, roles, init_db))
