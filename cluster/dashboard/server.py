"""The monitor's HTTP port (``[monitor] metrics_host:metrics_port``): a minimal HTTP/1.0
responder, one request per connection.

========================  ==============================================================
``GET /``                 the dashboard page (``/dashboard.js``, ``/dashboard.css``: its assets)
``GET /metrics``          Prometheus text exposition of the latest samples
``GET /status.json``      the snapshot (live and gone processes)
``GET /api/series``       the in-memory history (:meth:`History.series`); ``?since=T``: only
                          the points after T (pass back the previous answer's ``now``)
``GET /api/history``      rows of a ``status_server`` table: ``?table=hardware|battle|chat|login``
                          (required), ``since`` / ``until`` (Unix seconds; default: the last
                          hour), ``limit`` (rows, default :data:`DEFAULT_ROWS`, at most
                          :data:`~cluster.db.MAX_STATUS_ROWS`; the newest ones are kept)
========================  ==============================================================

Anything else gets a 4xx with a one-line text body, never an exception: an unknown path 404, a
method other than GET 405, a malformed request line or query value 400, a request line longer
than :data:`MAX_LINE` 414, a longer header line or more than :data:`MAX_HEADERS` headers 431, a
request not read within :data:`READ_TIMEOUT` 408. ``/api/history`` answers 503 when the
database cannot be read; a failure of this code is logged and answered 500.

Dates: rows carry the DB's local time; they are converted with this process's time zone (the
same as SQLite's ``localtime``; for MySQL, run the monitor in the DB server's zone).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import logging
import math
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from cluster import metrics
from cluster.dashboard.history import History
from cluster.db import MAX_STATUS_ROWS, STATUS_TABLES, Database, DatabaseError

log = logging.getLogger("cluster.monitor")

#: Longest request or header line read (bytes, the line end included).
MAX_LINE = 8192
#: Most header lines read.
MAX_HEADERS = 64
#: Seconds to read the request.
READ_TIMEOUT = 5.0
#: Rows /api/history returns when no limit is given.
DEFAULT_ROWS = 5000
#: Query parameters parsed at most.
MAX_PARAMS = 16
#: Unix times accepted in queries (0 .. year 5138).
MAX_TIME = 1e11

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip
# The page fetches nothing but its own assets and API (no CDN, no inline code).
_SECURITY = (
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n"
)


class Watched(Protocol):
    """What the responder serves from (the monitor)."""

    history: History

    def live(self) -> list[dict[str, Any]]: ...

    def snapshot(self) -> dict[str, Any]: ...


@dataclass
class Site:
    """The monitor and its database (None: /api/history answers 503)."""

    monitor: Watched
    db: Database | None = None


class HttpError(Exception):
    """An answer other than 200: `status` and a one-line text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@functools.cache
def asset(name: str) -> bytes:
    """A file of the page, shipped as package data."""
    return resources.files("cluster.dashboard").joinpath("static", name).read_bytes()


async def handle(site: Site, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer one request on this connection and close it. Serve it with
    ``asyncio.start_server(..., limit=MAX_LINE)``: the reader's limit bounds every line."""
    try:
        try:
            method, target = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT)
            status, ctype, body = await _route(site, method, target)
        except HttpError as error:
            status, ctype, body = error.status, _TEXT, f"{error}\n".encode()
        except TimeoutError:
            status, ctype, body = 408, _TEXT, b"request not read in time\n"
        except (ConnectionError, asyncio.IncompleteReadError):
            raise
        except Exception:  # a bug here must not take the port down: logged, answered 500
            log.exception("HTTP request failed")
            status, ctype, body = 500, _TEXT, b"internal error (logged by the monitor)\n"
        head = (
            f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n{_SECURITY}Connection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    request = await _line(reader, 414)
    for count in range(MAX_HEADERS + 1):
        line = await _line(reader, 431)
        if not line.strip():
            break
        if count == MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    parts = request.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1].startswith("/"):
        raise HttpError(400, "malformed request line")
    return parts[0], parts[1]


async def _line(reader: asyncio.StreamReader, status: int) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(status, f"line longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise HttpError(400, "request cut short") from None
        raise
    if len(line) > MAX_LINE:
        raise HttpError(status, f"line longer than {MAX_LINE} bytes")
    return line


async def _route(site: Site, method: str, target: str) -> tuple[int, str, bytes]:
    try:
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True, max_num_fields=MAX_PARAMS)
    except ValueError:
        raise HttpError(400, "malformed query") from None
    if url.path not in _ASSETS and url.path not in _HANDLERS:
        raise HttpError(404, "not found: try /, /metrics, /status.json, /api/series")
    if method != "GET":
        raise HttpError(405, "only GET is served")
    if url.path in _ASSETS:
        name, ctype = _ASSETS[url.path]
        return 200, ctype, asset(name)
    ctype, body = await _HANDLERS[url.path](site, query)
    return 200, ctype, body


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) != 1:
        raise HttpError(400, f"{name}: given {len(values)} times")
    return values[0]


def _time(query: dict[str, list[str]], name: str, default: float) -> float:
    text = _one(query, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise HttpError(400, f"{name}: not a number: {text[:40]!r}") from None
    if not math.isfinite(value) or not 0 <= value <= MAX_TIME:
        raise HttpError(400, f"{name}: not a Unix time: {text[:40]!r}")
    return value


async def _metrics(site: Site, query: dict[str, list[str]]) -> tuple[str, bytes]:
    return metrics.CONTENT_TYPE, metrics.exposition(site.monitor.live())


async def _status(site: Site, query: dict[str, list[str]]) -> tuple[str, bytes]:
    return _JSON, json.dumps(site.monitor.snapshot()).encode()


async def _series(site: Site, query: dict[str, list[str]]) -> tuple[str, bytes]:
    since = _time(query, "since", -math.inf)
    return _JSON, json.dumps(site.monitor.history.series(since)).encode()


async def _history(site: Site, query: dict[str, list[str]]) -> tuple[str, bytes]:
    table = _one(query, "table")
    if table not in STATUS_TABLES:
        raise HttpError(400, f"table: one of {', '.join(STATUS_TABLES)}")
    until = _time(query, "until", time.time())
    since = _time(query, "since", max(until - 3600, 0))
    limit_text = _one(query, "limit")
    limit_text = str(DEFAULT_ROWS) if limit_text is None else limit_text
    try:
        limit = int(limit_text)
    except ValueError:
        raise HttpError(400, f"limit: not an integer: {limit_text[:40]!r}") from None
    if not 1 <= limit <= MAX_STATUS_ROWS:
        raise HttpError(400, f"limit: 1..{MAX_STATUS_ROWS}")
    if site.db is None:
        raise HttpError(503, "no database")
    try:
        rows = await site.db.status_rows(table, _local(since), _local(until), limit)
    except DatabaseError as exc:
        raise HttpError(503, f"database: {str(exc)[:200]}") from None
    columns = STATUS_TABLES[table]
    return _JSON, json.dumps({
        "table": table, "columns": list(columns), "since": since, "until": until,
        "limit": limit, "truncated": len(rows) == limit,
        "rows": [{"t": row.date.timestamp(), "writer": row.writer, **row.values} for row in rows],
    }).encode()  # fmt: skip


def _local(when: float) -> datetime.datetime:
    """Unix time as a naive local datetime, whole seconds (the rows' resolution)."""
    return datetime.datetime.fromtimestamp(int(when))


_HANDLERS = {
    "/metrics": _metrics,
    "/status.json": _status,
    "/api/series": _series,
    "/api/history": _history,
}
