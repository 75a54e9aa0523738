"""Status rows left at 1 by game workers that no longer exist: found and reset by the auth
workers' reconciler (workers/reconcile.py), never those of a live worker.

The unit tests drive :class:`StatusReconciler` on a real SQLite database; the scenario kills
every process of a real cluster at once (a whole-host crash) and restarts it on the same data,
on SQLite and on MariaDB.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from cluster.config import load
from cluster.db import Database, DatabaseUnavailable, NewAccount, open_database
from cluster.db.accounts import new_account
from cluster.messages import GameLoginStatus, GameResEcho
from cluster.testkit import async_wait_until, wait_until
from dummy.client import GameClient
from tests.backends import Backend, with_db
from tests.harness import RoleProcess, run
from workers.reconcile import StatusReconciler

DEAD, LIVE, JOINING = "game@h/1/0000dead", "game@h/2/0000live", "game@h/3/0000join"


# -- the DB method --------------------------------------------------------------------------------


def test_owners_in_game_lists_each_owner_of_rows_in_game_once(backend):
    async def scenario(db: Database) -> list[str]:
        await db.create_accounts([new_account(no) for no in range(1, 8)])
        await db.enter_game_many([1, 2], DEAD)
        await db.enter_game_many([3], LIVE)
        await db.enter_game_many([4], "")  # no owner to blame
        await db.enter_game_many([5], JOINING)
        await db.leave_game([5], JOINING)  # back to 0: not in game
        return await db.owners_in_game()

    config = backend.config()
    owners = with_db(config, scenario)
    backend.execute("UPDATE accountdb.status SET status = 1, owner = NULL WHERE accountno = 6")
    backend.execute("UPDATE accountdb.status SET status = 0, owner = 'x' WHERE accountno = 7")
    again = with_db(config, lambda db: db.owners_in_game())
    assert sorted(owners) == sorted(again) == [DEAD, LIVE]


# -- StatusReconciler on a real SQLite database ---------------------------------------------------


async def _sqlite(tmp_path: Path, held: dict[str, list[int]]) -> Database:
    """A fresh SQLite database with accounts 1..9, the listed ones in game under their owner."""
    db = await open_database(load(None, env={"CLUSTER_DB_URL": f"sqlite:///{tmp_path / 'db'}"}))
    await db.init_schema()
    await db.create_accounts([new_account(no) for no in range(1, 10)])
    for owner, accounts in held.items():
        await db.enter_game_many(accounts, owner)
    return db


async def _statuses(db: Database, *accounts: int) -> list[int | None]:
    rows = await db.accounts(list(accounts))
    return [rows[no].status for no in accounts]


def test_rows_of_a_dead_owner_are_reset_and_those_of_a_live_one_kept(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="workers.reconcile")

    async def scenario() -> tuple[int, list[int | None], Counter[str]]:
        db = await _sqlite(tmp_path, {DEAD: [1, 2], LIVE: [3]})
        counters: Counter[str] = Counter()
        reconciler = StatusReconciler(db, lambda: {LIVE}, 0.0, 1.0, counters)
        try:
            reset = await reconciler.reconcile()
            return reset, await _statuses(db, 1, 2, 3, 4), counters
        finally:
            await db.close()

    reset, statuses, counters = run(scenario())
    assert (reset, statuses) == (2, [0, 0, 1, 0])
    assert counters["reconciled_rows"] == 2
    assert f"reconciled 2 status rows of dead worker {DEAD}" in caplog.text


def test_an_owner_that_becomes_live_before_the_answer_is_kept(tmp_path):
    live = {LIVE}

    async def scenario() -> tuple[int, list[int | None]]:
        db = await _sqlite(tmp_path, {JOINING: [1], DEAD: [2]})
        asked = db.owners_in_game

        async def answered_after_the_join() -> list[str]:
            owners = await asked()
            live.add(JOINING)  # registered while the query ran
            return owners

        db.owners_in_game = answered_after_the_join  # type: ignore[method-assign]
        try:
            reset = await StatusReconciler(db, lambda: set(live), 0.0).reconcile()
            return reset, await _statuses(db, 1, 2)
        finally:
            await db.close()

    assert run(scenario()) == (1, [1, 0])


def test_a_roster_that_lost_a_worker_is_not_judged_until_the_grace_is_over(tmp_path):
    """After a broker restart the roster is rebuilt worker by worker: a worker missing from it
    for less than the grace may be re-registering, and its rows stay. The reconciler reads the
    event loop's clock; the test sets that clock, so the rule is checked at its edge."""
    live = {LIVE, DEAD}
    grace = 5.0

    async def scenario() -> tuple[list[int], list[int | None], list[int | None]]:
        loop = asyncio.get_running_loop()
        db = await _sqlite(tmp_path, {DEAD: [1]})
        reconciler = StatusReconciler(db, lambda: set(live), grace)
        now = loop.time()
        loop.time = lambda: now  # type: ignore[method-assign]  # nothing below sleeps
        try:
            resets = [await reconciler.reconcile()]  # both live: nothing to do
            live.discard(DEAD)  # lost at `now`
            resets.append(await reconciler.reconcile())  # just lost: not judged
            now += grace * 0.99
            resets.append(await reconciler.reconcile())  # still within the grace
            kept = await _statuses(db, 1)
            now += grace * 0.02
            resets.append(await reconciler.reconcile())  # the grace is over: judged
            return resets, kept, await _statuses(db, 1)
        finally:
            del loop.time  # the loop's own clock again
            await db.close()

    resets, kept, after = run(scenario())
    assert resets == [0, 0, 0, 1]
    assert (kept, after) == ([1], [0])


