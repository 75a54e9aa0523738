"""The MySQL/MariaDB backend: an aiomysql pool, every call bounded by ``[db] timeout``.

Failure rules (the contract of :mod:`cluster.db.base`):

* A call that cannot connect, loses its connection, or gets no answer within the timeout raises
  :class:`DatabaseUnavailable` naming the URL (password masked). Any other server error raises
  :class:`DatabaseError`; nothing lower-level escapes.
* A connection that failed in any way other than a plain server error (lost, timed out, cancelled)
  is closed, so the pool never hands it out again: the next call opens a fresh one, and a server
  that comes back is used again without restarting the process.
* A pooled connection can be dead without the pool knowing yet (the server restarted and its
  goodbye has not been read). When a call's first command fails that way on a connection that an
  earlier call used, the call is retried once at once, on another connection; a command that
  might have reached the server is never replayed.
"""

from __future__ import annotations

import asyncio
import datetime
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import aiomysql
import pymysql.err
from pymysql.constants import CLIENT

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
from cluster.db.url import MysqlTarget

T = TypeVar("T")

# Server error codes that mean "cannot use this server now" rather than "this statement is wrong":
# too many connections, bad handshake, access denied, shutdown, connection killed or timed out,
# lock wait timeout and deadlock (the statement may well succeed later).
_UNAVAILABLE_SERVER_CODES = {1040, 1042, 1043, 1044, 1045, 1053, 1077, 1152, 1205, 1213, 1927, 4031}
# Client-side codes (2000-2999) for a connection that died under us, as opposed to a failed connect.
_LOST_CLIENT_CODES = {2006, 2013, 2055}
_MISSING_SCHEMA_CODES = {1049, 1146}  # unknown database, unknown table


