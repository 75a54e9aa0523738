"""Both DB backends for integration tests: embedded SQLite files and the real MariaDB server.

MariaDB is reached at ``CLUSTER_TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306``); each
test gets its own databases (a unique ``[db] prefix``) dropped afterwards, and the cluster reaches
the server through a :class:`~tests.harness.TcpProxy` so a test can cut it off. When MariaDB is
unreachable its cases skip with the reason, except under ``CI=true``, where they fail.

:meth:`Backend.outage` makes the database unavailable to the cluster: the proxy is cut (MariaDB:
nothing can be read or written), or another process holds the write lock (SQLite in WAL mode:
reads go on, every write fails with "database is locked" after the busy timeout).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.harness import TcpProxy

MYSQL_URL = os.environ.get("CLUSTER_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")
BACKENDS = ["sqlite", "mariadb"]


def _mysql_params() -> dict[str, Any]:
    parts = urlsplit(MYSQL_URL)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
    }


def mysql_unreachable() -> str | None:
    """None when MariaDB answers, else why not."""
    import pymysql

    try:
        pymysql.connect(**_mysql_params(), connect_timeout=3).close()
    except Exception as exc:  # any failure means: not usable here
        return f"MariaDB at {MYSQL_URL} unreachable: {exc}"
    return None


class Backend:
    """One test's database: its ``[db]`` section, direct SQL for arranging and checking rows, and
    a switch to take it away from the cluster."""

    def __init__(self, name: str, tmp_path: Path) -> None:
        self.name = name
        self.proxy: TcpProxy | None = None
        self._locker: sqlite3.Connection | None = None
        if name == "sqlite":
            self.directory = tmp_path / "db"
            self.db_section: dict[str, Any] = {"url": f"sqlite:///{self.directory}"}
        else:
            params = _mysql_params()
            self.prefix = f"t{secrets.token_hex(4)}_"
            self.proxy = TcpProxy(params["host"], params["port"])
            auth = params["user"] + (f":{params['password']}" if params["password"] else "")
            self.db_section = {
                "url": f"mysql://{auth}@127.0.0.1:{self.proxy.port}",
                "prefix": self.prefix,
            }

    def _qualify(self, sql: str) -> str:
        if self.name == "sqlite":
            return sql
        return sql.replace("accountdb.", f"{self.prefix}accountdb.").replace(
            "status_server.", f"{self.prefix}status_server."
        )

    def _connect_sqlite(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", timeout=10, isolation_level=None)
        conn.execute("ATTACH DATABASE ? AS accountdb", (str(self.directory / "accountdb.db"),))
        conn.execute(
            "ATTACH DATABASE ? AS status_server", (str(self.directory / "status_server.db"),)
        )
        return conn

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement directly (names as ``accountdb.table``); returns its rows."""
        sql = self._qualify(sql)
        if self.name == "sqlite":
            conn = self._connect_sqlite()
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        import pymysql

        conn = pymysql.connect(**_mysql_params(), autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql)
                return list(cursor.fetchall())
        finally:
            conn.close()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """The database is unavailable to the cluster inside the block."""
        if self.proxy is not None:
            self.proxy.cut()
            try:
                yield
            finally:
                self.proxy.restore()
            return
        locker = sqlite3.connect(
            str(self.directory / "accountdb.db"), timeout=10, isolation_level=None
        )
        locker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
            import pymysql

            conn = pymysql.connect(**_mysql_params(), autocommit=True)
            try:
                with conn.cursor() as cursor:
                    for name in ("accountdb", "status_server"):
                        cursor.execute(f"DROP DATABASE IF EXISTS `{self.prefix}{name}`")
            finally:
                conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn (MariaDB skipped with a reason when unreachable, failed under CI)."""
    if request.param == "mariadb":
        why = mysql_unreachable()
        if why is not None:
            if os.environ.get("CI") == "true":
                pytest.fail(why)
            pytest.skip(why)
    made = Backend(request.param, tmp_path)
    yield made
    made.close()