def test_a_database_error_is_logged_once_and_the_next_interval_retries(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="workers.reconcile")

    async def scenario() -> tuple[list[int | None], Counter[str], bool]:
        db = await _sqlite(tmp_path, {DEAD: [1, 2]})
        asked = db.owners_in_game
        calls = 0

        async def failing_once() -> list[str]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise DatabaseUnavailable("sqlite: database unavailable: test outage")
            return await asked()

        db.owners_in_game = failing_once  # type: ignore[method-assign]
        counters: Counter[str] = Counter()
        reconciler = StatusReconciler(db, lambda: {LIVE}, 0.0, 0.05, counters)
        await reconciler.start()
        try:

            async def reset() -> bool:
                return await _statuses(db, 1, 2) == [0, 0]

            await async_wait_until(reset, "the retry after the failed check", interval=0.02)
            running = reconciler._task is not None and not reconciler._task.done()
            return await _statuses(db, 1, 2), counters, running
        finally:
            await reconciler.stop()
            await db.close()

    statuses, counters, running = run(scenario())
    assert statuses == [0, 0] and running
    assert counters["reconcile_failed"] == 1 and counters["reconciled_rows"] == 2
    failures = [r for r in caplog.records if "not reconciled" in r.getMessage()]
    assert len(failures) == 1 and "test outage" in failures[0].getMessage()


# -- a whole-host crash, then a restart on the same data ------------------------------------------


def _create_accounts(config_path: Path, count: int) -> list[NewAccount]:
    accounts = [new_account(no) for no in range(1, count + 1)]

    async def create(db: Database) -> None:
        await db.create_accounts(accounts)

    with_db(load(config_path), create)
    return accounts


def _rows(backend: Backend, accounts: list[NewAccount]) -> list[tuple[int, str | None]]:
    numbers = ", ".join(str(a.account_no) for a in accounts)
    return [
        (status, owner)
        for status, owner in backend.execute(
            f"SELECT status, owner FROM accountdb.status WHERE accountno IN ({numbers})"
            " ORDER BY accountno"
        )
    ]


def _checks(auth: RoleProcess) -> int:
    return len(re.findall(r"status rows checked:", auth.log()))


async def _in_game(port: int, accounts: list[NewAccount]) -> list[GameClient]:
    clients = []
    for account in accounts:
        client = await GameClient.connect("127.0.0.1", port)
        reply = await client.login(account.account_no, account.session_key)
        assert (reply.status, reply.account_no) == (GameLoginStatus.OK, account.account_no)
        clients.append(client)
    return clients


def test_rows_left_by_a_crashed_host_are_reset_and_a_live_workers_row_is_kept(
    make_cluster, backend
):
    cluster = make_cluster(
        cluster={"link_mode": "non-systemlink"},  # the game port checks keys in the DB
        game={"verify_key": True},
        broker={"heartbeat_interval": 0.5, "heartbeat_liveness": 3},
        auth={"reconcile_interval": 1.0},
        db={**backend.db_section, "timeout": 2.0},
    )
    accounts = _create_accounts(cluster.config, 4)
    crashed, later = accounts[:3], accounts[3]
    roles = {role: cluster.start(role) for role in ("broker", "game", "auth", "gateway")}

    async def play() -> None:
        clients = await _in_game(cluster.game_port, crashed)
        assert [status for status, _ in _rows(backend, crashed)] == [1, 1, 1]
        # The host goes down: every process at once, nobody left to say goodbye.
        for role in ("broker", "auth", "game", "gateway"):
            roles[role].send_signal(signal.SIGKILL)
        for process in roles.values():
            process.kill()
        assert all(await asyncio.gather(*(c.wait_closed(5) for c in clients)))

    run(play())
    left = _rows(backend, crashed)
    assert [status for status, _ in left] == [1, 1, 1]
    (dead_owner,) = {owner for _, owner in left}
    assert dead_owner is not None and dead_owner.startswith("game@")

    cluster.start("broker")
    cluster.start("game")
    auth = cluster.start("auth")
    cluster.start("gateway")
    wait_until(lambda: _rows(backend, crashed) == [(0, None)] * 3, "the dead worker's rows reset")
    auth.wait_log(rf"reconciled 3 status rows of dead worker {re.escape(dead_owner)}")

    async def live_row_kept() -> list[Any]:
        (client,) = await _in_game(cluster.game_port, [later])
        ((status, owner),) = _rows(backend, [later])
        assert status == 1 and owner != dead_owner
        checks = _checks(auth)
        await asyncio.to_thread(
            wait_until, lambda: _checks(auth) >= checks + 2, "two more reconciler checks"
        )
        assert _rows(backend, [later]) == [(1, owner)]
        return await client.echo(1)  # still in game, on the worker that owns the row

    assert run(live_row_kept()) == [GameResEcho(later.account_no, 0)]
    assert "not reconciled" not in auth.log()
