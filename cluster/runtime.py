"""Process plumbing every role shares: the event loop choice, logging, and stop signals.

uvloop is used when importable and plain asyncio otherwise (speed is a dependency choice, not a
code fork). Logs go to stderr, one line per event (and, with ``cluster.log_dir``, to a rotating
file per role and instance too: :mod:`cluster.logfiles`); stdout is reserved for the ``ready``
line that supervisors and tests wait for.
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


def setup_logging(
    role: str,
    level: str = "info",
    *,
    log_dir: str = "",
    rotate: str = "daily",
    max_bytes: int = 10 * 2**20,
    keep: int = 14,
) -> logging.Handler | None:
    """Log lines as ``time role[pid] LEVEL message`` to stderr and, when `log_dir` is set, also
    to the rotating file of this role and instance there (:mod:`cluster.logfiles`, lines with
    the full date); returns that file's handler (None without `log_dir`). Raises
    :class:`cluster.logfiles.LogDirError` (one line naming ``cluster.log_dir``) when the file
    cannot be made."""
    fmt = f"%(asctime)s {role}[{os.getpid()}] %(levelname)s %(message)s"
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format=fmt,
        datefmt="%H:%M:%S",
        force=True,
    )
    if not log_dir:
        return None
    from cluster import logfiles

    handler = logfiles.file_handler(log_dir, logfiles.file_name(role), rotate, max_bytes, keep)
    file_fmt = fmt.replace("%(asctime)s", "%(asctime)s.%(msecs)03d")
    handler.setFormatter(logging.Formatter(file_fmt, datefmt=logfiles.FILE_DATEFMT))
    logging.getLogger().addHandler(handler)
    return handler


def stop_event() -> asyncio.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (call inside the running loop): a graceful
    stop. SIGHUP is the terminal going away (an SSH session dropped under `cluster up`): without
    it the process would die at once, its children undrained and its console's mode not
    restored."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, event.set)
    return event


#: Names a file the ``ready`` line is also written to (for exec probes): :func:`announce_ready`.
READY_FILE_ENV = "CLUSTER_READY_FILE"


def announce_ready(**fields: object) -> str:
    """Print the one stdout line that says this process is up: ``ready key=value ...``; returns
    it. When the environment names a file in ``CLUSTER_READY_FILE``, the same line (with a
    newline) is first written there atomically (a temporary file beside it, then a rename), so an
    exec probe like ``test -s "$CLUSTER_READY_FILE"`` sees it whole or not at all, and it is
    there once the line is printed; a file that cannot be written is logged as one error line
    and the process goes on."""
    line = "ready " + " ".join(f"{k}={v}" for k, v in fields.items())
    ready_file = os.environ.get(READY_FILE_ENV, "")
    if ready_file:
        partial = f"{ready_file}.{os.getpid()}.tmp"
        try:
            with open(partial, "w", encoding="utf-8") as out:
                out.write(line + "\n")
            os.replace(partial, ready_file)
        except OSError as exc:
            logging.getLogger(__name__).error("cannot write CLUSTER_READY_FILE %s: %s",
                                              ready_file, exc)  # fmt: skip
    print(line, flush=True)
    return line
