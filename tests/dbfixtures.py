"""Real databases for the DB tests: a fresh SQLite directory or fresh MariaDB databases per test.

Test modules define a ``backend`` fixture over :data:`BACKENDS` that yields from
:func:`open_backend`. MariaDB is reached at ``CLUSTER_TEST_MYSQL_URL`` (default
``mysql://root@127.0.0.1:3306``) under a unique ``[db] prefix`` whose databases are dropped at the
end; when it cannot be reached its cases skip, or fail when ``CI=true``.

:class:`DbBackend` also reaches the tables directly (to craft rows that the interface never
writes) and can break the database on purpose: :class:`Breaker` cuts it (calls fail at once) or
blocks it (calls wait for ``[db] timeout``), for SQLite with another connection's EXCLUSIVE lock
and for MariaDB with a :class:`TcpProxy` in front of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pymysql
import pytest

from cluster.config import Config, load
from cluster.db import Database, open_database
from cluster.db.url import MysqlTarget, parse

T = TypeVar("T")

BACKENDS = ["sqlite", "mysql"]
MYSQL_URL = os.environ.get("CLUSTER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")


class DbBackend:
    """One backend under test: configs for it, and direct access to its tables."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.tmp_path = tmp_path
        self.prefix = f"t{secrets.token_hex(5)}_" if name == "mysql" else ""

    def config(self, url: str | None = None, **db: Any) -> Config:
        """A config for this backend (or for `url`) with ``[db]`` keys overridden by `db`."""
        env = {"CLUSTER_CLUSTER_DATA_DIR": str(self.tmp_path / "data")}
        if url is not None or self.name == "mysql":
            env["CLUSTER_DB_URL"] = url or MYSQL_URL
        if self.prefix:
            env["CLUSTER_DB_PREFIX"] = self.prefix
        env.update({f"CLUSTER_DB_{key.upper()}": str(value) for key, value in db.items()})
        return load(None, env=env)

    @property
    def sqlite_dir(self) -> Path:
        return self.tmp_path / "data" / "db"

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own and commit. `sql` names tables as
        ``{accountdb}.account`` / ``{status_server}.login`` and marks parameters with ``?``."""
        names = {
            "accountdb": self.prefix + "accountdb",
            "status_server": self.prefix + "status_server",
        }
        sql = sql.format(**names)
        if self.name == "sqlite":
            with contextlib.closing(_sqlite_connect(self.sqlite_dir)) as conn:
                return conn.execute(sql, params).fetchall()
        with contextlib.closing(_mysql_connect(MYSQL_URL)) as conn, conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall())

    def drop(self) -> None:
        if self.name == "mysql":
            with contextlib.closing(_mysql_connect(MYSQL_URL)) as conn, conn.cursor() as cur:
                for name in ("accountdb", "status_server"):
                    cur.execute(f"DROP DATABASE IF EXISTS `{self.prefix}{name}`")

    @contextlib.asynccontextmanager
    async def breakable(self, **db: Any) -> AsyncIterator[tuple[Config, Breaker]]:
        """A config whose database the yielded Breaker can cut and restore (runs in the loop)."""
        if self.name == "sqlite":
            yield self.config(**db), SqliteBreaker(self.sqlite_dir)
            return
        target = parse(MYSQL_URL)
        assert isinstance(target, MysqlTarget)
        proxy = TcpProxy(target.host, target.port)
        await proxy.start()
        password = f":{target.password}" if target.password else ""
        url = f"mysql://{target.user}{password}@127.0.0.1:{proxy.port}"
        try:
            yield self.config(url, **db), ProxyBreaker(proxy)
        finally:
            await proxy.stop()


class Breaker:
    """Makes a backend unavailable: `cut` (calls fail at once, or for SQLite once the lock wait
    ends), `block` (calls wait for the timeout), `restore` (back to normal)."""

    async def cut(self) -> None:
        raise NotImplementedError

    async def block(self) -> None:
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError


class SqliteBreaker(Breaker):
    """Another connection holds ``BEGIN EXCLUSIVE`` on accountdb.db: writers wait, then fail
    (in WAL mode readers still read)."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "accountdb.db"
        self._holder: sqlite3.Connection | None = None

    async def cut(self) -> None:
        self._holder = sqlite3.connect(self._path, isolation_level=None)
        self._holder.execute("BEGIN EXCLUSIVE")

    async def block(self) -> None:
        await self.cut()

    async def restore(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.rollback()
            holder.close()


class ProxyBreaker(Breaker):
    """The proxy in front of MariaDB stops (connections closed, port closed) or stalls."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    async def cut(self) -> None:
        await self.proxy.stop()

    async def block(self) -> None:
        self.proxy.stall()

    async def restore(self) -> None:
        self.proxy.resume()
        if not self.proxy.listening:
            await self.proxy.start(self.proxy.port)


class TcpProxy:
    """A loopback TCP proxy to ``host:port``: forwards bytes both ways until told otherwise.

    `stop` closes every connection and the listening socket, `start(port)` listens again on the
    same port; `stall` closes the current connections and holds new ones without forwarding
    anything, `resume` ends that; `drop_connections` resets the current connections (now, without
    waiting for the loop) and keeps listening."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stalled = False
        self.port = 0

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self.drop_connections()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stall(self) -> None:
        self._stalled = True
        self.drop_connections()

    def resume(self) -> None:
        self._stalled = False
        self.drop_connections()

    def drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self._stalled:
            return  # held open, never answered, until dropped
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(_pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


def _sqlite_connect(directory: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, timeout=5)
    for name in ("accountdb", "status_server"):
        conn.execute(f"ATTACH DATABASE ? AS {name}", (str(directory / f"{name}.db"),))
    return conn


def _mysql_connect(url: str) -> pymysql.Connection:
    target = parse(url)
    assert isinstance(target, MysqlTarget)
    return pymysql.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        autocommit=True,
        connect_timeout=3,
    )


def open_backend(name: str, tmp_path: Path) -> Iterator[DbBackend]:
    """Body of the ``backend`` fixture: skip (or under CI=true fail) when MariaDB is down."""
    if name == "mysql":
        try:
            _mysql_connect(MYSQL_URL).close()
        except pymysql.err.MySQLError as exc:
            reason = f"MariaDB at {parse(MYSQL_URL).display} unreachable ({exc})"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{reason}; CI=true needs it")
            pytest.skip(reason)
    backend = DbBackend(name, tmp_path)
    try:
        yield backend
    finally:
        backend.drop()


def with_db(config: Config, scenario: Callable[[Database], Awaitable[T]], init: bool = True) -> T:
    """Open a Database for `config` (schema created unless `init` is False), run `scenario` on
    it in a fresh event loop, close it, and return what the scenario returned."""

    async def main() -> T:
        db = await open_database(config)
        try:
            if init:
                await db.init_schema()
            return await scenario(db)
        finally:
            await db.close()

    return asyncio.run(main())
