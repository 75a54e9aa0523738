"""The cluster's databases behind one async interface (see :mod:`cluster.db.base`).

Open with :func:`open_database` and always ``await db.close()``. ``[db] url`` picks the backend:
``mysql://user:pass@host:port`` (:mod:`cluster.db.mysql`) or ``sqlite:///DIR``
(:mod:`cluster.db.sqlite`).
"""

from __future__ import annotations

from cluster.config import Config
from cluster.db.base import (
    MAX_STATUS_ROWS,
    SCHEMA_VERSION,
    STATUS_TABLES,
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
from cluster.db.url import MysqlTarget, parse

__all__ = [
    "MAX_STATUS_ROWS",
    "SCHEMA_VERSION",
    "STATUS_TABLES",
    "AccountRow",
    "BattleSample",
    "ChatSample",
    "Database",
    "DatabaseError",
    "DatabaseUnavailable",
    "HardwareSample",
    "LoginSample",
    "NewAccount",
    "SchemaReport",
    "StatusRow",
    "open_database",
]


async def open_database(config: Config) -> Database:
    """A started :class:`Database` for ``config.db``. Does not connect yet, so it succeeds while
    the database is down (calls raise DatabaseUnavailable until it is back). Raises ValueError
    (one line, password masked) for a malformed ``db.url``."""
    target = parse(config.db.url)
    database: Database
    if isinstance(target, MysqlTarget):
        from cluster.db.mysql import MysqlDatabase  # aiomysql is only needed for MySQL

        database = MysqlDatabase(
            target,
            prefix=config.db.prefix,
            pool_size=config.db.pool_size,
            timeout=config.db.timeout,
        )
    else:
        from cluster.db.sqlite import SqliteDatabase

        database = SqliteDatabase(target, timeout=config.db.timeout)
    await database.start()
    return database
