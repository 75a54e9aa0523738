"""What the ``cluster`` command line runs against the database: schema creation and bulk accounts.

Both functions open the database from the config and close it before returning. A malformed
``db.url`` raises ValueError and an unreachable database raises DatabaseUnavailable, each with one
line that names the URL (password masked), ready to print.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cluster.config import Config
from cluster.db import open_database, schema
from cluster.db.accounts import format_line, new_account, read_accounts_file
from cluster.db.url import MysqlTarget, parse

__all__ = ["BATCH_SIZE", "create_accounts", "init_db", "read_accounts_file"]

BATCH_SIZE = 5000  # accounts per transaction (three multi-row INSERTs)


async def init_db(config: Config) -> str:
    """Create the databases (MySQL), tables and view when missing, or bring an earlier schema up
    to the current one (idempotent; see :mod:`cluster.db.upgrade`); returns a one-line summary
    such as ``schema ready on sqlite:///DIR (accountdb, status_server): version 2, nothing to
    change`` (``...: version 2, created`` / ``...: version 2; upgraded: account.userpass widened,
    sessionkey.expires added, ...``). A schema that cannot be upgraded safely, or is newer than
    this code, raises DatabaseError (SchemaRefused) with one line, before anything is changed."""
    db = await open_database(config)
    try:
        result = await db.init_schema()
    finally:
        await db.close()
    if isinstance(parse(config.db.url), MysqlTarget):
        names = schema.database_names(config.db.prefix)
    else:
        names = (schema.ACCOUNTDB, schema.STATUS_SERVER)
    return f"schema ready on {db.url} ({', '.join(names)}): {result.summary()}"


async def create_accounts(
    config: Config,
    count: int,
    start: int | None,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Create `count` accounts numbered from `start` (None: the highest AccountNo + 1, at least 1)
    in transactions of :data:`BATCH_SIZE`, and list them in the accounts file `out` (see
    :mod:`cluster.db.accounts`), appending each batch once it has committed. Calls
    ``progress(done, count)`` after each batch. Returns the first and last AccountNo.

    Raises ValueError for a count or start below 1, DatabaseError when an AccountNo already exists
    (the batches before it stay created and listed), DatabaseUnavailable, OSError for `out`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if start is not None and start < 1:
        raise ValueError(f"start must be at least 1, not {start}")
    db = await open_database(config)
    try:
        first = start if start is not None else max(await db.max_account_no() + 1, 1)
        end = first + count
        with Path(out).open("w", encoding="utf-8", newline="\n") as listing:
            for batch_start in range(first, end, BATCH_SIZE):
                batch = [
                    new_account(n) for n in range(batch_start, min(batch_start + BATCH_SIZE, end))
                ]
                await db.create_accounts(batch)
                listing.write("".join(map(format_line, batch)))
                listing.flush()
                if progress is not None:
                    progress(batch_start + len(batch) - first, count)
    finally:
        await db.close()
    return first, end - 1
