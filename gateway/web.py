"""The web role: ``POST /v1/login`` (ID and password, JSON) -> a fresh session key.

A client first logs in here with its ``userid`` and password; the answer carries its AccountNo,
a new random 64-byte session key (as 128 hex digits) written to ``accountdb.sessionkey`` with an
expiry (``[auth] key_ttl``), and the login, game and chat addresses. It then logs in on a
gateway's login port with the AccountNo and the raw 64 bytes, as the original client did after
the original web server. A new login replaces the account's previous key.

Answers (always JSON):

- 200 ``{"account_no", "session_key", "login", "game", "chat", "expires_in"}`` (``chat`` is null
  while ``[chat] enabled = false``; ``expires_in`` is null when ``key_ttl = 0``);
- 400 ``{"error": ...}``: the body is not a JSON object with ``userid`` and ``password`` strings;
- 401 ``{"error": "invalid credentials"}``: wrong password, unknown user, an account without a
  password, or a locked account: one answer, and each costs one argon2 check (an unknown user is
  checked against a dummy hash made at start), so neither the answer nor its time tells them
  apart;
- 429 ``{"error": "too many requests"}``: the client address went over ``[web] address_rate``
  (token bucket, burst ``address_burst``);
- 503 ``{"error": ...}``: the database cannot be reached, or more than ``[web] max_waiting``
  logins already wait for a hashing thread.

**Where the hashing runs.** An argon2 check takes tens of milliseconds of CPU by design; on a
gateway's event loop it would stall every client of that gateway. So the web login is a role of
its own, in front of the DB, and even there the checks run on a thread pool of ``[web]
hash_threads`` (argon2-cffi releases the GIL), so its own loop stays free to answer 429s and
count. It talks to the DB directly (no auth worker in the path: a web login needs no game worker,
and the key it writes is what the auth workers read). It joins the bus only to be monitored (its
1-second sample).

**Abuse.** Per account: ``[web] lockout_failures`` wrong passwords within ``lockout_window``
seconds lock its web login for ``lockout_duration`` seconds (default 5 in 15 minutes -> 15
minutes, Nakama's numbers); a success clears the count. Per client address: ``address_rate``
attempts per second, burst ``address_burst`` (default 10/s, burst 20). Both are kept in this
process's memory: several web roles count separately, and a restart forgets them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cluster import passwords, role
from cluster.config import Config
from cluster.db import Database, DatabaseError, open_database
from cluster.dispatch import Dispatcher
from cluster.link import bus_link
from cluster.role import Role, StartupError
from cluster.stats import ProcessSampler, Rates, Reporter

log = logging.getLogger("gateway.web")

#: Bytes of request body accepted (a login is well under 2 KiB).
MAX_BODY = 4096
#: Longest user ID looked up (``account.userid`` is VARCHAR(64) in the original schema).
MAX_USERID = 64
#: Seconds a stopping web role gives the requests in flight.
SHUTDOWN_TIMEOUT = 5.0
#: Seconds between two prunings of the rate and lockout tables.
PRUNE_INTERVAL = 1.0
#: The one answer for every refused credential.
INVALID = {"error": "invalid credentials"}
#: What the summary line in the log shows.
LOG_KEYS = ("login_ok", "login_invalid", "login_locked", "login_rate_limited", "accounts_locked")
KEY_BYTES = 64


class AddressLimiter:
    """A token bucket per client address: `rate` per second, at most `burst` at once. 0 = off."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def allow(self, address: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1.0, now)
        return True

    def prune(self, now: float) -> None:
        """Forget the addresses whose bucket has filled up again (they are like new ones)."""
        full = [a for a, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]  # fmt: skip
        for address in full:
            del self._buckets[address]

    def __len__(self) -> int:
        return len(self._buckets)


