"""Status rows of game workers that no longer exist, reset by the auth workers.

A game worker resets its own ``accountdb.status`` rows, and the auth workers reset those of a
worker the broker reports GONE (:meth:`workers.status_rows.StatusRows.release_owner`). Neither
happens after a whole-host crash: every process died at once, nobody saw anybody go, and the
rows stay at 1 with owners that will never come back (an owner is a bus identity,
``game@host/pid/random``, so a restarted worker has a new one). :class:`StatusReconciler` finds
them: it compares the owners of the rows in game with the live game workers of the broker's
roster and resets the rows of the owners that are not live.

Contract: the first check runs ``grace`` seconds after :meth:`StatusReconciler.start` (the time
live workers need to re-register with a restarted broker), then one every ``interval`` seconds.
An owner's rows are reset only when the owner is absent from the live set both when the query
is issued and when its answer comes back. A live set that lost a member since the previous look
may be a roster being rebuilt after a broker restart: checks then wait ``grace`` seconds more.
A failed check is logged once, counted (``reconcile_failed``) and retried at the next interval;
nothing raises out of the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from cluster.config import Config
from cluster.db import Database, DatabaseError

log = logging.getLogger("workers.reconcile")

#: Seconds between two checks unless told otherwise (``[auth] reconcile_interval``).
DEFAULT_INTERVAL = 30.0


class StatusReconciler:
    """Resets the status rows whose owner is not a live game worker (see the module doc)."""

    def __init__(
        self,
        db: Database,
        live_game_workers: Callable[[], set[str]],
        grace: float,
        interval: float = DEFAULT_INTERVAL,
        counters: Counter[str] | None = None,
    ) -> None:
        self.db = db
        self.live_game_workers = live_game_workers
        self.grace = grace
        self.interval = interval
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._seen: set[str] | None = None  # the live set at the previous look
        self._hold_until = 0.0  # loop time before which no owner is judged dead
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start checking: first after `grace` seconds, then every `interval` seconds."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="status-reconciler")

    async def stop(self) -> None:
        """Stop checking (a check under way is abandoned; its resets are idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        await asyncio.sleep(self.grace)
        while True:
            try:
                await self.reconcile()
            except DatabaseError as exc:
                self.counters["reconcile_failed"] += 1
                log.warning("status rows not reconciled (retrying in %gs): %s", self.interval, exc)
            except Exception:  # a bug must not end the checks either
                self.counters["reconcile_failed"] += 1
                log.exception("status rows not reconciled (retrying in %gs)", self.interval)
            await asyncio.sleep(self.interval)

    async def reconcile(self) -> int:
        """One check now: reset the rows of every owner in game that is not live; returns how
        many rows were reset. Raises DatabaseError when the database fails (rows reset before
        the failure stay reset)."""
        before = self._look()
        if before is None:
            return 0
        owners = await self.db.owners_in_game()
        after = self._look()
        if after is None:
            return 0
        dead = [owner for owner in owners if owner not in before and owner not in after]
        log.debug("status rows checked: %d owners in game, %d dead", len(owners), len(dead))
        reset = 0
        for owner in dead:
            count = await self.db.release_owner(owner)
            if count:
                self.counters["reconciled_rows"] += count
                log.info("reconciled %d status rows of dead worker %s", count, owner)
            reset += count
        return reset

    def _look(self) -> set[str] | None:
        """The live set now, or None while owners must not be judged: within the hold-off that
        began when the live set last lost a member."""
        live = set(self.live_game_workers())
        now = asyncio.get_running_loop().time()
        if self._seen is not None and self._seen - live:
            self._hold_until = now + self.grace
            log.debug("the live game workers changed; dead owners judged after %gs", self.grace)
        self._seen = live
        return None if now < self._hold_until else live


def reconciler_for(
    config: Config, db: Database, live_game_workers: Callable[[], set[str]],
    counters: Counter[str],
) -> StatusReconciler:  # fmt: skip
    """The reconciler an auth worker runs: grace = one heartbeat interval more than a silent
    broker takes to be noticed (``heartbeat_interval x (heartbeat_liveness + 1)``), interval =
    ``[auth] reconcile_interval``."""
    broker = config.broker
    grace = broker.heartbeat_interval * broker.heartbeat_liveness + broker.heartbeat_interval
    return StatusReconciler(db, live_game_workers, grace, config.auth.reconcile_interval, counters)
