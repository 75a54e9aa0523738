"""The game login's key check: the pluggable step between REQ_LOGIN and GAME mode.

A :class:`KeyCheck` is called with the AccountNo and the 64-byte session key from
CS_GAME_REQ_LOGIN and returns True (admit), False (status FAIL), or an awaitable of either, for
checks that need I/O. The game worker never blocks on it: an awaitable answer is collected in a
later auth frame. One check per link mode:

- systemlink: :class:`PendingKeyCheck`, the key an auth worker pushed here (no DB read);
- non-systemlink: :class:`StoredKeyCheck`, ``accountdb.sessionkey`` and its expiry (one DB
  read);
- ``[game] verify_key = false``: :class:`AcceptAnyKey`, the original standalone echo server.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from cluster.db import Database, DatabaseError
from workers.pending_keys import PendingKeys

log = logging.getLogger("workers.keycheck")


class KeyCheck(Protocol):
    """Decides whether a session key admits an account to the game."""

    name: str

    def __call__(self, account_no: int, session_key: bytes) -> bool | Awaitable[bool]: ...


class AcceptAnyKey:
    """Every login is admitted. For raw echo load tests only."""

    name = "accept-any (verify_key = false)"

    def __call__(self, account_no: int, session_key: bytes) -> bool:
        return True


class PendingKeyCheck:
    """Systemlink: the key must equal the one pushed for the account (single use, with a TTL)."""

    name = "pushed-key (systemlink)"

    def __init__(self, pending: PendingKeys) -> None:
        self.pending = pending

    def __call__(self, account_no: int, session_key: bytes) -> bool:
        return self.pending.consume(account_no, session_key)


class StoredKeyCheck:
    """Non-systemlink: the key must equal ``accountdb.sessionkey`` of the account (all 64 bytes)
    and not be past its expiry (``sessionkey.expires``, Unix seconds; NULL never expires). An
    unreachable DB fails the login."""

    name = "stored-key (non-systemlink)"

    def __init__(
        self, db: Database, clock: Callable[[], float] = time.time, dummy_below: int = 0
    ) -> None:
        self.db = db
        self.clock = clock
        self.dummy_below = dummy_below  # ``[auth] dummy_accounts_below``: any key below it

    async def _check(self, account_no: int, session_key: bytes) -> bool:
        if account_no < self.dummy_below:
            return True
        try:
            stored = await self.db.session_key_and_expiry(account_no)
        except DatabaseError as exc:
            log.warning("cannot check the key of account %d: %s", account_no, exc)
            return False
        if stored is None:
            return False
        key, expires = stored
        if expires is not None and self.clock() > expires:
            return False
        return hmac.compare_digest(key, session_key)

    def __call__(self, account_no: int, session_key: bytes) -> Awaitable[bool]:
        return self._check(account_no, session_key)
