"""The game worker's writes to ``accountdb.status``: 1 (owner = this worker) while one of its
sessions is in game, 0 after.

One writer task applies the operations in order, in batches (one UPDATE for all the accounts
entering, one for all those leaving): per account only the latest operation counts. Entering is
awaited (the client hears OK only once its row says so, so the login port answers GAME from then
on); leaving is queued and retried until the database takes it.
A row is only reset by the worker that owns it, so a late reset never clears another worker's
session. Rows of a worker that died are reset by :meth:`StatusRows.release_owner`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from cluster.db import Database, DatabaseError

log = logging.getLogger("workers.status")

ENTER, LEAVE = "enter", "leave"
RETRY_DELAY = 1.0


class StatusRows:
    """Ordered, batched status-row writes for one owner."""

    def __init__(self, db: Database, owner: str, counters: Counter[str]) -> None:
        self.db = db
        self.owner = owner
        self.counters = counters
        self._ops: dict[int, tuple[str, asyncio.Future[str] | None]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="status-rows")

    async def close(self, timeout: float) -> None:
        """Write what is queued (waiting at most `timeout`), then stop."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.error("%d status rows not reset: database unavailable", len(self._ops))
        if self._task is not None:
            self._task.cancel()

    async def enter(self, account_no: int) -> str:
        """Mark the account in game: "" once written, else why not: ``status_miss`` (the
        account has no status row), ``account_locked`` (an operator's lock: status != 0 with no
        owner), ``login_failed`` (the database refused, or a leave overtook it)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._replace(account_no, (ENTER, future))
        return await future

    def leave(self, account_no: int) -> None:
        """Queue the account's reset to 0 (retried until it succeeds)."""
        self._replace(account_no, (LEAVE, None))

    def release_owner(self, owner: str) -> None:
        """Reset every row `owner` (a dead worker) holds, in the background, with retries."""
        task = asyncio.create_task(self._release(owner))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _replace(self, account_no: int, op: tuple[str, asyncio.Future[str] | None]) -> None:
        previous = self._ops.pop(account_no, None)
        if previous is not None and previous[1] is not None and not previous[1].done():
            previous[1].set_result("login_failed")  # an enter overtaken by a leave never happened
        self._ops[account_no] = op
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._ops:
                self._idle.set()
                continue
            ops, self._ops = self._ops, {}
            enters = [(a, f) for a, (kind, f) in ops.items() if kind == ENTER]
            leaves = [a for a, (kind, _) in ops.items() if kind == LEAVE]
            if enters:  # one statement for every login of this batch
                accounts = [a for a, _ in enters]
                try:
                    entered, missing = await self.db.enter_game_many(accounts, self.owner)
                except DatabaseError as exc:
                    entered, missing = set(), set()
                    failed = True
                    self.counters["status_enter_failed"] += len(enters)
                    log.warning("%d status rows not set: %s", len(enters), exc)
                else:
                    failed = False
                for account, future in enters:
                    if future is None or future.done():
                        continue
                    if account in entered:
                        future.set_result("")
                    elif failed:
                        future.set_result("login_failed")
                    else:
                        future.set_result("status_miss" if account in missing
                                          else "account_locked")  # fmt: skip
            if leaves:
                try:
                    await self.db.leave_game(leaves, self.owner)
                except DatabaseError as exc:
                    self.counters["status_leave_retried"] += len(leaves)
                    log.warning("%d status rows not reset yet (%s); retrying", len(leaves), exc)
                    for account in leaves:
                        self._ops.setdefault(account, (LEAVE, None))
                    asyncio.get_running_loop().call_later(RETRY_DELAY, self._wake.set)
                    continue
            if self._ops:
                self._wake.set()
            else:
                self._idle.set()

    async def _release(self, owner: str) -> None:
        for _ in range(30):
            try:
                count = await self.db.release_owner(owner)
            except DatabaseError as exc:
                log.warning("cannot reset the status rows of %s yet: %s", owner, exc)
                await asyncio.sleep(RETRY_DELAY)
                continue
            if count:
                log.info("reset %d status rows held by %s", count, owner)
            return
        log.error("gave up resetting the status rows of %s", owner)
