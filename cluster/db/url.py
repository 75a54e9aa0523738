"""Parsing ``[db] url`` into what a backend needs to connect, and showing it without a password.

Two forms: ``sqlite:///DIR`` (DIR may be relative to the working directory, or absolute as in
``sqlite:////srv/cluster/db``) and ``mysql://user[:password]@host[:port]`` (port 3306 by default,
user and password percent-decoded). A malformed URL raises :class:`ValueError` with one line that
names the problem and shows the URL with its password masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

SQLITE_SCHEME = "sqlite:///"
MYSQL_SCHEME = "mysql://"
MYSQL_DEFAULT_PORT = 3306


@dataclass(frozen=True)
class SqliteTarget:
    """Where the two SQLite files live."""

    directory: Path
    display: str  # the URL as given (it holds no secret)


@dataclass(frozen=True)
class MysqlTarget:
    """A MySQL/MariaDB server to connect to."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    display: str  # the URL with the password masked, safe for messages and logs


def redact(url: str) -> str:
    """`url` with any password replaced by ``***`` (never fails, even on a malformed URL)."""
    if not url.startswith(MYSQL_SCHEME):
        return url
    rest = url[len(MYSQL_SCHEME) :]
    userinfo, at, hostpart = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{MYSQL_SCHEME}{user}:***@{hostpart}"


def parse(url: str) -> SqliteTarget | MysqlTarget:
    """The target that `url` names; raises ValueError (one line, password masked) when malformed."""
    if url.startswith(SQLITE_SCHEME):
        directory = url[len(SQLITE_SCHEME) :]
        if not directory:
            raise ValueError(f"db.url: {url!r} names no directory (sqlite:///DIR)")
        return SqliteTarget(Path(directory), url)
    if url.startswith(MYSQL_SCHEME):
        return _parse_mysql(url)
    raise ValueError(
        f"db.url: {redact(url)!r} must be sqlite:///DIR or mysql://user:pass@host:port"
    )


def _parse_mysql(url: str) -> MysqlTarget:
    shown = redact(url)
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"db.url: {shown!r} must be mysql://user:pass@host:port with nothing after the port"
            " (the database names come from [db] prefix)"
        )
    try:
        port = parts.port or MYSQL_DEFAULT_PORT
    except ValueError:
        raise ValueError(f"db.url: {shown!r} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"db.url: {shown!r} names no host (mysql://user:pass@host:port)")
    if not parts.username:
        raise ValueError(f"db.url: {shown!r} names no user (mysql://user:pass@host:port)")
    return MysqlTarget(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        display=shown,
    )
