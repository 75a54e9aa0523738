"""`cluster demo`: the whole cluster on this machine, loaded by the dummy, then a report.

Needs nothing but the install: it uses a fresh temporary data directory with the embedded SQLite
database, creates as many accounts as there are clients (``cluster accounts create``: with
passwords for the web path, which costs one argon2 hash, some 20 ms of a core, per account),
starts every role with `cluster up` (its log goes to a file in that directory), runs the dummy
through the chosen path (``web`` by default: every client's (re)connect logs in on the web login
with its UserID and password, then on the login port with the key it got, then on the game or
chat port, as a real client; ``login`` and ``direct`` use the listed keys), prints the report
summary, and stops everything. Ports and all other settings come from the configuration
(defaults, or ``--config``), except that the demo turns the web login's per-address rate limit
off (``web.address_rate = 0``): every demo client comes from this one address, and the default
limit (10 logins a second, burst 20) would hold most of them back; the web login is on whatever
the configuration says when the path is ``web``.

With ``[chat] enabled`` (the default) the chat load runs beside the game load, on accounts of its
own (an account logs in through the login port for one of them at a time): the same knobs, except
that the chat load keeps its own ``delay_action`` default (the original chat dummy's) unless one
is given, and ``chat_knobs`` override any of them for the chat load alone. The report then has
both loads' reports (``game``, ``chat``) and one connect check for the two at the top.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from cluster.config import Config, to_toml
from cluster.db.cli import init_db

log = logging.getLogger("cluster.launch.demo")

READY_TIMEOUT = 60.0
ACCOUNTS_TIMEOUT = 600.0
#: The dummy's path in the demo unless one is given: the real client's, from the web login on.
DEFAULT_PATH = "web"


#: ``HH:MM:SS role[pid] ERROR message`` in a role's log.
_ERROR_LINE = re.compile(r"^\S+ (\w+)\[\d+\] ERROR (.*)$")


def demo_config(config: Config, directory: Path, link_mode: str, path: str = DEFAULT_PATH
                ) -> Config:  # fmt: skip
    """`config` with its data in `directory`, the chosen link mode, a quiet console, and for the
    web path the web login on, without its per-address rate limit (the demo's clients all come
    from this host)."""
    web = config.web
    if path == "web":
        web = dataclasses.replace(web, enabled=True, address_rate=0.0)
    return dataclasses.replace(
        config,
        cluster=dataclasses.replace(config.cluster, data_dir=str(directory), link_mode=link_mode),
        db=dataclasses.replace(config.db, url=f"sqlite:///{directory / 'db'}", prefix=""),
        monitor=dataclasses.replace(config.monitor, summary_interval=3600.0),
        web=web,
    )


async def _create_accounts(config_path: Path, count: int, out: Path, passwords: bool) -> None:
    """``cluster accounts create`` for `count` accounts into `out` (with generated passwords, or
    none: fast), as an operator would; RuntimeError with its message when it fails."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster", "accounts", "create", "--config", str(config_path),
        "--count", str(count), "--out", str(out), *(() if passwords else ("--no-passwords",)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with asyncio.timeout(ACCOUNTS_TIMEOUT):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"cluster accounts create took more than {ACCOUNTS_TIMEOUT:.0f}s"
                           ) from None  # fmt: skip
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            "cluster accounts create failed: "
            + (lines[-1] if lines else f"exit {process.returncode}")
        )


async def _start_cluster(config_path: Path, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cluster", "up", "--config", str(config_path),
            stdout=asyncio.subprocess.PIPE, stderr=log_file, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    assert process.stdout is not None
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            while line := await process.stdout.readline():
                if line.startswith(b"ready"):
                    return process
    except TimeoutError:
        pass
    if process.returncode is None:
        process.kill()
    await process.wait()
    raise RuntimeError("the cluster did not start: " + _why(log_path))


def _why(log_path: Path) -> str:
    """The error lines of a cluster's log (without time and pid), else its last lines."""
    lines = log_path.read_text(errors="replace").strip().splitlines()
    errors = [m.group(1) + ": " + m.group(2)
              for m in map(_ERROR_LINE.match, lines) if m is not None]  # fmt: skip
    return " | ".join(errors[-3:] or lines[-3:]) or "no output"


async def _stop_cluster(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def split_knobs(
    knobs: dict[str, Any], chat_overrides: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The game load's and the chat load's knobs in a demo: each takes those of `knobs` it has
    (echo_overlap is the game's, sector_range the chat's; both the path), `chat_overrides` on
    top for chat."""
    from dummy.cli import knobs_for

    return knobs_for(knobs, "echo"), knobs_for(knobs, "chat") | (chat_overrides or {})


async def demo(config: Config, link_mode: str, knobs: dict[str, Any], report: Path | None,
               keep: bool, chat_knobs: dict[str, Any] | None = None) -> int:  # fmt: skip
    from dummy.run import (
        chat_options_from,
        load_accounts,
        load_chat_accounts,
        options_from,
        run_local,
        run_together,
    )

    knobs = {"path": DEFAULT_PATH} | knobs
    path = knobs["path"]
    if path == "direct" and link_mode == "systemlink":
        raise ValueError(
            "--path direct needs --link-mode non-systemlink: in systemlink the game and chat "
            "workers only take keys that a login-port login pushed"
        )
    directory = Path(tempfile.mkdtemp(prefix="cluster-demo-"))
    config = demo_config(config, directory, link_mode, path)
    config_path = directory / "cluster.toml"
    config_path.write_text(to_toml(config))
    accounts_path = directory / "accounts.tsv"
    chat = config.chat.enabled
    knobs, chat_load = split_knobs(knobs, chat_knobs)
    clients = int(knobs["clients"])
    chat_clients = int(chat_load["clients"]) if chat else 0
    loads = f"{clients} game clients" + (f" and {chat_clients} chat clients" if chat else "")
    print(f"demo: {link_mode}, path {path}, {loads} for {knobs['duration']:.0f}s", flush=True)
    try:
        await init_db(config)
        if path == "web":
            print(f"demo: creating {clients + chat_clients} accounts with passwords (an argon2 "
                  "hash each)", flush=True)  # fmt: skip
        await _create_accounts(config_path, clients + chat_clients, accounts_path,
                               passwords=path == "web")  # fmt: skip
        process = await _start_cluster(config_path, directory / "cluster.log")
    except BaseException:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    gw = config.gateway
    chat_address = f", chat {gw.public_host}:{gw.chat_port}" if chat else ""
    web_address = f"web {config.web.host}:{config.web.port}, " if path == "web" else ""
    print(f"demo: cluster up ({web_address}login {gw.public_host}:{gw.login_port}, "
          f"game {gw.public_host}:{gw.game_port}{chat_address})", flush=True)  # fmt: skip
    code = 1
    try:
        options = options_from(config, **knobs)
        if chat:
            chat_options = chat_options_from(config, **chat_load)
            game_accounts = load_accounts(accounts_path)[:clients]
            chat_accounts = load_chat_accounts(accounts_path)[clients:]
            code = await run_together(config, (options, game_accounts),
                                      (chat_options, chat_accounts), report)  # fmt: skip
        else:
            code = await run_local(config, options, load_accounts(accounts_path), report, None)
    finally:
        await _stop_cluster(process)
        if keep or code != 0:
            print(f"demo: cluster stopped; its data and log (cluster.log) are in {directory}",
                  flush=True)  # fmt: skip
        else:
            shutil.rmtree(directory, ignore_errors=True)
            print("demo: cluster stopped", flush=True)
    return code
