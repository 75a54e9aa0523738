"""Systemlink: the session keys auth workers pushed to this game worker, waiting for clients.

A key is stored per AccountNo by SS_REQ_NEW_CLIENT_LOGIN with the push's Parameter and an expiry
(``[game] pending_key_ttl``). A newer push for the same account replaces the older one; a game
login with that key consumes it (single use; a wrong key does not); a cancel from the auth worker
removes it only if it is still that push's (same Parameter); expired keys are swept.
"""

from __future__ import annotations

import hmac
import time
from typing import NamedTuple


class PendingKey(NamedTuple):
    session_key: bytes
    parameter: int
    expires_at: float


class PendingKeys:
    """AccountNo -> the key pushed for it."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._keys: dict[int, PendingKey] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, account_no: object) -> bool:
        return account_no in self._keys

    def push(self, account_no: int, session_key: bytes, parameter: int) -> None:
        self._keys[account_no] = PendingKey(session_key, parameter, time.monotonic() + self.ttl)

    def accounts(self) -> list[int]:
        """The accounts that have a key waiting."""
        return list(self._keys)

    def consume(self, account_no: int, session_key: bytes) -> bool:
        """True if a live key for the account equals `session_key` (all 64 bytes); that key is
        then used up. A wrong key leaves it in place: AccountNos are not secret, so a stranger's
        guess must not lock the real player out (guessing 64 random bytes is hopeless)."""
        entry = self._keys.get(account_no)
        if entry is None or entry.expires_at < time.monotonic():
            return False
        if not hmac.compare_digest(entry.session_key, session_key):
            return False
        del self._keys[account_no]
        return True

    def cancel(self, account_no: int, parameter: int) -> bool:
        """Remove the account's key if it is still the one pushed with `parameter`."""
        entry = self._keys.get(account_no)
        if entry is not None and entry.parameter == parameter:
            del self._keys[account_no]
            return True
        return False

    def expire(self, now: float | None = None) -> list[int]:
        """Remove expired keys; returns their AccountNos."""
        now = time.monotonic() if now is None else now
        gone = [account for account, entry in self._keys.items() if entry.expires_at < now]
        for account in gone:
            del self._keys[account]
        return gone