class MysqlDatabase(Database):
    """:class:`Database` on a MySQL/MariaDB server. ``url`` is the configured URL with its
    password masked (safe to log)."""

    def __init__(self, target: MysqlTarget, *, prefix: str, pool_size: int, timeout: float) -> None:
        self.url = target.display
        self._target = target
        self._prefix = prefix
        self._pool_size = pool_size
        self._timeout = timeout
        self._names = schema.database_names(prefix)
        self._sql = statements.mysql_statements(*self._names)
        self._pool: aiomysql.Pool | None = None
        self._used_before: weakref.WeakSet[aiomysql.Connection] = weakref.WeakSet()

    async def start(self) -> None:
        """Create the pool; it connects lazily, so this does not fail when the server is down."""
        if self._pool is None:
            self._pool = await aiomysql.create_pool(
                minsize=0,
                maxsize=self._pool_size,
                host=self._target.host,
                port=self._target.port,
                user=self._target.user,
                password=self._target.password,
                autocommit=True,
                charset="utf8mb4",
                connect_timeout=self._timeout,
                # rowcount of an UPDATE = rows matched, so enter_game sees a row already at 1
                client_flag=CLIENT.FOUND_ROWS,
            )

    async def close(self) -> None:
        """Close every pooled connection; calls after this fail."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            await pool.wait_closed()

    # -- running calls ----------------------------------------------------------------------------

    async def _run(self, op: Callable[[_Session], Awaitable[T]]) -> T:
        """Run `op` on a pooled connection within the timeout, translating every failure."""
        if self._pool is None:
            raise DatabaseUnavailable(f"{self.url}: database not started (or already closed)")
        try:
            async with asyncio.timeout(self._timeout):
                return await self._attempt(self._pool, op)
        except DatabaseError:
            raise
        except TimeoutError:
            raise DatabaseUnavailable(
                f"{self.url}: no answer within {self._timeout:g}s ([db] timeout)"
            ) from None
        except Exception as exc:
            raise self._translate(exc) from exc

    async def _attempt(self, pool: aiomysql.Pool, op: Callable[[_Session], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            conn = await pool.acquire()
            reused = conn in self._used_before
            self._used_before.add(conn)
            session = _Session(conn)
            try:
                return await op(session)
            except BaseException as exc:
                if not _is_statement_error(exc):
                    conn.close()  # lost, timed out or cancelled mid-protocol: never reuse it
                stale = reused and session.completed == 0 and _is_connection_lost(exc)
                if attempt == 2 or not stale:
                    raise
            finally:
                await pool.release(conn)
        raise AssertionError("unreachable")

    def _translate(self, exc: Exception) -> DatabaseError:
        code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
        detail = f"[{code}] {exc.args[1]}" if code is not None and len(exc.args) > 1 else str(exc)
        if isinstance(exc, OSError | pymysql.err.InterfaceError) or (
            isinstance(exc, pymysql.err.OperationalError)
            and isinstance(code, int)
            and (code >= 2000 or code in _UNAVAILABLE_SERVER_CODES)
        ):
            return DatabaseUnavailable(f"{self.url}: database unavailable: {detail or exc!r}")
        if code in _MISSING_SCHEMA_CODES:
            return DatabaseError(f"{self.url}: {detail} (has the schema been initialised?)")
        return DatabaseError(f"{self.url}: {detail or exc!r}")

    # -- schema -----------------------------------------------------------------------------------

    async def init_schema(self) -> SchemaReport:
        """Create both databases (``<prefix>accountdb``, ``<prefix>status_server``), their tables
        and the view when missing, or bring an earlier schema up to the current one (see
        :mod:`cluster.db.upgrade`). Raises SchemaRefused (a DatabaseError) before changing anything
        for a schema it cannot upgrade safely or that is newer than this code. MySQL commits each
        ALTER TABLE by itself: an upgrade cut short is finished by the next init."""
        ddl = schema.mysql_statements(self._prefix)
        logical = dict(zip(self._names, (schema.ACCOUNTDB, schema.STATUS_SERVER), strict=True))
        targets = upgrade.target_tables(ddl, logical)
        accountdb = self._names[0]

        async def op(s: _Session) -> SchemaReport:
            before = await self._inventory(s, logical)
            upgrade.check_version(before, self.url)
            plan = upgrade.plan_mysql(targets, before, {v: k for k, v in logical.items()}, self.url)
            for sql, refusal in plan.checks:
                count = int((await s.fetch(sql))[0][0])
                if count:
                    raise upgrade.SchemaRefused(refusal.replace("{COUNT}", str(count)))
            # "already exists" notes are expected; aiomysql would fetch and re-raise each as a
            # Python warning. Only notes are silenced, and only on this connection.
            await s.execute("SET SESSION sql_notes = 0")
            for statement in plan.statements + ddl:
                await s.execute(statement)
            await s.execute("SET SESSION sql_notes = 1")
            if before.version != SCHEMA_VERSION:
                table = f"`{accountdb}`.`{upgrade.VERSION_TABLE}`"
                await s.execute("BEGIN")
                await s.execute(f"DELETE FROM {table}")
                await s.execute(f"INSERT INTO {table} (`version`) VALUES (%s)", (SCHEMA_VERSION,))
                await s.execute("COMMIT")
            after = await self._inventory(s, logical)
            return upgrade.report(before, after, targets, plan)

        return await self._run(op)

    async def _inventory(self, s: _Session, logical: dict[str, str]) -> upgrade.Inventory:
        """The tables (with their columns), views, indexes and recorded version of both
        databases (`logical`: server name -> accountdb / status_server)."""
        found = upgrade.Inventory()
        marks = ", ".join(["%s"] * len(logical))
        names = tuple(logical)
        kinds = {
            (schema_name, table): kind
            for schema_name, table, kind in await s.fetch(
                "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES"
                f" WHERE TABLE_SCHEMA IN ({marks})",
                names,
            )
        }
        columns = await s.fetch(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE,"
            " COLUMN_DEFAULT FROM information_schema.COLUMNS"
            f" WHERE TABLE_SCHEMA IN ({marks}) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
            names,
        )
        for schema_name, table, name, column_type, nullable, default in columns:
            key = (logical[schema_name], table)
            if kinds.get((schema_name, table)) == "VIEW":
                found.views.setdefault(key, []).append(name)
                continue
            column = upgrade.parse_column(name, column_type, nullable=nullable == "YES")
            has_default = default is not None and str(default).upper() != "NULL"
            found.tables.setdefault(key, {})[name.lower()] = replace(
                column, has_default=has_default
            )
        for schema_name, table, index in await s.fetch(
            "SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME"
            " FROM information_schema.STATISTICS"
            f" WHERE TABLE_SCHEMA IN ({marks})",
            names,
        ):
            found.indexes.setdefault((logical[schema_name], table), set()).add(index.lower())
        if (schema.ACCOUNTDB, upgrade.VERSION_TABLE) in found.tables:
            rows = await s.fetch(
                f"SELECT MAX(`version`) FROM `{self._names[0]}`.`{upgrade.VERSION_TABLE}`"
            )
            found.version = None if not rows or rows[0][0] is None else int(rows[0][0])
        return found

    # -- accountdb --------------------------------------------------------------------------------

    async def account(self, account_no: int) -> AccountRow | None:
        async def op(s: _Session) -> AccountRow | None:
            rows = await s.fetch(self._sql.account, (account_no,))
            return statements.to_account_row(rows[0]) if rows else None

        return await self._run(op)

    async def accounts(self, account_nos: list[int]) -> dict[int, AccountRow]:
        if not account_nos:
            return {}

        async def op(s: _Session) -> dict[int, AccountRow]:
            found: dict[int, AccountRow] = {}
            for chunk in statements.chunks(account_nos):
                for row in await s.fetch(self._sql.accounts(len(chunk)), tuple(chunk)):
                    account = statements.to_account_row(row)
                    found[account.account_no] = account
            return found

        return await self._run(op)

    async def enter_game_many(
        self, account_nos: list[int], owner: str
    ) -> tuple[set[int], set[int]]:
        if not account_nos:
            return set(), set()

        async def op(s: _Session) -> tuple[set[int], set[int]]:
            entered: set[int] = set()
            present: set[int] = set()
            for chunk in statements.chunks(account_nos):
                await s.execute(self._sql.enter_game_many(len(chunk)), (owner, *chunk))
                for no, status, holder in await s.fetch(self._sql.status_rows(len(chunk)), chunk):
                    present.add(int(no))
                    if status and holder == owner:
                        entered.add(int(no))
            return entered, set(account_nos) - present

        return await self._run(op)

    async def set_status(self, account_no: int, status: int) -> bool:
        async def op(s: _Session) -> bool:
            return await s.execute(self._sql.set_status, (status, account_no)) > 0

        return await self._run(op)

    async def session_key(self, account_no: int) -> bytes | None:
        async def op(s: _Session) -> bytes | None:
            rows = await s.fetch(self._sql.session_key, (account_no,))
            return statements.to_key(rows[0][0]) if rows else None

        return await self._run(op)

    async def session_key_and_expiry(self, account_no: int) -> tuple[bytes, int | None] | None:
        async def op(s: _Session) -> tuple[bytes, int | None] | None:
            rows = await s.fetch(self._sql.session_key_and_expiry, (account_no,))
            return statements.to_key_and_expiry(rows[0] if rows else None)

        return await self._run(op)

    async def login_row(self, user_id: str) -> tuple[int, str | None] | None:
        params = self._sql.login_row_params(user_id)

        async def op(s: _Session) -> tuple[int, str | None] | None:
            rows = await s.fetch(self._sql.login_row, params)
            return (int(rows[0][0]), rows[0][1]) if rows else None

        return await self._run(op)

    async def set_password(self, account_no: int, password_hash: str) -> bool:
        async def op(s: _Session) -> bool:
            return await s.execute(self._sql.set_password, (password_hash, account_no)) > 0

        return await self._run(op)

    async def issue_key(self, account_no: int, session_key: bytes, expires: int | None) -> None:
        params = self._sql.issue_key_params(account_no, session_key, expires)

        async def op(s: _Session) -> None:
            await s.execute(self._sql.issue_key, params)

        await self._run(op)

    async def enter_game(self, account_no: int, owner: str) -> bool:
        async def op(s: _Session) -> bool:
            return await s.execute(self._sql.enter_game, (owner, account_no)) > 0

        return await self._run(op)

    async def leave_game(self, account_nos: list[int], owner: str) -> None:
        if not account_nos:
            return

        async def op(s: _Session) -> None:
            for chunk in statements.chunks(account_nos):
                await s.execute(self._sql.leave_game(len(chunk)), (owner, *chunk))

        await self._run(op)

    async def release_owner(self, owner: str) -> int:
        async def op(s: _Session) -> int:
            return await s.execute(self._sql.release_owner, (owner,))

        return await self._run(op)

    async def owners_in_game(self) -> list[str]:
        async def op(s: _Session) -> list[str]:
            return [row[0] for row in await s.fetch(self._sql.owners_in_game)]

        return await self._run(op)

    async def max_account_no(self) -> int:
        async def op(s: _Session) -> int:
            rows = await s.fetch(self._sql.max_account_no)
            return int(rows[0][0])

        return await self._run(op)

    async def create_accounts(self, accounts: list[NewAccount]) -> None:
        """Insert account, sessionkey and status rows in one transaction (multi-row INSERTs of
        up to MYSQL_ROWS_CHUNK rows).
        Raises ValueError for a batch with a key that is not 64 bytes or a repeated AccountNo."""
        statements.check_new_accounts(accounts)
        if not accounts:
            return
        inserts = self._sql.account_inserts(accounts, statements.MYSQL_ROWS_CHUNK)

        async def op(s: _Session) -> None:
            await s.execute("BEGIN")
            try:
                for sql, params in inserts:
                    await s.execute(sql, params)
                await s.execute("COMMIT")
            except pymysql.err.IntegrityError:
                await s.execute("ROLLBACK")
                existing = await self._existing(s, [a.account_no for a in accounts])
                if not existing:
                    raise
                raise DatabaseError(statements.duplicates_message(existing)) from None

        await self._run(op)

    async def _existing(self, s: _Session, account_nos: Sequence[int]) -> list[int]:
        found: list[int] = []
        for chunk in statements.chunks(account_nos):
            rows = await s.fetch(self._sql.existing(len(chunk)), tuple(chunk) * 3)
            found.extend(int(row[0]) for row in rows)
        return found

    async def white_ips(self) -> set[str]:
        async def op(s: _Session) -> set[str]:
            return {row[0].strip() for row in await s.fetch(self._sql.white_ips)}

        return await self._run(op)

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
        async def op(s: _Session) -> None:
            await s.execute(sql, params)

        await self._run(op)

    async def status_rows(
        self, table: str, since: datetime.datetime, until: datetime.datetime, limit: int
    ) -> list[StatusRow]:
        params = statements.status_rows_params(table, since, until, limit)
        sql = self._sql.monitoring_rows[table]

        async def op(s: _Session) -> list[StatusRow]:
            return statements.to_status_rows(table, await s.fetch(sql, params))

        return await self._run(op)


class _Session:
    """One call's use of a connection; counts the commands the server has answered, so that a
    failure can be told to have happened before anything reached the server."""

    def __init__(self, conn: aiomysql.Connection) -> None:
        self._conn = conn
        self.completed = 0

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it matched (FOUND_ROWS) or inserted."""
        async with self._conn.cursor() as cur:
            count = await cur.execute(sql, params or None)
        self.completed += 1
        return int(count)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._conn.cursor() as cur:
            await cur.execute(sql, params or None)
            rows = await cur.fetchall()
        self.completed += 1
        return list(rows)


def _is_connection_lost(exc: BaseException) -> bool:
    """The connection died under the call (as opposed to: could not connect, or bad statement)."""
    if isinstance(exc, pymysql.err.OperationalError):
        return bool(exc.args) and exc.args[0] in _LOST_CLIENT_CODES
    return isinstance(exc, pymysql.err.InterfaceError | ConnectionError)


def _is_statement_error(exc: BaseException) -> bool:
    """The server answered with an error: the connection itself is in a clean state."""
    if isinstance(exc, DatabaseError):
        return True  # raised by an operation after it handled the server's answer
    if not isinstance(exc, pymysql.err.MySQLError) or isinstance(exc, pymysql.err.InterfaceError):
        return False
    code = exc.args[0] if exc.args else None
    return isinstance(code, int) and 1000 <= code < 2000
