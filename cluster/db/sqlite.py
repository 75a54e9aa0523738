"""The SQLite backend: DIR/accountdb.db and DIR/status_server.db, on a thread of their own.

One worker thread owns one ``sqlite3`` connection (an in-memory main database with the two files
attached as ``accountdb`` and ``status_server``, so the qualified names are the MySQL ones); every
call is a job on that thread, so the event loop never waits for the disk or for a lock. Several
processes share the files: both are in WAL mode (readers never wait for the writer;
``synchronous=NORMAL``, the usual pairing with WAL: a power cut can lose the last commits, never
corrupt), and a writer waits up to ``[db] timeout`` (busy_timeout) for another one.

Failures: a lock still held after the timeout, a directory or file that cannot be opened or
written raise :class:`DatabaseUnavailable`; other SQLite errors raise :class:`DatabaseError`. The
connection is opened on the first call (DIR is created if missing) and reopened after a failure
to open or use the files, so a cleared obstacle needs no restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cluster.db import schema, statements
from cluster.db.base import (
    AccountRow,
    BattleSample,
    ChatSample,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    HardwareSample,
    LoginSample,
    NewAccount,
)
from cluster.db.url import SqliteTarget

T = TypeVar("T")

# Primary result codes meaning "cannot use the files now" rather than "this statement is wrong".
_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PROTOCOL,
}
# Codes after which the connection is kept: the files are fine, another process holds a lock.
_LOCK_CODES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class SqliteDatabase(Database):
    """:class:`Database` on two SQLite files in one directory. ``url`` is ``sqlite:///DIR``."""

    def __init__(self, target: SqliteTarget, *, timeout: float) -> None:
        self.url = target.display
        self._directory = target.directory
        self._timeout = timeout
        self._sql = statements.sqlite_statements()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # used only on the executor's thread

    async def start(self) -> None:
        """Start the DB thread; the files are opened by the first call."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-sqlite")

    async def close(self) -> None:
        """Close the connection once queued calls are done, and stop the thread."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
            executor.shutdown(wait=True)

    # -- running calls (the methods below _run execute on the DB thread) ---------------------------

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None:
            raise DatabaseUnavailable(f"{self.url}: database not started (or already closed)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, job)

    def _call(self, job: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._connect()
            try:
                return job(conn)
            finally:
                if conn.in_transaction:
                    conn.rollback()
        except sqlite3.Error as exc:
            error = self._translate(exc)
            if isinstance(error, DatabaseUnavailable) and _primary_code(exc) not in _LOCK_CODES:
                self._disconnect()
            raise error from exc

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseUnavailable(
                f"{self.url}: cannot create directory {self._directory}: {exc.strerror or exc}"
            ) from exc
        conn = sqlite3.connect(":memory:", isolation_level=None, timeout=self._timeout)
        try:
            conn.execute(f"PRAGMA busy_timeout = {round(self._timeout * 1000)}")
            for name in (schema.ACCOUNTDB, schema.STATUS_SERVER):
                path = self._directory / f"{name}.db"
                conn.execute(f"ATTACH DATABASE ? AS {name}", (str(path),))
                conn.execute(f"PRAGMA {name}.journal_mode = WAL")
                conn.execute(f"PRAGMA {name}.synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _translate(self, exc: sqlite3.Error) -> DatabaseError:
        code = _primary_code(exc)
        if code in _UNAVAILABLE_CODES:
            if code in _LOCK_CODES:
                detail = f"{exc} (still locked by another process after {self._timeout:g}s)"
            else:
                detail = str(exc)
            return DatabaseUnavailable(f"{self.url}: database unavailable: {detail}")
        if "no such table" in str(exc):
            return DatabaseError(f"{self.url}: {exc} (has the schema been initialised?)")
        return DatabaseError(f"{self.url}: {exc}")

    # -- schema -----------------------------------------------------------------------------------

    async def init_schema(self) -> None:
        """Create DIR, both files, their tables and the view when missing (idempotent)."""
        script = schema.sqlite_script()

        def job(conn: sqlite3.Connection) -> None:
            conn.executescript(script)

        await self._run(job)

    # -- accountdb --------------------------------------------------------------------------------

    async def account(self, account_no: int) -> AccountRow | None:
        def job(conn: sqlite3.Connection) -> AccountRow | None:
            row = conn.execute(self._sql.account, (account_no,)).fetchone()
            return statements.to_account_row(row) if row else None

        return await self._run(job)

    async def accounts(self, account_nos: list[int]) -> dict[int, AccountRow]:
        if not account_nos:
            return {}

        def job(conn: sqlite3.Connection) -> dict[int, AccountRow]:
            found: dict[int, AccountRow] = {}
            for chunk in statements.chunks(account_nos):
                for row in conn.execute(self._sql.accounts(len(chunk)), tuple(chunk)):
                    account = statements.to_account_row(row)
                    found[account.account_no] = account
            return found

        return await self._run(job)

    async def enter_game_many(self, account_nos: list[int], owner: str) -> None:
        if not account_nos:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            for chunk in statements.chunks(account_nos):
                conn.execute(self._sql.enter_game_many(len(chunk)), (owner, *chunk))
            conn.execute("COMMIT")

        await self._run(job)

    async def session_key(self, account_no: int) -> bytes | None:
        def job(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(self._sql.session_key, (account_no,)).fetchone()
            return statements.to_key(row[0]) if row else None

        return await self._run(job)

    async def enter_game(self, account_no: int, owner: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute(self._sql.enter_game, (owner, account_no)).rowcount > 0

        return await self._run(job)

    async def leave_game(self, account_nos: list[int], owner: str) -> None:
        if not account_nos:
            return

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            for chunk in statements.chunks(account_nos):
                conn.execute(self._sql.leave_game(len(chunk)), (owner, *chunk))
            conn.execute("COMMIT")

        await self._run(job)

    async def release_owner(self, owner: str) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute(self._sql.release_owner, (owner,)).rowcount

        return await self._run(job)

    async def owners_in_game(self) -> list[str]:
        def job(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(self._sql.owners_in_game)]

        return await self._run(job)

    async def max_account_no(self) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return int(conn.execute(self._sql.max_account_no).fetchone()[0])

        return await self._run(job)

    async def create_accounts(self, accounts: list[NewAccount]) -> None:
        """Insert account, sessionkey and status rows in one transaction. Raises ValueError for a
        batch with a key that is not 64 bytes or a repeated AccountNo."""
        statements.check_new_accounts(accounts)
        if not accounts:
            return
        inserts = self._sql.account_inserts(accounts, statements.SQLITE_ROWS_CHUNK)

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            try:
                for sql, params in inserts:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                existing = self._existing(conn, [a.account_no for a in accounts])
                if not existing:
                    raise
                raise DatabaseError(statements.duplicates_message(existing)) from None

        await self._run(job)

    def _existing(self, conn: sqlite3.Connection, account_nos: Sequence[int]) -> list[int]:
        found: list[int] = []
        for chunk in statements.chunks(account_nos):
            rows = conn.execute(self._sql.existing(len(chunk)), tuple(chunk) * 3)
            found.extend(int(row[0]) for row in rows)
        return found

    async def white_ips(self) -> set[str]:
        def job(conn: sqlite3.Connection) -> set[str]:
            return {row[0].strip() for row in conn.execute(self._sql.white_ips)}

        return await self._run(job)

    # -- status_server ----------------------------------------------------------------------------

    async def insert_hardware(self, sample: HardwareSample) -> None:
        await self._insert(self._sql.insert_hardware, statements.hardware_params(sample))

    async def insert_battle(self, sample: BattleSample) -> None:
        await self._insert(self._sql.insert_battle, statements.battle_params(sample))

    async def insert_chat(self, sample: ChatSample) -> None:
        await self._insert(self._sql.insert_chat, statements.chat_params(sample))

    async def insert_login(self, sample: LoginSample) -> None:
        await self._insert(self._sql.insert_login, statements.login_params(sample))

    async def _insert(self, sql: str, params: tuple[Any, ...]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        await self._run(job)


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF
