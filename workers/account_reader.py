"""Batched reads of ``accountdb.v_account`` for the auth worker.

Every login needs its account's row. Rather than one query per login, :class:`AccountReader`
gathers the AccountNos asked for during one event-loop iteration (and while a read is under
way) and fetches them with one ``IN (...)`` query, so under load one round trip serves many
logins and the database and the pure-Python driver do a fraction of the work.
"""

from __future__ import annotations

import asyncio

from cluster.db import AccountRow, Database, DatabaseError

#: AccountNos per query at most.
BATCH = 500


class AccountReader:
    """``await reader.get(account_no)`` -> the row or None; DatabaseError when the read failed."""

    def __init__(self, db: Database, concurrency: int) -> None:
        self.db = db
        self._waiting: dict[int, list[asyncio.Future[AccountRow | None]]] = {}
        self._scheduled = False
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, account_no: int) -> AccountRow | None:
        future: asyncio.Future[AccountRow | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(account_no, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._scheduled = False
        task = asyncio.create_task(self._read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        async with self._slots:  # at most `concurrency` queries at once; the rest gather up
            if not self._waiting:
                return
            batch: dict[int, list[asyncio.Future[AccountRow | None]]] = {}
            for account_no in list(self._waiting)[:BATCH]:
                batch[account_no] = self._waiting.pop(account_no)
            if self._waiting and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._start)
            try:
                rows = await self.db.accounts(list(batch))
            except DatabaseError as exc:
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                return
            for account_no, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(rows.get(account_no))
