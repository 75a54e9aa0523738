"""The Database interface on real SQLite files and a real MariaDB, each test on both backends."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from cluster.db import (
    AccountRow,
    BattleSample,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    HardwareSample,
    LoginSample,
    NewAccount,
    open_database,
)
from cluster.db.accounts import new_account
from cluster.testkit import free_ports
from tests.backends import Backend, with_db

GIVE_UP_WAIT = 60.0  # how long a test lets a DB call take to fail: a bound for a hang, not a figure


def accounts(*nos: int) -> list[NewAccount]:
    return [new_account(no) for no in nos]


def create_schema(backend: Backend) -> None:
    with_db(backend.config(), lambda db: db.init_schema(), init=False)


def test_init_schema_twice_is_idempotent_and_keeps_rows(backend):
    async def scenario(db: Database) -> AccountRow | None:
        await db.create_accounts(accounts(1))
        await db.init_schema()
        await db.init_schema()
        return await db.account(1)

    row = with_db(backend.config(), scenario)
    assert row is not None and row.user_id == "ID_1"


def test_account_tells_missing_rows_from_null_columns(backend):
    key = bytes(range(64))
    create_schema(backend)
    statements = [
        # 2: no sessionkey row; 3: NULL key; 4: no status row; 5: NULL userid/nick; 6: complete
        ("INSERT INTO accountdb.account (accountno, userid, userpass, usernick)"
         " VALUES (2, 'ID_2', 'p', 'N_2'), (3, 'ID_3', 'p', 'N_3'), (4, 'ID_4', 'p', 'N_4'),"
         " (5, NULL, 'p', NULL), (6, 'ID_6', 'p', 'N_6')", ()),
        ("INSERT INTO accountdb.sessionkey (accountno, sessionkey)"
         " VALUES (3, NULL), (4, ?), (5, ?), (6, ?)", (key, key, key)),
        ("INSERT INTO accountdb.status (accountno, status) VALUES (2, 0), (3, 0), (5, 1), (6, 1)",
         ()),
    ]  # fmt: skip
    for sql, params in statements:
        backend.execute(sql, params)

    async def scenario(db: Database) -> list[AccountRow | None]:
        return [await db.account(no) for no in range(1, 7)]

    rows = with_db(backend.config(), scenario, init=False)
    assert rows == [
        None,
        AccountRow(2, "ID_2", "N_2", None, 0, has_key_row=False, has_status_row=True),
        AccountRow(3, "ID_3", "N_3", None, 0, has_key_row=True, has_status_row=True),
        AccountRow(4, "ID_4", "N_4", key, None, has_key_row=True, has_status_row=False),
        AccountRow(5, None, None, key, 1, has_key_row=True, has_status_row=True),
        AccountRow(6, "ID_6", "N_6", key, 1, has_key_row=True, has_status_row=True),
    ]


def test_session_key_round_trips_any_64_bytes(backend):
    keys = [
        bytes(64),
        b"\xff" * 64,
        bytes(range(64)),
        bytes(range(192, 256)),
        b"key" + bytes(61),  # trailing NULs must not be trimmed
        b" " * 63 + b"\x00",  # nor trailing spaces
    ]
    made = [new_account(no)._replace(session_key=key) for no, key in enumerate(keys, start=1)]

    async def scenario(db: Database) -> tuple[list[bytes | None], list[bytes | None], None]:
        await db.create_accounts(made)
        stored = [await db.session_key(no) for no in range(1, len(keys) + 1)]
        rows = [await db.account(no) for no in range(1, len(keys) + 1)]
        return stored, [row.session_key for row in rows if row], await db.session_key(99)

    assert with_db(backend.config(), scenario) == (keys, keys, None)


def test_session_key_is_none_for_a_null_key(backend):
    with_db(backend.config(), lambda db: db.create_accounts(accounts(1)))
    backend.execute("UPDATE accountdb.sessionkey SET sessionkey = NULL WHERE accountno = 1")
    assert with_db(backend.config(), lambda db: db.session_key(1), init=False) is None


def test_enter_game_sets_owner_and_needs_a_status_row(backend):
    async def scenario(db: Database) -> tuple[bool, bool, bool, AccountRow | None]:
        await db.create_accounts(accounts(1))
        first = await db.enter_game(1, "game#1")
        again = await db.enter_game(1, "game#1")  # already in game: still a row, still True
        return first, again, await db.enter_game(2, "game#1"), await db.account(1)

    first, again, missing, row = with_db(backend.config(), scenario)
    assert (first, again, missing) == (True, True, False)
    assert row is not None and row.status == 1
    assert backend.execute("SELECT owner FROM accountdb.status WHERE accountno = 1") == [
        ("game#1",)
    ]


def test_leave_game_resets_only_rows_that_owner_holds(backend):
    async def scenario(db: Database) -> list[int | None]:
        await db.create_accounts(accounts(1, 2, 3))
        for no in (1, 2):
            await db.enter_game(no, "game#1")
        await db.enter_game(3, "game#2")
        await db.leave_game([1, 3], "game#1")  # 3 is game#2's: untouched
        await db.leave_game([2], "game#9")  # not game#9's: untouched
        await db.leave_game([], "game#1")
        return [row.status for row in [await db.account(n) for n in (1, 2, 3)] if row]

    assert with_db(backend.config(), scenario) == [0, 1, 1]
    owners = backend.execute("SELECT accountno, owner FROM accountdb.status ORDER BY accountno")
    assert owners == [(1, None), (2, "game#1"), (3, "game#2")]


def test_leave_game_handles_more_accounts_than_one_statement_holds(backend):
    nos = list(range(1, 1202))

    async def scenario(db: Database) -> int:
        await db.create_accounts(accounts(*nos))
        for no in nos:
            await db.enter_game(no, "game#1")
        await db.leave_game(nos, "game#1")
        return await db.release_owner("game#1")

    assert with_db(backend.config(), scenario) == 0


def test_release_owner_resets_only_that_owners_rows_and_counts_them(backend):
    async def scenario(db: Database) -> tuple[int, int, list[int | None]]:
        await db.create_accounts(accounts(1, 2, 3, 4))
        for no, owner in ((1, "game#1"), (2, "game#1"), (3, "game#2")):
            await db.enter_game(no, owner)
        released = await db.release_owner("game#1")
        again = await db.release_owner("game#1")
        return (
            released,
            again,
            [row.status for row in [await db.account(n) for n in (1, 2, 3, 4)] if row],
        )

    assert with_db(backend.config(), scenario) == (2, 0, [0, 0, 1, 0])


def test_max_account_no(backend):
    async def scenario(db: Database) -> tuple[int, int]:
        empty = await db.max_account_no()
        await db.create_accounts(accounts(7, 3, 12))
        return empty, await db.max_account_no()

    assert with_db(backend.config(), scenario) == (0, 12)


def test_create_accounts_with_an_existing_account_no_inserts_nothing(backend):
    async def scenario(db: Database) -> tuple[str, int, AccountRow | None]:
        await db.create_accounts(accounts(5))
        with pytest.raises(DatabaseError) as caught:
            await db.create_accounts(accounts(4, 5, 6))
        return str(caught.value), await db.max_account_no(), await db.account(4)

    message, max_no, row = with_db(backend.config(), scenario)
    assert "AccountNo 5 already exists" in message
    assert (max_no, row) == (5, None)
    assert backend.execute("SELECT COUNT(*) FROM accountdb.sessionkey") == [(1,)]
    assert backend.execute("SELECT COUNT(*) FROM accountdb.status") == [(1,)]


def test_create_accounts_names_an_account_no_that_has_only_a_stray_row(backend):
    create_schema(backend)
    backend.execute("INSERT INTO accountdb.status (accountno, status) VALUES (8, 0)")

    async def scenario(db: Database) -> str:
        with pytest.raises(DatabaseError) as caught:
            await db.create_accounts(accounts(7, 8))
        return str(caught.value)

    assert "AccountNo 8 already exists" in with_db(backend.config(), scenario, init=False)
    assert backend.execute("SELECT COUNT(*) FROM accountdb.account") == [(0,)]


def test_create_accounts_rejects_a_malformed_batch_before_writing(backend):
    async def scenario(db: Database) -> int:
        with pytest.raises(ValueError, match="not 64"):
            await db.create_accounts([new_account(1)._replace(session_key=b"short")])
        with pytest.raises(ValueError, match="twice"):
            await db.create_accounts(accounts(2, 2))
        await db.create_accounts([])
        return await db.max_account_no()

    assert with_db(backend.config(), scenario) == 0


def test_white_ips(backend):
    assert with_db(backend.config(), lambda db: db.white_ips()) == set()
    backend.execute("INSERT INTO accountdb.whiteip (ip) VALUES ('127.0.0.1'), ('10.0.0.7')")
    assert with_db(backend.config(), lambda db: db.white_ips(), init=False) == {
        "127.0.0.1",
        "10.0.0.7",
    }


def test_monitoring_rows_land_with_their_writer_and_the_current_date(backend):
    async def scenario(db: Database) -> None:
        await db.insert_hardware(HardwareSample(12, 2048, 96, writer="monitor@host"))
        await db.insert_battle(BattleSample(30, 512, 900, 50, 49, 300, 20, 280, writer="game#1"))
        await db.insert_login(LoginSample(7, 256, 100, 42, 95, writer="auth#2"))

    before = datetime.datetime.now().replace(microsecond=0)
    with_db(backend.config(), scenario)
    after = datetime.datetime.now()
    rows = {
        "hardware": backend.execute(
            "SELECT CPUUsage, AvailableMBytes, NonPagedBytes, writer, date"
            " FROM status_server.hardware"
        ),
        "battle": backend.execute(
            "SELECT CPUUsage, CommitMemory, PacketPool, AuthFPS, GameFPS, SessionAll, SessionAuth,"
            " SessionGame, writer, date FROM status_server.battle"
        ),
        "login": backend.execute(
            "SELECT CPUUsage, CommitMemory, PacketPool, SessionAll, LoginSuccessTPS, writer, date"
            " FROM status_server.login"
        ),
    }
    assert [row[:-1] for row in rows["hardware"]] == [(12, 2048, 96, "monitor@host")]
    assert [row[:-1] for row in rows["battle"]] == [(30, 512, 900, 50, 49, 300, 20, 280, "game#1")]
    assert [row[:-1] for row in rows["login"]] == [(7, 256, 100, 42, 95, "auth#2")]
    for (table,) in (("hardware",), ("battle",), ("login",)):
        date = rows[table][0][-1]
        if isinstance(date, str):  # SQLite keeps 'YYYY-MM-DD HH:MM:SS' text
            date = datetime.datetime.fromisoformat(date)
        assert before <= date <= after, (table, date)


def test_unreachable_database_fails_at_once_naming_the_url_without_password(backend):
    if backend.name == "mariadb":
        port = free_ports(1)[0]  # nothing listens there
        url = f"mysql://root:s3cret@127.0.0.1:{port}"
        shown = f"mysql://root:***@127.0.0.1:{port}"
    else:
        blocker = backend.tmp_path / "a-file"
        blocker.write_text("not a directory")
        url = f"sqlite:///{blocker / 'db'}"
        shown = url
    # The longest [db] timeout there is: a call that waited for it instead of failing on the
    # refused connection would outlast the generous wait below by far.
    config = backend.config(url, timeout=600)

    async def scenario() -> list[str]:
        db = await open_database(config)  # does not connect yet: does not fail
        try:
            messages = []
            for call in (db.init_schema(), db.account(1), db.create_accounts(accounts(1))):
                with pytest.raises(DatabaseUnavailable) as caught:
                    await call
                messages.append(str(caught.value))
            return messages
        finally:
            await db.close()

    async def bounded() -> list[str]:
        try:
            return await asyncio.wait_for(scenario(), GIVE_UP_WAIT)
        except TimeoutError:
            pytest.fail("an unreachable database was waited on instead of failing at once")

    for message in asyncio.run(bounded()):
        assert message.startswith(shown), message
        assert "no answer within" not in message  # said to be unreachable, not slow
        assert "s3cret" not in message and "\n" not in message


def test_database_works_again_after_an_outage(backend):
    # A cut MariaDB refuses connections at once; a cut SQLite makes calls wait for the lock, up to
    # the timeout. Generous enough for a busy machine's normal calls either way.
    timeout = 2.0 if backend.name == "sqlite" else 10.0

    async def scenario() -> None:
        async with backend.breakable(timeout=timeout) as (config, breaker):
            db = await open_database(config)
            try:
                await db.init_schema()
                await db.create_accounts(accounts(1))
                assert await db.enter_game(1, "game#1")
                await breaker.cut()
                with pytest.raises(DatabaseUnavailable):
                    await db.enter_game(1, "game#2")
                with pytest.raises(DatabaseUnavailable):
                    await db.create_accounts(accounts(2))
                await breaker.restore()
                assert await db.enter_game(1, "game#2")
                await db.create_accounts(accounts(2))
                assert await db.max_account_no() == 2
                assert await db.release_owner("game#2") == 1
            finally:
                await db.close()

    asyncio.run(scenario())


def test_a_call_waiting_on_the_database_gives_up_after_the_timeout_without_blocking_the_loop(
    backend,
):
    timeout = 1.0

    async def scenario() -> tuple[bool, str]:
        async with backend.breakable(timeout=timeout) as (config, breaker):
            db = await open_database(config)
            try:
                await db.init_schema()
                await db.create_accounts(accounts(1))
                await breaker.block()
                call = asyncio.create_task(db.enter_game(1, "game#1"))
                for _ in range(3):  # other tasks' turns on the loop
                    await asyncio.sleep(0)
                loop_was_free = not call.done()  # a call that held the loop would be over by now
                with pytest.raises(DatabaseUnavailable) as caught:
                    await asyncio.wait_for(call, GIVE_UP_WAIT)  # a wait: it must give up itself
                await breaker.restore()
                assert await db.enter_game(1, "game#1")
                return loop_was_free, str(caught.value)
            finally:
                await db.close()

    loop_was_free, message = asyncio.run(scenario())
    assert loop_was_free  # the loop ran other tasks while the call waited
    assert f"{timeout:g}s" in message, message  # it gave up because of [db] timeout


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_a_pooled_connection_that_died_is_replaced_without_an_error(backend):
    async def scenario() -> AccountRow | None:
        async with backend.breakable() as (config, breaker):
            db = await open_database(config)
            try:
                await db.init_schema()
                await db.create_accounts(accounts(1))
                breaker.proxy.drop_connections()  # the idle pooled connection is now dead
                return await db.account(1)
            finally:
                await db.close()

    row = asyncio.run(scenario())
    assert row is not None and row.account_no == 1


def test_concurrent_calls_share_a_small_pool(backend):
    async def scenario(db: Database) -> list[object]:
        await db.create_accounts(accounts(*range(1, 51)))
        calls = [db.enter_game(no, f"game#{no % 3}") for no in range(1, 51)]
        calls += [db.account(no) for no in range(1, 51)]
        return await asyncio.gather(*calls)

    results = with_db(backend.config(pool_size=2), scenario)
    assert results[:50] == [True] * 50
    assert [row.account_no for row in results[50:]] == list(range(1, 51))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_files_are_in_wal_mode_in_a_created_directory(backend):
    assert not backend.sqlite_dir.exists()
    create_schema(backend)
    for name in ("accountdb", "status_server"):
        assert backend.execute(f"PRAGMA {name}.journal_mode") == [("wal",)]


def test_calls_after_close_raise_unavailable(backend):
    async def scenario() -> None:
        db = await open_database(backend.config())
        await db.close()
        with pytest.raises(DatabaseUnavailable):
            await db.max_account_no()

    asyncio.run(scenario())


# -- the web login's calls ------------------------------------------------------------------------

ARGON = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$" + "h" * 43


def test_login_row_finds_the_account_by_exact_user_id(backend):
    async def scenario(db: Database) -> list[object]:
        await db.create_accounts(accounts(1, 2))
        await db.create_accounts([new_account(3, ARGON)._replace(user_id="Alice")])
        return [
            await db.login_row("ID_2"),
            await db.login_row("Alice"),
            await db.login_row("alice"),  # MariaDB's collation ignores case: not here
            await db.login_row("Alice "),  # nor trailing spaces
            await db.login_row("nobody"),
        ]

    found = with_db(backend.config(), scenario)
    assert found[0] is not None and found[0][0] == 2
    assert isinstance(found[0][1], str) and len(found[0][1]) == 64  # the random sha256 hash
    assert found[1:] == [(3, ARGON), None, None, None]


def test_login_row_of_an_account_without_password_and_a_duplicated_user_id(backend):
    create_schema(backend)
    backend.execute(
        "INSERT INTO accountdb.account (accountno, userid, userpass, usernick)"
        " VALUES (9, 'dup', NULL, 'N'), (4, 'dup', 'p', 'N')"
    )
    assert with_db(backend.config(), lambda db: db.login_row("dup"), init=False) == (4, "p")
    backend.execute("DELETE FROM accountdb.account WHERE accountno = 4")
    assert with_db(backend.config(), lambda db: db.login_row("dup"), init=False) == (9, None)


def test_set_password_stores_the_hash_and_clears_the_salt(backend):
    async def scenario(db: Database) -> tuple[bool, bool, bool, object]:
        await db.create_accounts(accounts(1))
        first = await db.set_password(1, ARGON)
        same = await db.set_password(1, ARGON)  # unchanged row: still an account
        return first, same, await db.set_password(2, ARGON), await db.login_row("ID_1")

    assert with_db(backend.config(), scenario) == (True, True, False, (1, ARGON))
    assert backend.execute("SELECT userpass, salt FROM accountdb.account") == [(ARGON, None)]


def test_new_account_with_a_password_hash_writes_it_without_salt(backend):
    with_db(backend.config(), lambda db: db.create_accounts([new_account(5, ARGON)]))
    assert backend.execute("SELECT userpass, salt FROM accountdb.account") == [(ARGON, None)]


def test_issue_key_replaces_the_key_and_its_expiry(backend):
    first, second = bytes(range(64)), b"\xff" + bytes(63)

    async def scenario(db: Database) -> list[object]:
        await db.create_accounts(accounts(1))
        seen: list[object] = [await db.session_key_and_expiry(1)]
        await db.issue_key(1, first, 1_900_000_000)
        seen += [await db.session_key_and_expiry(1), await db.account(1)]
        await db.issue_key(1, second, None)
        seen += [await db.session_key_and_expiry(1), await db.session_key(1)]
        await db.issue_key(2, first, 5)  # no account 2: nothing written
        seen.append(await db.session_key_and_expiry(2))
        with pytest.raises(ValueError, match="not 64"):
            await db.issue_key(1, b"short", None)
        return seen

    created, issued, row, replaced, key, missing = with_db(backend.config(), scenario)
    assert isinstance(created, tuple) and created[1] is None and len(created[0]) == 64
    assert issued == (first, 1_900_000_000)
    assert isinstance(row, AccountRow)
    assert (row.session_key, row.key_expires) == (first, 1_900_000_000)
    assert (replaced, key, missing) == ((second, None), second, None)
    assert backend.execute("SELECT COUNT(*) FROM accountdb.sessionkey") == [(1,)]


def test_session_key_and_expiry_of_a_null_key_is_none(backend):
    with_db(backend.config(), lambda db: db.create_accounts(accounts(1)))
    backend.execute("UPDATE accountdb.sessionkey SET sessionkey = NULL, expires = 5")
    assert with_db(backend.config(), lambda db: db.session_key_and_expiry(1), init=False) is None
