"""The game login's key check: the pluggable step between REQ_LOGIN and GAME mode.

A :class:`KeyCheck` is called with the AccountNo and the 64-byte session key from
CS_GAME_REQ_LOGIN and returns True (admit), False (status FAIL), or an awaitable of either, for
checks that need I/O (the shared DB in non-systemlink mode). The game worker never blocks on it:
an awaitable answer is collected in a later auth frame.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol


class KeyCheck(Protocol):
    """Decides whether a session key admits an account to the game."""

    name: str

    def __call__(self, account_no: int, session_key: bytes) -> bool | Awaitable[bool]: ...


class AcceptAnyKey:
    """``[game] verify_key = false``: every login is admitted, as the original standalone echo
    server did. For raw echo load tests only."""

    name = "accept-any (verify_key = false)"

    def __call__(self, account_no: int, session_key: bytes) -> bool:
        return True


class NoKeySource:
    """``[game] verify_key = true`` with no key source wired in: every key fails (status 0)."""

    name = "no key source (every login fails)"

    def __call__(self, account_no: int, session_key: bytes) -> bool:
        return False
