"""The real databases the tests run on: a fresh SQLite directory or fresh MariaDB databases.

Two backends, named as everywhere else (the ``backend`` fixture's ids, ``bench/login.py``):
``"sqlite"`` and ``"mariadb"``. The ``backend`` fixture (registered for every test module by
conftest.py) yields a :class:`Backend` for each in turn. MariaDB is reached at
``CLUSTER_TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306``) under a unique ``[db]
prefix`` whose databases are dropped afterwards; when it cannot be reached its cases skip with
the reason, or fail under ``CI=true``.

A :class:`Backend` gives the database to the code under test in two ways:

- :meth:`Backend.config`: a :class:`~cluster.config.Config` for code run in the test's process
  (the server reached directly); :meth:`Backend.breakable` also yields a :class:`Breaker` that cuts
  or blocks the database from inside the test's event loop;
- :attr:`Backend.db_section`: the ``[db]`` keys for a cluster of processes; MariaDB is then
  reached through a :class:`ThreadedTcpProxy`, so that :meth:`Backend.outage` can take the
  database away from those processes.

:meth:`Backend.execute` runs SQL directly (to craft rows the interface never writes, and to check
rows): tables are named ``accountdb.account``, ``status_server.login`` (the prefix is added) and
parameters are marked ``?``. :func:`with_db` runs a scenario on an open
:class:`~cluster.db.Database`.

An unavailable database: MariaDB's proxy stops (calls fail at once) or stalls (calls wait for
``[db] timeout``); SQLite's ``accountdb.db`` is write-locked by another connection (WAL mode:
reads go on, writes wait for the busy timeout and then fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pymysql
import pytest

from cluster.config import Config, load
from cluster.db import Database, open_database
from cluster.db.url import MysqlTarget, parse

T = TypeVar("T")

BACKENDS = ["sqlite", "mariadb"]
MYSQL_URL = os.environ.get("CLUSTER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
DATABASES = ("accountdb", "status_server")
_QUALIFIED = re.compile(r"(?<![\w`.])(accountdb|status_server)\.")


def _mysql_target(url: str = MYSQL_URL) -> MysqlTarget:
    target = parse(url)
    assert isinstance(target, MysqlTarget), url
    return target


def _mysql_connect(url: str = MYSQL_URL) -> pymysql.Connection:
    target = _mysql_target(url)
    return pymysql.connect(
        host=target.host,
        port=target.port,
        user=target.user,
        password=target.password,
        autocommit=True,
        connect_timeout=3,
    )


def mysql_unreachable() -> str | None:
    """None when MariaDB answers at :data:`MYSQL_URL`, else why not."""
    try:
        _mysql_connect().close()
    except Exception as exc:  # any failure means: not usable here
        return f"MariaDB at {parse(MYSQL_URL).display} unreachable: {exc}"
    return None


def _sqlite_connect(directory: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, timeout=10)
    for name in DATABASES:
        conn.execute(f"ATTACH DATABASE ? AS {name}", (str(directory / f"{name}.db"),))
    return conn


class Backend:
    """One test's database (see the module doc)."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
        self.name = name
        self.tmp_path = tmp_path
        self.sqlite_dir = tmp_path / "db"  # created by the code under test, not here
        self.prefix = f"t{secrets.token_hex(5)}_" if name == "mariadb" else ""
        self.url = MYSQL_URL if name == "mariadb" else f"sqlite:///{self.sqlite_dir}"
        self._proxy: ThreadedTcpProxy | None = None
        self._lock = SqliteLock(self.sqlite_dir)

    # -- giving the database to the code under test -----------------------------------------------

    def config(self, url: str | None = None, **db: Any) -> Config:
        """A config for this backend (or for `url`) with ``[db]`` keys overridden by `db`."""
        env = {
            "CLUSTER_CLUSTER_DATA_DIR": str(self.tmp_path / "data"),
            "CLUSTER_DB_URL": url or self.url,
        }
        if self.prefix:
            env["CLUSTER_DB_PREFIX"] = self.prefix
        env.update({f"CLUSTER_DB_{key.upper()}": str(value) for key, value in db.items()})
        return load(None, env=env)

    @property
    def db_section(self) -> dict[str, Any]:
        """The ``[db]`` keys for a cluster of processes (MariaDB: through the proxy that
        :meth:`outage` cuts, started on first use)."""
        if self.name == "sqlite":
            return {"url": self.url}
        if self._proxy is None:
            target = _mysql_target()
            self._proxy = ThreadedTcpProxy(target.host, target.port)
        return {"url": _mysql_url_via(self._proxy.port), "prefix": self.prefix}

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The database is unavailable to the cluster's processes inside the block."""
        if self.name == "sqlite":
            self._lock.hold()
            try:
                yield
            finally:
                self._lock.release()
            return
        assert self._proxy is not None, "outage() of a backend whose db_section nobody used"
        self._proxy.cut()
        try:
            yield
        finally:
            self._proxy.restore()

    @contextlib.asynccontextmanager
    async def breakable(self, **db: Any) -> AsyncIterator[tuple[Config, Breaker]]:
        """A config whose database the yielded :class:`Breaker` cuts, blocks and restores from
        inside the running event loop."""
        if self.name == "sqlite":
            yield self.config(**db), SqliteBreaker(self._lock)
            return
        target = _mysql_target()
        proxy = TcpProxy(target.host, target.port)
        await proxy.start()
        try:
            yield self.config(_mysql_url_via(proxy.port), **db), ProxyBreaker(proxy)
        finally:
            await proxy.stop()

    # -- reaching the tables directly -------------------------------------------------------------

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on a connection of its own (committed) and return its rows.
        Tables are named ``accountdb.X`` / ``status_server.X``; parameters are marked ``?``."""
        if self.prefix:
            sql = _QUALIFIED.sub(lambda m: f"{self.prefix}{m.group(1)}.", sql)
        if self.name == "sqlite":
            with contextlib.closing(_sqlite_connect(self.sqlite_dir)) as conn:
                return conn.execute(sql, params).fetchall()
        with contextlib.closing(_mysql_connect()) as conn, conn.cursor() as cursor:
            if params:
                cursor.execute(sql.replace("?", "%s"), params)
            else:
                cursor.execute(sql)
            return list(cursor.fetchall())

    def close(self) -> None:
        """Stop the proxy and drop this test's MariaDB databases."""
        self._lock.release()
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None
        if self.name == "mariadb":
            with contextlib.closing(_mysql_connect()) as conn, conn.cursor() as cursor:
                for name in DATABASES:
                    cursor.execute(f"DROP DATABASE IF EXISTS `{self.prefix}{name}`")


