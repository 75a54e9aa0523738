"""The auth (login) worker: REQ_LOGIN -> account checks -> (systemlink: key push) -> RES_LOGIN.

For each request from a gateway's login port:

1. no game worker is live (per the broker's ROSTER), or no chat worker while ``[chat] enabled``
   (the original refused logins while no chat server was registered) -> NOSERVER;
2. a read of ``accountdb.v_account`` (batched with other logins, :mod:`workers.account_reader`)
   decides ACCOUNT_MISS, SESSION_MISS, STATUS_MISS, FAIL (key differs) or, for a status row
   != 0: GAME when the row has no owner (an operator's lock, which only ``cluster accounts
   unlock`` clears); else it asks the game worker holding the account: a session in game there
   is replaceable (the new login takes it over, as Nakama's single-session rule: OK), a row it
   does not back is a reset that had not landed yet (OK), no answer in time is GAME; accounts
   below ``[auth] dummy_accounts_below`` need no key (the original's dummies); an unreachable DB
   answers NOSERVER (try again later);
3. systemlink: SS_REQ_NEW_CLIENT_LOGIN {AccountNo, SessionKey, Parameter} is placed on the game
   worker the broker picks for the account and, while ``[chat] enabled``, on the chat worker it
   picks for the account, and the client hears OK only when SS_RES_NEW_CLIENT_LOGIN with that
   Parameter has come back from both (the original: "login is complete when both chat and game
   have answered"); an ACK for another Parameter (an earlier attempt) is ignored; no ACK from
   either within ``[auth] link_timeout`` answers NOSERVER and cancels every pushed key;
   non-systemlink: OK at once (the game and chat workers read the key from the DB themselves);
4. the answer goes to the gateway as a LOGIN_RESULT item (status, ID and Nickname from the DB);
   the gateway makes the client's RES_LOGIN of it with its own ``public_host`` and game and chat
   ports as the server addresses (only it knows where its clients reach it), then closes the
   connection.

Logins run concurrently (at most ``[auth] max_inflight``); replies of one loop iteration go out as
one bus message per gateway.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from cluster import bus, role
from cluster.bus import Item
from cluster.config import Config
from cluster.db import AccountRow, Database, DatabaseError, open_database
from cluster.dispatch import Dispatcher, Roster
from cluster.link import BusLink, bus_link
from cluster.messages import LoginReqLogin, LoginStatus
from cluster.outbox import Outbox, worker_delivery
from cluster.role import Role
from cluster.stats import ProcessSampler, Rates, Reporter
from workers.account_reader import AccountReader
from workers.reconcile import reconciler_for
from workers.status_rows import StatusRows

log = logging.getLogger("workers.auth")

CLOSE, CANCEL_KEY, ACCEPTED = bus.Control.CLOSE, bus.Control.CANCEL_KEY, bus.Control.ACCEPTED
IN_GAME = bus.Control.IN_GAME
PUSH, ACK = bus.LinkType.REQ_NEW_CLIENT_LOGIN, bus.LinkType.RES_NEW_CLIENT_LOGIN
REQ_LOGIN, LOGIN_RESULT = LoginReqLogin.TYPE, bus.Control.LOGIN_RESULT
#: Seconds a stopping auth worker waits for the logins in flight.
DRAIN_TIMEOUT = 15.0
#: What the summary line in the log shows.
LOG_KEYS = ("sessions", "login_success_tps", "login_latency_min_ms", "login_latency_avg_ms",
            "login_latency_max_ms", "game_workers")  # fmt: skip


def judge(row: AccountRow | None, session_key: bytes, now: float | None = None) -> LoginStatus:
    """The login status the account's v_account row gives for `session_key` at Unix time `now`
    (default: the clock). A key past its expiry (``sessionkey.expires``, set by the web login
    from ``[auth] key_ttl``) is no key: SESSION_MISS, as a missing one, so the client knows to
    get a new key from the web login rather than to retry this one."""
    if row is None:
        return LoginStatus.ACCOUNT_MISS
    if not row.has_key_row or row.session_key is None:
        return LoginStatus.SESSION_MISS
    if row.key_expires is not None and (time.time() if now is None else now) > row.key_expires:
        return LoginStatus.SESSION_MISS
    if not row.has_status_row or row.status is None or row.user_id is None or row.nickname is None:
        return LoginStatus.STATUS_MISS
    if not hmac.compare_digest(row.session_key, session_key):
        return LoginStatus.FAIL
    if row.status != 0:
        return LoginStatus.GAME
    return LoginStatus.OK


class LoginLatency:
    """Min / avg / max of completed logins (request -> answer), reset by :meth:`take`."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.count, self.total, self.low, self.high = 0, 0.0, float("inf"), 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.low = min(self.low, seconds)
        self.high = max(self.high, seconds)

    def take(self) -> tuple[float, float, float]:
        """(min, avg, max) in ms since the last take; zeros when there was none."""
        if not self.count:
            return 0.0, 0.0, 0.0
        result = (self.low * 1000, self.total / self.count * 1000, self.high * 1000)
        self._reset()
        return result


