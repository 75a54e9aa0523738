"""The web login as the dummy's clients use it (``--path web``): ``POST /v1/login`` with the
account's UserID and password, for the session key and the login address.

One :class:`WebLogin` per load engine: one aiohttp ClientSession (its connection pool shared by
every client of the engine), at most ``concurrency`` requests in flight (the others wait their
turn, in the client's Web phase), each bounded by ``timeout`` seconds. Every answer becomes one
:class:`WebResult` whose ``kind`` is what the engines count: ``ok`` (``web_ok``) or one of the
failure kinds ``invalid`` (401), ``rate_limited`` (429), ``busy`` (503), ``error`` (anything
else: no connection, a timeout, another status, an answer that is not the documented JSON),
counted as ``web_<kind>`` errors, as the login port's statuses are counted as ``login_<status>``.

A refused client waits before it tries again: the answer's ``Retry-After`` (the web role sends
1 s with 429 and 503), else :data:`RETRY_AFTER`, spread by up to half as much again so that the
clients a rate limit refused do not all come back in the same instant.

When the engine winds down it calls :meth:`WebLogin.stop`: the logins still waiting their turn
end as ``stopped`` (not sent, not counted), those in flight finish; then :meth:`WebLogin.close`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("dummy")

#: Seconds a client waits after a failed web login when the answer names no Retry-After.
RETRY_AFTER = 1.0
#: The failure kinds (errors ``web_<kind>``); a success is ``web_ok``.
WEB_FAILURES = ("invalid", "rate_limited", "busy", "error")
KEY_BYTES = 64


@dataclass(frozen=True)
class WebResult:
    """What one web login gave: ``kind`` ("ok", one of :data:`WEB_FAILURES`, or "stopped": not
    sent, the engine is winding down); with ok, the raw 64-byte key and the login address;
    otherwise ``retry_after`` seconds and why."""

    kind: str
    session_key: bytes = b""
    login: tuple[str, int] | None = None
    retry_after: float = 0.0
    detail: str = ""


def address(text: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` too) as (host, port); ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"address {text!r} is not a string")
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {text!r} is not HOST:PORT")
    return host, int(port)


def login_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):  # a wildcard listen address: reach it on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1/login"


class WebLogin:
    """The web login client of one engine; :meth:`close` it when the engine is done."""

    def __init__(self, url: str, concurrency: int, timeout: float) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.concurrency = concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._stopped = False
        self._random = random.Random()
        self._logged: set[str] = set()  # failure details already logged (once each)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def login(self, account_no: int, user_id: str, password: str) -> WebResult:
        """One web login of account `account_no` (its answer must name that AccountNo)."""
        async with self._limit:
            if self._stopped:
                return WebResult("stopped")
            result = await self._post(account_no, user_id, password)
        if result.kind != "ok":
            retry = result.retry_after or RETRY_AFTER
            result = WebResult(result.kind, retry_after=retry * (1 + self._random.random() / 2),
                               detail=result.detail)  # fmt: skip
            if (
                result.kind == "error"
                and result.detail not in self._logged
                and len(self._logged) < 20
            ):
                self._logged.add(result.detail)
                log.warning("web login %s: %s (counted as web_error)", self.url, result.detail)
            elif result.kind == "rate_limited" and "429" not in self._logged:
                self._logged.add("429")
                log.warning("the web login refuses this address's rate (429): counted as "
                            "web_rate_limited, the client tries again after about %.0fs; load "
                            "tests from few hosts raise [web] address_rate (0: no limit)",
                            retry)  # fmt: skip
        return result

    async def _post(self, account_no: int, user_id: str, password: str) -> WebResult:
        session = self._open()
        body = {"userid": user_id, "password": password}
        try:
            async with session.post(self.url, json=body) as response:
                status = response.status
                text = await response.text()
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            return WebResult("error", detail=f"no answer within {self.timeout.total}s")
        except aiohttp.ClientError as exc:
            return WebResult("error", detail=f"{type(exc).__name__}: {exc}")
        if status == 401:
            return WebResult("invalid", retry_after=retry_after)
        if status == 429:
            return WebResult("rate_limited", retry_after=retry_after)
        if status == 503:
            return WebResult("busy", retry_after=retry_after)
        if status != 200:
            return WebResult("error", retry_after=retry_after,
                             detail=f"HTTP {status}: {text[:200]}")  # fmt: skip
        try:
            answer = json.loads(text)
            key = bytes.fromhex(answer["session_key"])
            login = address(answer["login"])
            if len(key) != KEY_BYTES:
                raise ValueError(f"a session key of {len(key)} bytes")
            if answer["account_no"] != account_no:
                raise ValueError(f"account_no {answer['account_no']!r} for {user_id}, whose "
                                 f"AccountNo is {account_no}")  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            return WebResult("error", detail=f"bad 200 answer ({type(exc).__name__}: {exc})")
        return WebResult("ok", session_key=key, login=login)

    def stop(self) -> None:
        """Send no more logins (those waiting their turn end as ``stopped``)."""
        self._stopped = True

    async def close(self) -> None:
        self._stopped = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def _seconds(value: str | None) -> float:
    """A Retry-After in seconds (0 when absent or an HTTP date, which the web role never sends)."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0
