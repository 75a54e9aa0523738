"""One lifecycle for every process that is a bus peer (gateway, game, auth, monitor, and the next).

A role is an object with a few hooks (:class:`Role`); :func:`run_role` runs them in one order:

1. ``open()``: bind its ports, open its DB, build its :class:`~cluster.link.BusLink` (``link``)
   and optional :class:`~cluster.stats.Reporter` (``reporter``). A :class:`StartupError` (a
   role raises one naming the port or key it cannot use) is logged as one line and the process
   exits 1, after ``close()``;
2. the bus link starts and registers with the broker; the reporter starts;
3. once ``ready()`` completes (by default: registered), the ``ready role=... loop=...`` line is
   printed with ``ready_fields()``, and ``serve(stop)`` runs until SIGINT / SIGTERM.
   If the broker refuses the READY (this process's settings differ from the broker's, see
   :data:`cluster.config.AGREED_KEYS`), before or after ready, the role logs one line naming the
   keys, stops as on a signal, and the process exits 2;
4. ``drain()``: stop taking new work and finish or hand back what is in flight (bounded);
5. ``close()``: close the link, the DB and anything else ``open()`` made (safe to call after a
   failed ``open()``), and log the final counters.

A stop signal that arrives before ready skips ``serve`` but still drains and closes. A new role is
such an object plus its line in the launcher's role table (``cluster.launch.roles``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from cluster import runtime
from cluster.link import BusLink
from cluster.stats import Reporter

log = logging.getLogger("cluster.role")


class StartupError(Exception):
    """A role cannot start (a port taken, keys missing...): its message is the one line logged."""


class Role:
    """Base of the roles :func:`run_role` runs; override the hooks that differ."""

    #: the role's name (the ``role=`` of its ready line, its bus role)
    name = ""
    link: BusLink
    reporter: Reporter | None = None
    #: whether the reporter sends one last sample when stopping (a gateway's final accepts)
    final_sample = False

    async def open(self) -> None:
        """Build everything the role needs (sets ``link``); raise StartupError to give up."""
        raise NotImplementedError

    def ready(self) -> Awaitable[Any]:
        """What must have happened before the role calls itself ready (default: registered)."""
        return self.link.registered.wait()

    def ready_fields(self) -> dict[str, object]:
        """The ``key=value`` fields of the ready line after ``role=``."""
        return {}

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set (the event loop does the work; this may add periodic work)."""
        await stop.wait()

    async def drain(self) -> None:
        """Stopping: finish or hand back the work in flight (bounded in time)."""

    async def close(self) -> None:
        """Release everything ``open()`` made; must work after a failed or partial ``open()``."""
        link = getattr(self, "link", None)
        if link is not None:
            await link.close()


async def run_role(role: Role) -> int:
    """Run `role` through its lifecycle (see the module docstring); the process's exit code."""
    stop = runtime.stop_event()
    try:
        await role.open()
    except StartupError as exc:
        log.error("%s", exc)
        await role.close()
        return 1
    await role.link.start()
    if role.reporter is not None:
        role.reporter.start()
    refused = asyncio.ensure_future(role.link.refused.wait())
    refused.add_done_callback(lambda _: stop.set())  # refused at any time: stop
    ready = asyncio.ensure_future(role.ready())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    stopping.cancel()
    # Retrieve both outcomes (a cancelled gather would otherwise log "exception was never
    # retrieved" at exit, when a stop signal comes before ready).
    await asyncio.gather(ready, stopping, return_exceptions=True)
    if not stop.is_set():
        runtime.announce_ready(role=role.name, **role.ready_fields(), loop=runtime.loop_name())
        await role.serve(stop)
    refused.cancel()
    await asyncio.gather(refused, return_exceptions=True)
    if role.link.refused.is_set():
        log.error("the broker at %s refused this %s: %s", role.link.endpoint, role.name,
                  role.link.refusal)  # fmt: skip
    if role.reporter is not None:
        role.reporter.stop(final=role.final_sample)
    await role.drain()
    await role.close()
    return 2 if role.link.refused.is_set() else 0


def serve(role: Role) -> int:
    """Run `role` in the foreground on the project's event loop until SIGINT / SIGTERM."""
    return runtime.run(run_role(role))