class Lockouts:
    """Per-account lockout: `failures` wrong passwords within `window` seconds lock the account
    for `duration` seconds. ``failures = 0`` turns it off."""

    def __init__(self, failures: int, window: float, duration: float) -> None:
        self.failures = failures
        self.window = window
        self.duration = duration
        self._failed: dict[int, deque[float]] = {}
        self._locked: dict[int, float] = {}  # account -> locked until
        self.locks = 0  # accounts locked since start

    def locked(self, account_no: int, now: float) -> bool:
        until = self._locked.get(account_no)
        if until is None:
            return False
        if now < until:
            return True
        del self._locked[account_no]
        return False

    def failed(self, account_no: int, now: float) -> bool:
        """Count a wrong password; True when it locks the account."""
        if self.failures <= 0:
            return False
        times = self._failed.setdefault(account_no, deque())
        times.append(now)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.failures:
            return False
        del self._failed[account_no]
        self._locked[account_no] = now + self.duration
        self.locks += 1
        return True

    def succeeded(self, account_no: int) -> None:
        self._failed.pop(account_no, None)

    def prune(self, now: float) -> None:
        for account_no in [a for a, until in self._locked.items() if until <= now]:
            del self._locked[account_no]
        stale = [a for a, times in self._failed.items() if times[-1] <= now - self.window]
        for account_no in stale:
            del self._failed[account_no]

    def count_locked(self, now: float) -> int:
        return sum(until > now for until in self._locked.values())


class PasswordChecks:
    """argon2 checks on a thread pool of `threads`, with at most `max_waiting` more queued."""

    def __init__(self, hasher: PasswordHasher, threads: int, max_waiting: int) -> None:
        self.hasher = hasher
        self.limit = threads + max_waiting
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="argon2")
        self.pending = 0
        # Checked when nobody has the ID, so an unknown user costs what a wrong password does.
        self.dummy_hash = hasher.hash(secrets.token_urlsafe(18))

    def full(self) -> bool:
        return self.pending >= self.limit

    async def verify(self, encoded: str | None, password: str) -> bool:
        """Whether `password` matches `encoded` (None: checked against the dummy hash, False)."""
        target = encoded if encoded is not None else self.dummy_hash
        self.pending += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._verify, target, password
            )
        finally:
            self.pending -= 1
        return ok and encoded is not None

    def _verify(self, encoded: str, password: str) -> bool:
        try:
            return self.hasher.verify(encoded, password)
        except VerificationError:
            return False
        except InvalidHashError:
            # not an argon2 hash (e.g. a userpass of the original schema): it never matches, and
            # costs what a check costs
            try:
                self.hasher.verify(self.dummy_hash, password)
            except VerificationError:
                pass
            return False

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class WebLogin:
    """The login endpoint's logic and counters (the aiohttp app is :meth:`app`)."""

    def __init__(self, config: Config, db: Database, clock: Callable[[], float] = time.monotonic
                 ) -> None:  # fmt: skip
        self.config = config
        self.db = db
        self.clock = clock
        web_cfg = config.web
        self.limiter = AddressLimiter(web_cfg.address_rate, web_cfg.address_burst)
        self.lockouts = Lockouts(web_cfg.lockout_failures, web_cfg.lockout_window,
                                 web_cfg.lockout_duration)  # fmt: skip
        self.checks = PasswordChecks(
            passwords.hasher(config), web_cfg.hash_threads, web_cfg.max_waiting
        )
        self.counters: Counter[str] = Counter()
        self._rates = Rates()
        self.inflight = 0
        gw = config.gateway
        self.addresses: dict[str, str | None] = {
            "login": f"{gw.public_host}:{gw.login_port}",
            "game": f"{gw.public_host}:{gw.game_port}",
            "chat": f"{gw.public_host}:{gw.chat_port}" if config.chat.enabled else None,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_json_errors])
        app.router.add_post("/v1/login", self.login)
        return app

    async def login(self, request: web.Request) -> web.Response:
        self.inflight += 1
        try:
            return await self._login(request)
        finally:
            self.inflight -= 1

    async def _login(self, request: web.Request) -> web.Response:
        now = self.clock()
        if not self.limiter.allow(request.remote or "", now):
            self.counters["login_rate_limited"] += 1
            return _error(429, "too many requests", **{"Retry-After": "1"})
        try:
            userid, password = _credentials(await request.read())
        except web.HTTPRequestEntityTooLarge:
            self.counters["login_bad_request"] += 1
            return _error(413, f"the body is larger than {MAX_BODY} bytes")
        except ValueError as exc:
            self.counters["login_bad_request"] += 1
            return _error(400, str(exc))
        if self.checks.full():
            self.counters["login_busy"] += 1
            return _error(503, "busy, try again", **{"Retry-After": "1"})
        try:
            row = await self.db.login_row(userid) if len(userid) <= MAX_USERID else None
        except DatabaseError as exc:
            self.counters["login_unavailable"] += 1
            log.warning("web login answered 503: %s", exc)
            return _error(503, "service unavailable", **{"Retry-After": "1"})
        account_no, encoded = row if row is not None else (0, None)
        locked = row is not None and self.lockouts.locked(account_no, self.clock())
        ok = await self.checks.verify(encoded, password)
        if locked:
            self.counters["login_locked"] += 1
            return web.json_response(INVALID, status=401)
        if not ok:
            self.counters["login_invalid"] += 1
            if row is not None and self.lockouts.failed(account_no, self.clock()):
                log.warning("account %d: web login locked for %.0fs after %d failures",
                            account_no, self.lockouts.duration, self.lockouts.failures)  # fmt: skip
            return web.json_response(INVALID, status=401)
        self.lockouts.succeeded(account_no)
        return await self._issue(account_no)

    async def _issue(self, account_no: int) -> web.Response:
        ttl = self.config.auth.key_ttl
        key = secrets.token_bytes(KEY_BYTES)
        expires = math.ceil(time.time() + ttl) if ttl else None
        try:
            await self.db.issue_key(account_no, key, expires)
        except DatabaseError as exc:
            self.counters["login_unavailable"] += 1
            log.warning("web login of account %d answered 503: %s", account_no, exc)
            return _error(503, "service unavailable", **{"Retry-After": "1"})
        self.counters["login_ok"] += 1
        log.debug("account %d: web login, key issued", account_no)
        return web.json_response({
            "account_no": account_no, "session_key": key.hex(), **self.addresses,
            "expires_in": ttl or None,
        })  # fmt: skip

    def prune(self) -> None:
        now = self.clock()
        self.limiter.prune(now)
        self.lockouts.prune(now)

    def collect(self) -> dict[str, Any]:
        """The web role's fields of its 1-second sample (see cluster.stats)."""
        totals = {name: self.counters[name] for name in (
            "login_ok", "login_invalid", "login_locked", "login_rate_limited", "login_bad_request",
            "login_busy", "login_unavailable")}  # fmt: skip
        return {
            "sessions": self.inflight,
            "packet_pool": self.checks.pending,
            **totals,
            "lockouts": self.lockouts.locks,
            "accounts_locked": self.lockouts.count_locked(self.clock()),
            "hashing": self.checks.pending,
            "rate_addresses": len(self.limiter),
            **self._rates.update({"login_ok_tps": totals["login_ok"]}),
        }