def _mysql_url_via(port: int) -> str:
    """:data:`MYSQL_URL`'s credentials, to 127.0.0.1:`port` (a proxy in front of the server)."""
    target = _mysql_target()
    auth = quote(target.user, safe="")
    if target.password:
        auth += ":" + quote(target.password, safe="")
    return f"mysql://{auth}@127.0.0.1:{port}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn (MariaDB skipped with the reason when unreachable, failed under
    ``CI=true``)."""
    if request.param == "mariadb":
        why = mysql_unreachable()
        if why is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{why}; CI=true needs it")
            pytest.skip(why)
    made = Backend(request.param, tmp_path)
    try:
        yield made
    finally:
        made.close()


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


# -- making a database unavailable ----------------------------------------------------------------


class SqliteLock:
    """Another connection's write lock (``BEGIN IMMEDIATE``) on ``accountdb.db``: in WAL mode
    readers still read, writers wait for their busy timeout and then fail."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "accountdb.db"
        self._holder: sqlite3.Connection | None = None

    def hold(self) -> None:
        if self._holder is None:
            holder = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            self._holder = holder

    def release(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            holder.rollback()
            holder.close()


class Breaker:
    """Makes a backend unavailable from inside the event loop: `cut` (calls fail at once, or for
    SQLite once the lock wait ends), `block` (calls wait for the timeout), `restore`."""

    async def cut(self) -> None:
        raise NotImplementedError

    async def block(self) -> None:
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError


class SqliteBreaker(Breaker):
    """SQLite: both `cut` and `block` hold the write lock (see :class:`SqliteLock`)."""

    def __init__(self, lock: SqliteLock) -> None:
        self.lock = lock

    async def cut(self) -> None:
        self.lock.hold()

    async def block(self) -> None:
        self.lock.hold()

    async def restore(self) -> None:
        self.lock.release()


class ProxyBreaker(Breaker):
    """MariaDB: the proxy in front of the server stops (connections and port closed) or stalls."""

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
    """A loopback TCP proxy to ``host:port`` on the running event loop: forwards bytes both ways
    until told otherwise.

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


class ThreadedTcpProxy:
    """A :class:`TcpProxy` on its own thread and event loop, for clients that are other
    processes. :meth:`cut` closes every connection and stops listening (what clients see when the
    server goes down); :meth:`restore` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._proxy = TcpProxy(host, port)
        self._call(self._proxy.start(0))
        self.port = self._proxy.port

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def cut(self) -> None:
        self._call(self._proxy.stop())

    def restore(self) -> None:
        self._call(self._proxy.start(self.port))

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
