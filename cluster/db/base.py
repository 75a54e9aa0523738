"""The one async interface to the cluster's databases, whatever the backend.

Two logical databases, always addressed by qualified names as in the original schema:
``accountdb`` (account, sessionkey, status, whiteip, view v_account) and ``status_server``
(hardware, battle, chat, login). Backends: MySQL/MariaDB through an aiomysql pool
(``mysql://user:pass@host:port``) and SQLite (``sqlite:///DIR``: DIR/accountdb.db and
DIR/status_server.db attached under those names), which runs on its own thread so the event loop
never blocks.

Every method raises :class:`DatabaseUnavailable` (and never anything lower-level) when the
database cannot be reached or the connection was lost mid-call; the caller answers its client
with a status code. The next call tries again with a fresh connection: a DB that comes back is
used again without a restart.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import NamedTuple


class DatabaseError(Exception):
    """Base of the DB layer's errors."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, or the connection broke during the call."""


class AccountRow(NamedTuple):
    """One row of ``accountdb.v_account`` (account LEFT JOIN sessionkey LEFT JOIN status).

    ``has_key_row`` / ``has_status_row`` tell a missing joined row from a NULL column."""

    account_no: int
    user_id: str | None
    nickname: str | None
    session_key: bytes | None  # 64 bytes when set
    status: int | None
    has_key_row: bool
    has_status_row: bool


class NewAccount(NamedTuple):
    """An account to create (see :meth:`Database.create_accounts`)."""

    account_no: int
    user_id: str
    nickname: str
    password_hash: str  # 64 hex chars: sha256(salt + password)
    salt: str  # 32 hex chars
    session_key: bytes  # 64 bytes


@dataclass(frozen=True)
class HardwareSample:
    cpu_usage: int
    available_mbytes: int
    nonpaged_mbytes: int
    writer: str


@dataclass(frozen=True)
class BattleSample:
    cpu_usage: int
    commit_memory: int
    packet_pool: int
    auth_fps: int
    game_fps: int
    session_all: int
    session_auth: int
    session_game: int
    writer: str


@dataclass(frozen=True)
class ChatSample:
    """One ``status_server.chat`` row: a chat worker's figures (SessionAll: every session it
    holds; SessionLogin: the logged-in ones, the original's PlayerCount)."""

    cpu_usage: int
    commit_memory: int
    packet_pool: int
    session_all: int
    session_login: int
    writer: str


@dataclass(frozen=True)
class LoginSample:
    cpu_usage: int
    commit_memory: int
    packet_pool: int
    session_all: int
    login_success_tps: int
    writer: str


class Database(abc.ABC):
    """Domain operations on accountdb and status_server. Open with :func:`cluster.db.open_database`
    (which calls :meth:`start`); always :meth:`close`. ``url`` is the configured URL with any
    password masked, safe to log. A Database belongs to the event loop that started it."""

    url: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Prepare the backend (pool, thread). Does not fail when the DB is down: calls do."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def init_schema(self) -> None:
        """Create both databases' tables and the view if missing (idempotent)."""

    # -- accountdb --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def account(self, account_no: int) -> AccountRow | None:
        """The v_account row, or None when no ``account`` row exists."""

    @abc.abstractmethod
    async def accounts(self, account_nos: list[int]) -> dict[int, AccountRow]:
        """The v_account rows of these accounts, by AccountNo (missing accounts are absent):
        one round trip for many logins."""

    @abc.abstractmethod
    async def enter_game_many(self, account_nos: list[int], owner: str) -> None:
        """:meth:`enter_game` for many accounts in one statement (rows that are missing are
        skipped)."""

    @abc.abstractmethod
    async def session_key(self, account_no: int) -> bytes | None:
        """The stored 64-byte session key, or None (no row, or NULL)."""

    @abc.abstractmethod
    async def enter_game(self, account_no: int, owner: str) -> bool:
        """Set status 1 and owner for the account; False when it has no status row."""

    @abc.abstractmethod
    async def leave_game(self, account_nos: list[int], owner: str) -> None:
        """Set status 0 (owner NULL) for these accounts where `owner` still holds them."""

    @abc.abstractmethod
    async def release_owner(self, owner: str) -> int:
        """Set status 0 for every account held by `owner` (a process that died); returns count."""

    @abc.abstractmethod
    async def owners_in_game(self) -> list[str]:
        """The distinct owners (non-NULL, non-empty) of the status rows whose status is not 0."""

    @abc.abstractmethod
    async def max_account_no(self) -> int:
        """The highest AccountNo in use (0 when none)."""

    @abc.abstractmethod
    async def create_accounts(self, accounts: list[NewAccount]) -> None:
        """Insert account, sessionkey and status (0) rows in one transaction; an AccountNo that
        already exists raises DatabaseError naming it, and nothing is inserted. A batch with a
        key that is not 64 bytes or a repeated AccountNo raises ValueError (a caller's bug)."""

    @abc.abstractmethod
    async def white_ips(self) -> set[str]:
        """Every address in accountdb.whiteip."""

    # -- status_server ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def insert_hardware(self, sample: HardwareSample) -> None: ...

    @abc.abstractmethod
    async def insert_battle(self, sample: BattleSample) -> None: ...

    @abc.abstractmethod
    async def insert_chat(self, sample: ChatSample) -> None: ...

    @abc.abstractmethod
    async def insert_login(self, sample: LoginSample) -> None: ...
