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
import datetime
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from cluster.db import schema, statements, upgrade
from cluster.db.base import (
    SCHEMA_VERSION,
    AccountRow,
    BattleSample,
    ChatSample,
    Database,
    DatabaseError,
    DatabaseUnavailable,
    HardwareSample,
    LoginSample,
    NewAccount,
    SchemaReport,
    StatusRow,
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

    async def init_schema(self) -> SchemaReport:
        """Create DIR, both files, their tables and the view when missing, or bring an earlier
        schema up to the current one (see :mod:`cluster.db.upgrade`), in one transaction: an
        upgrade that fails leaves the files as they were. Raises SchemaRefused (a DatabaseError)
        for a schema it cannot upgrade safely or that is newer than this code."""
        ddl = schema.sqlite_statements()
        targets = upgrade.target_tables(ddl, {})

        def job(conn: sqlite3.Connection) -> SchemaReport:
            conn.execute("BEGIN IMMEDIATE")
            before = _inventory(conn)
            upgrade.check_version(before, self.url)
            plan = upgrade.plan_sqlite(targets, before, self.url)
            conn.execute(f"DROP VIEW IF EXISTS {schema.ACCOUNTDB}.{upgrade.VIEW}")
            for statement in plan.statements + ddl:
                conn.execute(statement)
            if before.version != SCHEMA_VERSION:
                conn.execute(f"DELETE FROM {schema.ACCOUNTDB}.{upgrade.VERSION_TABLE}")
                conn.execute(
                    f"INSERT INTO {schema.ACCOUNTDB}.{upgrade.VERSION_TABLE} (version) VALUES (?)",
                    (SCHEMA_VERSION,),
                )
            after = _inventory(conn)
            conn.execute("COMMIT")
            return upgrade.report(before, after, targets, plan)

        return await self._run(job)

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

    async def enter_game_many(
        self, account_nos: list[int], owner: str
    ) -> tuple[set[int], set[int]]:
        if not account_nos:
            return set(), set()

        def job(conn: sqlite3.Connection) -> tuple[set[int], set[int]]:
            entered: set[int] = set()
            present: set[int] = set()
            conn.execute("BEGIN")
            for chunk in statements.chunks(account_nos):
                conn.execute(self._sql.enter_game_many(len(chunk)), (owner, *chunk))
                for no, status, holder in conn.execute(self._sql.status_rows(len(chunk)), chunk):
                    present.add(int(no))
                    if status and holder == owner:
                        entered.add(int(no))
            conn.execute("COMMIT")
            return entered, set(account_nos) - present

        return await self._run(job)

    async def set_status(self, account_no: int, status: int) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute(self._sql.set_status, (status, account_no)).rowcount > 0

        return await self._run(job)

    async def session_key(self, account_no: int) -> bytes | None:
        def job(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(self._sql.session_key, (account_no,)).fetchone()
            return statements.to_key(row[0]) if row else None

        return await self._run(job)

    async def session_key_and_expiry(self, account_no: int) -> tuple[bytes, int | None] | None:
        def job(conn: sqlite3.Connection) -> tuple[bytes, int | None] | None:
            row = conn.execute(self._sql.session_key_and_expiry, (account_no,)).fetchone()
            return statements.to_key_and_expiry(row)

        return await self._run(job)

    async def login_row(self, user_id: str) -> tuple[int, str | None] | None:
        params = self._sql.login_row_params(user_id)

        def job(conn: sqlite3.Connection) -> tuple[int, str | None] | None:
            row = conn.execute(self._sql.login_row, params).fetchone()
            return None if row is None else (int(row[0]), row[1])

        return await self._run(job)

    async def set_password(self, account_no: int, password_hash: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute(self._sql.set_password, (password_hash, account_no)).rowcount > 0

        return await self._run(job)

    async def issue_key(self, account_no: int, session_key: bytes, expires: int | None) -> None:
        params = self._sql.issue_key_params(account_no, session_key, expires)

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(self._sql.issue_key, params)

        await self._run(job)

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

    async def status_rows(
        self, table: str, since: datetime.datetime, until: datetime.datetime, limit: int
    ) -> list[StatusRow]:
        params = statements.status_rows_params(table, since, until, limit)
        sql = self._sql.monitoring_rows[table]

        def job(conn: sqlite3.Connection) -> list[StatusRow]:
            return statements.to_status_rows(table, conn.execute(sql, params).fetchall())

        return await self._run(job)


def _inventory(conn: sqlite3.Connection) -> upgrade.Inventory:
    """The tables (with their columns), views, indexes and recorded version of both files."""
    found = upgrade.Inventory()
    for database in (schema.ACCOUNTDB, schema.STATUS_SERVER):
        objects = conn.execute(
            f"SELECT type, name, tbl_name FROM {database}.sqlite_master"
            " WHERE type IN ('table', 'view', 'index') AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for kind, name, table in objects:
            if kind == "index":
                found.indexes.setdefault((database, table), set()).add(name.lower())
                continue
            info = conn.execute(f"PRAGMA {database}.table_info({_quote(name)})").fetchall()
            if kind == "view":
                found.views[(database, name)] = [row[1] for row in info]
                continue
            found.tables[(database, name)] = {
                row[1].lower(): replace(
                    upgrade.parse_column(row[1], row[2] or "", nullable=not row[3]),
                    primary=row[5] > 0,
                    has_default=row[4] is not None,
                )
                for row in info
            }
    if (schema.ACCOUNTDB, upgrade.VERSION_TABLE) in found.tables:
        row = conn.execute(
            f"SELECT MAX(version) FROM {schema.ACCOUNTDB}.{upgrade.VERSION_TABLE}"
        ).fetchone()
        found.version = None if row is None or row[0] is None else int(row[0])
    return found


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF
