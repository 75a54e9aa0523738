"""Process plumbing every role shares: the event loop choice, logging, and stop signals.

uvloop is used when importable and plain asyncio otherwise (speed is a dependency choice, not a
code fork). Logs go to stderr, one line per event; stdout is reserved for the ``ready`` line that
supervisors and tests wait for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when available, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def setup_logging(role: str, level: str = "info") -> None:
    """Log lines as ``time role[pid] LEVEL message`` to stderr."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s {role}[{os.getpid()}] %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (call inside the running loop)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, event.set)
    return event


def announce_ready(**fields: object) -> str:
    """Print the one stdout line that says this process is up: ``ready key=value ...``; returns
    it."""
    line = "ready " + " ".join(f"{k}={v}" for k, v in fields.items())
    print(line, flush=True)
    return line