def _credentials(body: bytes) -> tuple[str, str]:
    """``userid`` and ``password`` of a login body; ValueError with the one problem."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError('the body must be a JSON object {"userid": ..., "password": ...}')
    for name in ("userid", "password"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"{name!r} must be a non-empty string")
    if len(data["password"]) > passwords.MAX_LENGTH:
        raise ValueError(f"'password' has at most {passwords.MAX_LENGTH} characters")
    return data["userid"], data["password"]


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, ...) as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)


class WebRole(Role):
    """The web login process (see :mod:`cluster.role` for the order its hooks run in)."""

    name = "web"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db: Database | None = None
        self.login: WebLogin | None = None
        self.runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        return f"{self.config.web.host}:{self.config.web.port}"

    async def open(self) -> None:
        config = self.config
        db = self.db = await open_database(config)
        login = self.login = WebLogin(config, db)
        self.link = bus_link(
            config, "web", Dispatcher(login.counters), info={"web": self.address},
            load=lambda: login.inflight, counters=login.counters,
        )  # fmt: skip
        self.runner = web.AppRunner(login.app(), access_log=None,
                                    shutdown_timeout=SHUTDOWN_TIMEOUT)  # fmt: skip
        await self.runner.setup()
        site = web.TCPSite(self.runner, config.web.host, config.web.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on web.port {self.address}: {exc}") from None
        self.reporter = Reporter(
            self.link, ProcessSampler(self.link.identity.decode(), "web", login.collect),
            LOG_KEYS, log,
        )  # fmt: skip

    def ready_fields(self) -> dict[str, object]:
        return {"web": self.address}

    async def serve(self, stop: asyncio.Event) -> None:
        assert self.login is not None
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), PRUNE_INTERVAL)
            except TimeoutError:
                pass
            self.login.prune()

    async def drain(self) -> None:
        """Take no new request; let the ones in flight finish (bounded)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        await super().close()
        if self.login is not None:
            self.login.checks.close()
            log.info("stopped; counters: %s", dict(self.login.counters))
        if self.db is not None:
            await self.db.close()


def serve(config: Config) -> int:
    """Run the web login in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return role.serve(WebRole(config))
