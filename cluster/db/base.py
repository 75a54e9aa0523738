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
import datetime
from dataclasses import dataclass
from typing import NamedTuple


class DatabaseError(Exception):
    """Base of the DB layer's errors."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, or the connection broke during the call."""


SCHEMA_VERSION = 2  # accountdb.schema_version of the schema in sql/ (absent: an earlier one)


class SchemaReport(NamedTuple):
    """What :meth:`Database.init_schema` did: the version now recorded, whether the schema was
    created from nothing, and the changes made to an existing one, in words (empty: none)."""

    version: int
    created: bool
    changes: list[str]

    def summary(self) -> str:
        """``version 2, created`` / ``version 2, nothing to change`` /
        ``version 2; upgraded: account.userpass widened, ...``."""
        if self.created:
            return f"version {self.version}, created"
        if not self.changes:
            return f"version {self.version}, nothing to change"
        return f"version {self.version}; upgraded: {', '.join(self.changes)}"


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
    key_expires: int | None = None  # sessionkey.expires: Unix seconds; None: never expires
    #: status.owner: the worker whose session set the row; None (with status != 0): an
    #: operator's lock (``cluster accounts lock``), which only ``cluster accounts unlock`` clears
    status_owner: str | None = None


class NewAccount(NamedTuple):
    """An account to create (see :meth:`Database.create_accounts`).

    ``password_hash`` is written into ``userpass`` as given (an argon2id encoded hash such as
    ``$argon2id$v=19$m=...``), with ``salt`` (None for argon2, whose encoding holds its salt).
    When ``password_hash`` is None, ``userpass`` gets what ``cluster accounts create`` has always
    written: sha256 of a fresh random salt and a random password that is not kept (see
    :func:`cluster.db.accounts.unusable_password`), the salt in ``salt``; nobody can log in with
    it on the web until a password is set."""

    account_no: int
    user_id: str
    nickname: str
    session_key: bytes  # 64 bytes
    password_hash: str | None = None
    salt: str | None = None


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


#: The status_server tables :meth:`Database.status_rows` reads, with their figure columns.
STATUS_TABLES: dict[str, tuple[str, ...]] = {
    "hardware": ("CPUUsage", "AvailableMBytes", "NonPagedBytes"),
    "battle": (
        "CPUUsage",
        "CommitMemory",
        "PacketPool",
        "AuthFPS",
        "GameFPS",
        "SessionAll",
        "SessionAuth",
        "SessionGame",
    ),
    "chat": ("CPUUsage", "CommitMemory", "PacketPool", "SessionAll", "SessionLogin"),
    "login": ("CPUUsage", "CommitMemory", "PacketPool", "SessionAll", "LoginSuccessTPS"),
}
#: The most rows one :meth:`Database.status_rows` call returns.
MAX_STATUS_ROWS = 50_000


@dataclass(frozen=True)
class StatusRow:
    """One status_server row as read back: `date` is the DB's local time (naive), `values`
    the table's figure columns (:data:`STATUS_TABLES`) by name."""

    date: datetime.datetime
    writer: str | None
    values: dict[str, int]


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
    async def init_schema(self) -> SchemaReport:
        """Create both databases' tables and the view if missing, or bring an earlier schema up
        to :data:`SCHEMA_VERSION` (idempotent; see :mod:`cluster.db.upgrade`). Raises
        DatabaseError (one line) for a schema it cannot upgrade safely or that is newer than
        this code."""

    # -- accountdb --------------------------------------------------------------------------------

    @abc.abstractmethod
    async def account(self, account_no: int) -> AccountRow | None:
        """The v_account row, or None when no ``account`` row exists."""

    @abc.abstractmethod
    async def accounts(self, account_nos: list[int]) -> dict[int, AccountRow]:
        """The v_account rows of these accounts, by AccountNo (missing accounts are absent):
        one round trip for many logins."""

    @abc.abstractmethod
    async def enter_game_many(
        self, account_nos: list[int], owner: str
    ) -> tuple[set[int], set[int]]:
        """:meth:`enter_game` for many accounts in one statement; returns the accounts now in
        game with `owner`, and those without a status row. The others are locked by an
        operator (status != 0, no owner), which a game login never overrides."""

    @abc.abstractmethod
    async def set_status(self, account_no: int, status: int) -> bool:
        """An operator's write: the account's status row to `status` with no owner (1: locked,
        0: unlocked); False when it has no status row."""

    @abc.abstractmethod
    async def session_key(self, account_no: int) -> bytes | None:
        """The stored 64-byte session key, or None (no row, or NULL)."""

    @abc.abstractmethod
    async def session_key_and_expiry(self, account_no: int) -> tuple[bytes, int | None] | None:
        """(key, expires) of the account's sessionkey row: expires is the Unix time in seconds
        after which the key is no longer valid, None for a key that never expires. None when
        there is no row or its key is NULL."""

    @abc.abstractmethod
    async def login_row(self, user_id: str) -> tuple[int, str | None] | None:
        """(AccountNo, userpass) of the account whose ``userid`` is exactly `user_id` (case and
        trailing spaces count, on both backends), None when there is none. userpass is None when
        no password is set. ``userid`` is not unique in the schema: the lowest AccountNo wins."""

    @abc.abstractmethod
    async def set_password(self, account_no: int, password_hash: str) -> bool:
        """Store `password_hash` (an encoded argon2id hash) as the account's userpass (its salt
        column is cleared: the encoding holds the salt). False when there is no such account."""

    @abc.abstractmethod
    async def issue_key(self, account_no: int, session_key: bytes, expires: int | None) -> None:
        """Insert or replace the account's sessionkey row: `session_key` (64 raw bytes, else
        ValueError) valid until `expires` (Unix seconds; None: never expires). Nothing is written
        for an AccountNo that has no account row."""

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

    @abc.abstractmethod
    async def status_rows(
        self, table: str, since: datetime.datetime, until: datetime.datetime, limit: int
    ) -> list[StatusRow]:
        """The rows of ``status_server.<table>`` dated from `since` to `until` inclusive
        (naive datetimes in the DB's local time, as the rows are written), oldest first; when
        more than `limit` match, the newest `limit` of them. ValueError for a table not in
        :data:`STATUS_TABLES` or a limit outside 1..:data:`MAX_STATUS_ROWS`."""
