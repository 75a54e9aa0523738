"""The schema files shipped in the ``sql`` package, ready to run on one backend.

``sql/mysql.sql`` is a template with ``{accountdb}`` / ``{status_server}`` placeholders for the
prefixed database names; :func:`mysql_statements` substitutes them and splits the file into single
statements (at each ``;`` that ends a line, ``--`` comment lines dropped). ``sql/sqlite.sql`` is
split the same way (:func:`sqlite_statements`), its names already the attached databases'.
"""

from __future__ import annotations

from importlib import resources

ACCOUNTDB = "accountdb"
STATUS_SERVER = "status_server"


def database_names(prefix: str) -> tuple[str, str]:
    """The (accountdb, status_server) database names on a MySQL server for `prefix`."""
    return prefix + ACCOUNTDB, prefix + STATUS_SERVER


def _read(name: str) -> str:
    return (resources.files("sql") / name).read_text(encoding="utf-8")


def mysql_statements(prefix: str) -> list[str]:
    """The MySQL/MariaDB schema as single idempotent statements, databases named for `prefix`."""
    accountdb, status_server = database_names(prefix)
    text = _read("mysql.sql").replace("{accountdb}", accountdb)
    return split(text.replace("{status_server}", status_server))


def split(text: str) -> list[str]:
    """`text` as single statements: split at each ``;`` that ends a line, ``--`` comment lines
    dropped."""
    statements, current = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().removesuffix(";"))
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def sqlite_script() -> str:
    """The SQLite schema script (accountdb and status_server must be attached)."""
    return _read("sqlite.sql")


def sqlite_statements() -> list[str]:
    """The SQLite schema as single idempotent statements (run one by one, so that they can share
    a transaction with an upgrade)."""
    return split(sqlite_script())