class AuthWorker:
    """Answers login requests. ``attach`` a link before use."""

    def __init__(self, config: Config, db: Database) -> None:
        self.systemlink = config.cluster.link_mode == "systemlink"
        self.dummy_below = config.auth.dummy_accounts_below
        self.chat = config.chat.enabled
        self.link_timeout = config.auth.link_timeout
        self.db = db
        self.reader = AccountReader(db, config.db.pool_size)
        self.link: BusLink | None = None
        self.outbox: Outbox | None = None
        self.status_rows: StatusRows | None = None
        self.game_workers: list[str] = []
        self.chat_workers: list[str] = []
        self.roster_known = asyncio.Event()
        self.counters: Counter[str] = Counter()
        self._rates = Rates()
        self.latency = LoginLatency()
        self.inflight = 0
        self._slots = asyncio.Semaphore(config.auth.max_inflight)
        self._awaiting: dict[int, tuple[int, asyncio.Future[bool]]] = {}
        self._parameters = itertools.count(random.getrandbits(40) << 16)
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, link: BusLink) -> None:
        self.link = link
        self.outbox = Outbox(worker_delivery(link, self.counters), self.counters)
        self.status_rows = StatusRows(self.db, link.identity.decode(), self.counters)

    # -- bus side --------------------------------------------------------------------------------

    def dispatcher(self) -> Dispatcher:
        """The bus dispatcher that feeds this worker."""
        return Dispatcher(
            self.counters, items=self.received_items, roster=self.roster,
            unroutable=self.unroutable, gone=self.gone,
        )  # fmt: skip

    def roster(self, roster: Roster) -> None:
        self.game_workers = list(roster.of("game"))
        self.chat_workers = list(roster.of("chat"))
        self.roster_known.set()

    def unroutable(self, dest: bytes, items: list[Item]) -> None:
        for parameter, mtype, fields in items:
            if mtype in (PUSH, IN_GAME):  # no game worker at all
                self._resolve(parameter, fields[0], False)

    def gone(self, identity: bytes, role: str) -> None:
        if role == "game":
            assert self.status_rows is not None
            self.status_rows.release_owner(identity.decode(errors="replace"))

    def received_items(self, source: bytes, items: list[Item]) -> None:
        for sid, mtype, fields in items:
            if mtype == REQ_LOGIN:
                account_no, session_key = fields
                assert self.outbox is not None
                self.outbox.add_soon(source, [sid, ACCEPTED])  # the gateway binds it to us
                task = asyncio.create_task(self.login(source, sid, account_no, session_key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif mtype == ACK:
                self._resolve(sid, fields[0], True)
            elif mtype == IN_GAME:
                self._resolve(sid, fields[0], bool(fields[1]))
            elif mtype != CLOSE:  # a client that left needs no answer
                self.counters["unexpected_item"] += 1

    def _resolve(self, parameter: int, account_no: int, acked: bool) -> None:
        waiting = self._awaiting.get(parameter)
        if waiting is None or waiting[0] != account_no or waiting[1].done():
            self.counters["stale_ack"] += 1
            log.debug("ignored a stale ACK (Parameter %d, account %d)", parameter, account_no)
            return
        waiting[1].set_result(acked)

    # -- one login -------------------------------------------------------------------------------

    async def login(self, gateway: bytes, sid: int, account_no: int, session_key: bytes) -> None:
        started = time.monotonic()
        async with self._slots:
            self.inflight += 1
            try:
                status, row = await self._decide(account_no, session_key)
            finally:
                self.inflight -= 1
        self.counters[f"status_{status.name.lower()}"] += 1
        if status == LoginStatus.OK:
            self.counters["login_ok"] += 1
            self.latency.add(time.monotonic() - started)
        user_id = (row.user_id or "") if row is not None else ""
        nickname = (row.nickname or "") if row is not None else ""
        assert self.outbox is not None
        self.outbox.add_soon(
            gateway,
            [sid, LOGIN_RESULT, account_no, int(status), user_id[:20], nickname[:20]],
        )
        self.outbox.add_soon(gateway, [sid, CLOSE, ""])

    async def _decide(
        self, account_no: int, session_key: bytes
    ) -> tuple[LoginStatus, AccountRow | None]:
        if not self.game_workers or (self.chat and not self.chat_workers):
            self.counters["no_worker"] += 1
            return LoginStatus.NOSERVER, None
        try:
            row = await self.reader.get(account_no)
        except DatabaseError as exc:
            self.counters["db_unavailable"] += 1
            log.warning("login of account %d answered NOSERVER: %s", account_no, exc)
            return LoginStatus.NOSERVER, None
        if row is not None and account_no < self.dummy_below:
            # The original's dummy accounts: any key stands (and is what systemlink pushes).
            row = row._replace(has_key_row=True, session_key=session_key, key_expires=None)
        status = judge(row, session_key)
        if status == LoginStatus.GAME and row is not None and row.status_owner is None:
            self.counters["account_locked"] += 1  # an operator's lock: `cluster accounts unlock`
        elif status == LoginStatus.GAME:
            held = await self._held(account_no)
            if held is None:
                self.counters["holder_silent"] += 1  # nobody could say: it may be in game
            elif held:
                # A session of the account is in game: the new login takes it over (the game
                # worker closes the old one as `replaced` once the new one proves its key).
                self.counters["replaceable_session"] += 1
                status = LoginStatus.OK
            else:
                self.counters["stale_status_row"] += 1  # its reset had not landed yet
                status = LoginStatus.OK
        if (
            status == LoginStatus.OK
            and self.systemlink
            and not await self._push_key(account_no, session_key)
        ):
            status = LoginStatus.NOSERVER
        return status, row

    async def _ask(
        self, account_no: int, item: Callable[[int], list[Any]], service: bytes = b"game"
    ) -> bool | None:
        """Place ``item(parameter)`` on the `service` worker of the account and wait for the
        answer carrying that Parameter: its value, False when no such worker exists, None when
        nothing answered within ``link_timeout`` (or it could not be sent)."""
        assert self.link is not None
        parameter = next(self._parameters)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._awaiting[parameter] = (account_no, answer)
        keys = bus.pack_keys([account_no])
        try:
            if not self.link.send([bus.PLACE, service, keys, bus.pack_body([item(parameter)])]):
                return None
            try:
                async with asyncio.timeout(self.link_timeout):
                    return await answer
            except TimeoutError:
                return None
        finally:
            del self._awaiting[parameter]

    async def _push_key(self, account_no: int, session_key: bytes) -> bool:
        """Systemlink: place the key on the account's game worker (and chat worker, while chat
        is enabled) and wait for every ACK. Unless all ACK in time, every push is cancelled, so
        no key is left behind."""
        pushed: list[tuple[bytes, int]] = []

        def push_to(service: bytes) -> Callable[[int], list[Any]]:
            def push(parameter: int) -> list[Any]:
                pushed.append((service, parameter))
                log.debug("pushed the key of account %d to %s (Parameter %d)",
                          account_no, service.decode(), parameter)  # fmt: skip
                return [parameter, PUSH, account_no, session_key, parameter]

            return push

        services = [b"game", b"chat"] if self.chat else [b"game"]
        answers = await asyncio.gather(
            *(self._ask(account_no, push_to(service), service) for service in services)
        )
        if all(answers):
            return True
        if any(answer is None for answer in answers):
            self.counters["ack_timeout"] += 1
            log.warning("no ACK for account %d within %.1fs", account_no, self.link_timeout)
        assert self.link is not None
        for service, parameter in pushed:
            cancel = bus.pack_body([[parameter, CANCEL_KEY, account_no, parameter]])
            self.link.send([bus.PLACE, service, bus.pack_keys([account_no]), cancel])
        return False

    async def _held(self, account_no: int) -> bool | None:
        """Does a game worker hold a session of the account? None: no answer in time."""
        return await self._ask(account_no, lambda p: [p, IN_GAME, account_no, p])

    async def finish(self, timeout: float) -> None:
        """Wait (at most `timeout`) for the logins in flight to be answered and sent."""
        if self._tasks:
            log.info("draining: %d logins in flight", len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=timeout)
        assert self.outbox is not None
        self.outbox.flush()

    def collect(self) -> dict[str, Any]:
        """This worker's fields of its 1-second sample (see cluster.stats)."""
        low, avg, high = self.latency.take()
        rates = self._rates.update({"login_success_tps": self.counters["login_ok"]})
        return {
            "sessions": len(self._tasks),
            "packet_pool": len(self._tasks),
            "login_total": self.counters["login_ok"],
            "login_latency_min_ms": low,
            "login_latency_avg_ms": avg,
            "login_latency_max_ms": high,
            "game_workers": len(self.game_workers),
            "chat_workers": len(self.chat_workers),
            **rates,
        }


class AuthRole(Role):
    """An auth worker process (see :mod:`cluster.role` for the order its hooks run in). Ready
    once registered and the first ROSTER (which game workers exist) has arrived."""

    name = "auth"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db: Database | None = None
        self.worker: AuthWorker | None = None

    async def open(self) -> None:
        config = self.config
        if config.auth.dummy_accounts_below:
            log.warning(
                "auth.dummy_accounts_below = %d: accounts below it log in with any key "
                "(the original's dummies; load tests only)", config.auth.dummy_accounts_below,
            )  # fmt: skip
        db = self.db = await open_database(config)
        worker = self.worker = AuthWorker(config, db)
        self.link = bus_link(
            config, "auth", worker.dispatcher(), load=lambda: worker.inflight,
            info={"link_mode": config.cluster.link_mode}, counters=worker.counters,
        )  # fmt: skip
        worker.attach(self.link)
        assert worker.status_rows is not None
        worker.status_rows.start()
        self.reporter = Reporter(
            self.link, ProcessSampler(self.link.identity.decode(), "auth", worker.collect),
            LOG_KEYS, log,
        )  # fmt: skip

    def ready(self) -> Awaitable[Any]:
        assert self.worker is not None
        return asyncio.gather(self.link.registered.wait(), self.worker.roster_known.wait())

    def ready_fields(self) -> dict[str, object]:
        return {"id": self.link.identity.decode(), "link_mode": self.config.cluster.link_mode}

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve, reconciling status rows of dead owners (see workers.reconcile) meanwhile."""
        worker, db = self.worker, self.db
        assert worker is not None and db is not None
        reconciler = reconciler_for(
            self.config, db, lambda: set(worker.game_workers), worker.counters
        )
        await reconciler.start()
        await stop.wait()
        await reconciler.stop()

    async def drain(self) -> None:
        """No new logins for us; answer the ones in flight, then leave."""
        assert self.worker is not None
        self.link.send([bus.DRAIN])
        await self.worker.finish(DRAIN_TIMEOUT)

    async def close(self) -> None:
        await super().close()
        worker = self.worker
        if worker is not None and worker.status_rows is not None:
            await worker.status_rows.close(1.0)
        if self.db is not None:
            await self.db.close()
        if worker is not None:
            log.info("stopped; counters: %s", dict(worker.counters))


def serve(config: Config) -> int:
    """Run one auth worker in the foreground until SIGINT/SIGTERM; returns the exit code."""
    return role.serve(AuthRole(config))
