"""Scaffolding shared by the tests (``tests/``) and the benchmarks (``bench/``); not runtime code.

Nothing the cluster runs imports this module. It lives in the package only so that a benchmark
started as ``python bench/x.py`` and a test run by pytest use the same three helpers:

- :func:`free_ports`: TCP ports that were free on loopback a moment ago;
- :func:`write_config`: a config file from ``{section: {key: value}}``, written by
  :func:`cluster.config.to_toml` (:func:`config_from` builds the :class:`~cluster.config.Config`
  it writes);
- :func:`wait_until` (and :func:`async_wait_until` for a coroutine predicate): poll a condition
  until it holds, raising :class:`WaitTimeout` after a generous timeout. A wait is how a test
  lets something happen; it is never the assertion (which is about what happened).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from cluster.config import SECTIONS, Config, to_toml

T = TypeVar("T")

#: What :func:`wait_until` waits unless told otherwise: a bound for a stuck wait, not a deadline.
WAIT_TIMEOUT = 30.0
WAIT_INTERVAL = 0.05


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports that were free on `host` a moment ago (bound together, then
    released, so the kernel hands out distinct ones)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def config_from(sections: Mapping[str, Mapping[str, Any]]) -> Config:
    """A :class:`Config` with the keys of `sections` and the defaults of all others.

    Neither validated nor resolved: :func:`cluster.config.load` does both when it reads the file
    back, so a test may write a value that the loader is meant to reject. An unknown section or
    key raises ValueError here (write such a file as TOML text instead). Path values become text.
    """
    made: dict[str, Any] = {}
    for name, values in sections.items():
        cls = SECTIONS.get(name)
        if cls is None:
            raise ValueError(f"[{name}]: unknown section (known: {', '.join(SECTIONS)})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{name}.{unknown[0]}: unknown key")
        text = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items()}
        made[name] = cls(**text)
    return Config(**made)


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write the config file ``to_toml(config_from(sections))`` (every key, the given ones set)
    to `path`; returns `path`."""
    path.write_text(to_toml(config_from(sections)), encoding="utf-8")
    return path


class WaitTimeout(AssertionError):
    """A condition did not hold within the time :func:`wait_until` was given."""


def _timed_out(what: str, timeout: float, last: object, detail: Callable[[], object] | None) -> str:
    message = f"not within {timeout:g}s: {what} (last: {last!r})"
    if detail is not None:
        message += f"\n{detail()}"
    return message


def wait_until(
    predicate: Callable[[], T],
    what: str = "",
    *,
    timeout: float = WAIT_TIMEOUT,
    interval: float = WAIT_INTERVAL,
    detail: Callable[[], object] | None = None,
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return
    that. After `timeout` seconds raise :class:`WaitTimeout` naming `what` (default: the
    predicate's name), the last value, and ``detail()`` when given (e.g. a process's log).
    Exceptions from `predicate` propagate at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            name = what or getattr(predicate, "__name__", "condition")
            raise WaitTimeout(_timed_out(name, timeout, value, detail))
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], Awaitable[T]],
    what: str = "",
    *,
    timeout: float = WAIT_TIMEOUT,
    interval: float = WAIT_INTERVAL,
    detail: Callable[[], object] | None = None,
) -> T:
    """:func:`wait_until` for a coroutine predicate: ``await predicate()`` until truthy, sleeping
    on the event loop in between."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            name = what or getattr(predicate, "__name__", "condition")
            raise WaitTimeout(_timed_out(name, timeout, value, detail))
        await asyncio.sleep(interval)
