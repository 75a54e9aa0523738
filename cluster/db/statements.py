"""The domain SQL, written once and rendered for each backend.

Both backends accept the same text: backtick-quoted identifiers (SQLite takes them for MySQL's
sake), database-qualified names, ``?`` parameters (turned into ``%s`` for MySQL), a ``{now}``
expression for the monitoring rows' date (the DB's local time) and a ``{key}`` expression for a
session key parameter. MySQL receives keys as hex text under ``UNHEX()``: aiomysql 0.3.2 cannot
send a bytes parameter with PyMySQL >= 1.2.3 (aio-libs/aiomysql#1080), and hex text works with
every version. Rows coming back are turned into the interface's types here too, so both backends
answer alike.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cluster.db.accounts import unusable_password
from cluster.db.base import (
    MAX_STATUS_ROWS,
    STATUS_TABLES,
    AccountRow,
    BattleSample,
    ChatSample,
    HardwareSample,
    LoginSample,
    NewAccount,
    StatusRow,
)

# Statement sizes: at most 999 parameters (the lowest SQLite limit, before 3.32) and well below
# MySQL's max_allowed_packet.
IN_LIST_CHUNK = 300  # AccountNos per "IN (...)" list (the duplicate check uses three lists)
MYSQL_ROWS_CHUNK = 2000  # rows per multi-row INSERT on MySQL (about 0.5 MB of SQL)
SQLITE_ROWS_CHUNK = 150  # rows per multi-row INSERT on SQLite (750 parameters)

_ACCOUNT = (
    "SELECT `accountno`, `userid`, `usernick`, `sessionkey`, `status`, `key_row`, `status_row`,"
    " `key_expires`, `status_owner`"
    " FROM `{a}`.`v_account` WHERE `accountno` = ?"
)
_ACCOUNTS = (
    "SELECT `accountno`, `userid`, `usernick`, `sessionkey`, `status`, `key_row`, `status_row`,"
    " `key_expires`, `status_owner`"
    " FROM `{a}`.`v_account` WHERE `accountno` IN ({marks})"
)
# An operator's lock (status != 0 without an owner) is never taken over by a game login.
_ENTER_GAME_MANY = (
    "UPDATE `{a}`.`status` SET `status` = 1, `owner` = ? WHERE `accountno` IN ({marks})"
    " AND (`status` = 0 OR (`owner` IS NOT NULL AND `owner` <> ''))"
)
_STATUS_ROWS = (
    "SELECT `accountno`, `status`, `owner` FROM `{a}`.`status` WHERE `accountno` IN ({marks})"
)
_SET_STATUS = "UPDATE `{a}`.`status` SET `status` = ?, `owner` = NULL WHERE `accountno` = ?"
_SESSION_KEY = "SELECT `sessionkey` FROM `{a}`.`sessionkey` WHERE `accountno` = ?"
_SESSION_KEY_AND_EXPIRY = (
    "SELECT `sessionkey`, `expires` FROM `{a}`.`sessionkey` WHERE `accountno` = ?"
)
# {exact_userid}: MySQL compares CHAR columns ignoring case and trailing spaces; the second
# condition makes the match exact there, while the first one still uses userid_INDEX.
_LOGIN_ROW = (
    "SELECT `accountno`, `userpass` FROM `{a}`.`account` WHERE `userid` = ?{exact_userid}"
    " ORDER BY `accountno` LIMIT 1"
)
_SET_PASSWORD = "UPDATE `{a}`.`account` SET `userpass` = ?, `salt` = NULL WHERE `accountno` = ?"
# REPLACE (delete + insert) exists on both backends; the SELECT writes nothing without an account.
_ISSUE_KEY = (
    "REPLACE INTO `{a}`.`sessionkey` (`accountno`, `sessionkey`, `expires`)"
    " SELECT `accountno`, {key}, ? FROM `{a}`.`account` WHERE `accountno` = ?"
)
_ENTER_GAME = (
    "UPDATE `{a}`.`status` SET `status` = 1, `owner` = ? WHERE `accountno` = ?"
    " AND (`status` = 0 OR (`owner` IS NOT NULL AND `owner` <> ''))"
)
_LEAVE_GAME = (
    "UPDATE `{a}`.`status` SET `status` = 0, `owner` = NULL"
    " WHERE `owner` = ? AND `accountno` IN ({marks})"
)
_RELEASE_OWNER = "UPDATE `{a}`.`status` SET `status` = 0, `owner` = NULL WHERE `owner` = ?"
_OWNERS_IN_GAME = (
    "SELECT DISTINCT `owner` FROM `{a}`.`status`"
    " WHERE `status` <> 0 AND `owner` IS NOT NULL AND `owner` <> ''"
)
_MAX_ACCOUNT_NO = "SELECT COALESCE(MAX(`accountno`), 0) FROM `{a}`.`account`"
# Multi-row INSERTs: {rows} is the VALUES list, one group per row.
_INSERT_ACCOUNTS = (
    "INSERT INTO `{a}`.`account` (`accountno`, `userid`, `userpass`, `usernick`, `salt`)"
    " VALUES {rows}"
)
_ACCOUNT_ROW = "(?, ?, ?, ?, ?)"
_INSERT_SESSION_KEYS = "INSERT INTO `{a}`.`sessionkey` (`accountno`, `sessionkey`) VALUES {rows}"
_SESSION_KEY_ROW = "(?, {key})"
_INSERT_STATUSES = "INSERT INTO `{a}`.`status` (`accountno`, `status`) VALUES {rows}"
_STATUS_ROW = "(?, 0)"
_EXISTING = " UNION ".join(
    f"SELECT `accountno` FROM `{{a}}`.`{table}` WHERE `accountno` IN ({{marks}})"
    for table in ("account", "sessionkey", "status")
)
_WHITE_IPS = "SELECT `ip` FROM `{a}`.`whiteip`"
_INSERT_HARDWARE = (
    "INSERT INTO `{s}`.`hardware` (`date`, `CPUUsage`, `AvailableMBytes`, `NonPagedBytes`,"
    " `writer`) VALUES ({now}, ?, ?, ?, ?)"
)
_INSERT_BATTLE = (
    "INSERT INTO `{s}`.`battle` (`date`, `CPUUsage`, `CommitMemory`, `PacketPool`, `AuthFPS`,"
    " `GameFPS`, `SessionAll`, `SessionAuth`, `SessionGame`, `writer`)"
    " VALUES ({now}, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_CHAT = (
    "INSERT INTO `{s}`.`chat` (`date`, `CPUUsage`, `CommitMemory`, `PacketPool`, `SessionAll`,"
    " `SessionLogin`, `writer`) VALUES ({now}, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LOGIN = (
    "INSERT INTO `{s}`.`login` (`date`, `CPUUsage`, `CommitMemory`, `PacketPool`, `SessionAll`,"
    " `LoginSuccessTPS`, `writer`) VALUES ({now}, ?, ?, ?, ?, ?, ?)"
)

# {table} and {columns} come from STATUS_TABLES only. Dates compare as 'YYYY-MM-DD HH:MM:SS' text
# on SQLite (the format its rows are written in) and as DATETIME on MySQL.
_STATUS_ROWS_SELECT = (
    "SELECT `date`, `writer`, {columns} FROM `{s}`.`{table}` WHERE `date` >= ? AND `date` <= ?"
    " ORDER BY `date` DESC, `no` DESC LIMIT ?"
)


class Statements:
    """The domain statements for one backend: database names, parameter mark, clock function and
    how a session key is passed (`key` wraps the parameter mark, `key_param` converts the bytes)."""

    def __init__(
        self,
        *,
        accountdb: str,
        status_server: str,
        param: str,
        now: str,
        key: str,
        key_param: Callable[[bytes], Any],
        exact_userid: str,
    ) -> None:
        self._names = {
            "a": accountdb,
            "s": status_server,
            "now": now,
            "key": key,
            "exact_userid": exact_userid,
        }
        self._param = param
        self.key_param = key_param
        self.account = self._render(_ACCOUNT)
        self.session_key = self._render(_SESSION_KEY)
        self.session_key_and_expiry = self._render(_SESSION_KEY_AND_EXPIRY)
        self.login_row = self._render(_LOGIN_ROW)
        self._login_row_marks = self.login_row.count(param)
        self.set_password = self._render(_SET_PASSWORD)
        self.issue_key = self._render(_ISSUE_KEY)
        self.enter_game = self._render(_ENTER_GAME)
        self.set_status = self._render(_SET_STATUS)
        self.release_owner = self._render(_RELEASE_OWNER)
        self.owners_in_game = self._render(_OWNERS_IN_GAME)
        self.max_account_no = self._render(_MAX_ACCOUNT_NO)
        self.white_ips = self._render(_WHITE_IPS)
        self.insert_hardware = self._render(_INSERT_HARDWARE)
        self.insert_battle = self._render(_INSERT_BATTLE)
        self.insert_chat = self._render(_INSERT_CHAT)
        self.insert_login = self._render(_INSERT_LOGIN)
        self.monitoring_rows = {
            table: self._render(
                _STATUS_ROWS_SELECT.replace("{table}", table).replace(
                    "{columns}", ", ".join(f"`{c}`" for c in columns)
                )
            )
            for table, columns in STATUS_TABLES.items()
        }

    def _render(self, template: str, marks: int = 0, rows: str = "") -> str:
        sql = template.format(marks=", ".join("?" * marks), rows=rows, **self._names)
        return sql.replace("?", self._param)

    def login_row_params(self, user_id: str) -> tuple[str, ...]:
        """The parameters of :attr:`login_row`: `user_id`, once per mark."""
        return (user_id,) * self._login_row_marks

    def issue_key_params(
        self, account_no: int, session_key: bytes, expires: int | None
    ) -> tuple[Any, ...]:
        """The parameters of :attr:`issue_key` (ValueError for a key that is not 64 bytes)."""
        if len(session_key) != 64:
            raise ValueError(
                f"AccountNo {account_no}: session key is {len(session_key)} bytes, not 64"
            )
        return (self.key_param(session_key), expires, account_no)

    def accounts(self, count: int) -> str:
        """v_account rows of `count` AccountNos; parameters: the AccountNos."""
        return self._render(_ACCOUNTS, count)

    def enter_game_many(self, count: int) -> str:
        """UPDATE for `count` AccountNos; parameters: owner, then the AccountNos."""
        return self._render(_ENTER_GAME_MANY, count)

    def status_rows(self, count: int) -> str:
        """SELECT AccountNo, status, owner of `count` status rows; parameters: the AccountNos."""
        return self._render(_STATUS_ROWS, count)

    def leave_game(self, count: int) -> str:
        """UPDATE for `count` AccountNos; parameters: owner, then the AccountNos."""
        return self._render(_LEAVE_GAME, count)

    def existing(self, count: int) -> str:
        """Which of `count` AccountNos have an account, sessionkey or status row; parameters:
        the AccountNos three times."""
        return self._render(_EXISTING, count)

    def account_inserts(
        self, accounts: Sequence[NewAccount], rows_per_insert: int
    ) -> list[tuple[str, list[Any]]]:
        """(sql, parameters) for multi-row INSERTs of the account, sessionkey and status rows of
        `accounts`, at most `rows_per_insert` rows each; run them in one transaction."""
        key_row = _SESSION_KEY_ROW.format(key=self._names["key"])
        tables = (
            (_INSERT_ACCOUNTS, _ACCOUNT_ROW, _account_values),
            (_INSERT_SESSION_KEYS, key_row, self._session_key_values),
            (_INSERT_STATUSES, _STATUS_ROW, _status_values),
        )
        inserts = []
        for template, row, values in tables:
            for start in range(0, len(accounts), rows_per_insert):
                chunk = accounts[start : start + rows_per_insert]
                sql = self._render(template, rows=", ".join([row] * len(chunk)))
                inserts.append((sql, [v for account in chunk for v in values(account)]))
        return inserts

    def _session_key_values(self, account: NewAccount) -> tuple[Any, ...]:
        return (account.account_no, self.key_param(account.session_key))


def _account_values(a: NewAccount) -> tuple[Any, ...]:
    userpass: str
    salt: str | None
    if a.password_hash is None:
        userpass, salt = unusable_password()
    else:
        userpass, salt = a.password_hash, a.salt
    return (a.account_no, a.user_id, userpass, a.nickname, salt)


def _status_values(a: NewAccount) -> tuple[Any, ...]:
    return (a.account_no,)


def mysql_statements(accountdb: str, status_server: str) -> Statements:
    """Statements for MySQL/MariaDB (``%s`` parameters, ``NOW()``, keys as hex under UNHEX)."""
    return Statements(
        accountdb=accountdb,
        status_server=status_server,
        param="%s",
        now="NOW()",
        key="UNHEX(?)",
        key_param=bytes.hex,
        exact_userid=" AND CAST(`userid` AS BINARY) = CAST(? AS BINARY)",
    )


def sqlite_statements() -> Statements:
    """Statements for SQLite (``?`` parameters, local time as ``YYYY-MM-DD HH:MM:SS``, keys as
    BLOBs)."""
    return Statements(
        accountdb="accountdb",
        status_server="status_server",
        param="?",
        now="datetime('now', 'localtime')",
        key="?",
        key_param=bytes,
        exact_userid="",
    )


def chunks(values: Sequence[int], size: int = IN_LIST_CHUNK) -> Iterator[Sequence[int]]:
    """`values` in slices of at most `size`, for IN lists."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def to_key(value: Any) -> bytes | None:
    """A stored session key as bytes (None stays None; text written by other tools is encoded)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def to_account_row(row: Sequence[Any]) -> AccountRow:
    """One v_account row (the columns of the ``account`` statement) as an AccountRow."""
    account_no, user_id, nickname, key, status, key_row, status_row, expires, owner = row
    return AccountRow(
        account_no=int(account_no),
        user_id=user_id,
        nickname=nickname,
        session_key=to_key(key),
        status=None if status is None else int(status),
        has_key_row=key_row is not None,
        has_status_row=status_row is not None,
        key_expires=None if expires is None else int(expires),
        status_owner=owner or None,
    )


def to_key_and_expiry(row: Sequence[Any] | None) -> tuple[bytes, int | None] | None:
    """A (sessionkey, expires) row as the interface's pair (None: no row or a NULL key)."""
    if row is None:
        return None
    key = to_key(row[0])
    if key is None:
        return None
    return key, None if row[1] is None else int(row[1])


def hardware_params(sample: HardwareSample) -> tuple[Any, ...]:
    # NonPagedBytes holds the sample's megabytes, as the sample reports them.
    return (sample.cpu_usage, sample.available_mbytes, sample.nonpaged_mbytes, sample.writer)


def battle_params(sample: BattleSample) -> tuple[Any, ...]:
    return (
        sample.cpu_usage,
        sample.commit_memory,
        sample.packet_pool,
        sample.auth_fps,
        sample.game_fps,
        sample.session_all,
        sample.session_auth,
        sample.session_game,
        sample.writer,
    )


def chat_params(sample: ChatSample) -> tuple[Any, ...]:
    return (
        sample.cpu_usage,
        sample.commit_memory,
        sample.packet_pool,
        sample.session_all,
        sample.session_login,
        sample.writer,
    )


def login_params(sample: LoginSample) -> tuple[Any, ...]:
    return (
        sample.cpu_usage,
        sample.commit_memory,
        sample.packet_pool,
        sample.session_all,
        sample.login_success_tps,
        sample.writer,
    )


def status_rows_params(
    table: str, since: datetime.datetime, until: datetime.datetime, limit: int
) -> tuple[Any, ...]:
    """The parameters of a ``status_rows`` statement; ValueError for a table or limit the
    interface refuses."""
    if table not in STATUS_TABLES:
        known = ", ".join(STATUS_TABLES)
        raise ValueError(f"unknown status_server table {table!r} (known: {known})")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_STATUS_ROWS:
        raise ValueError(f"limit must be 1..{MAX_STATUS_ROWS}, not {limit!r}")
    return (_db_time(since), _db_time(until), limit)


def _db_time(when: datetime.datetime) -> str:
    return when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S")


def to_status_rows(table: str, rows: Sequence[Sequence[Any]]) -> list[StatusRow]:
    """The rows of a ``status_rows`` statement (newest first) as StatusRows, oldest first."""
    columns = STATUS_TABLES[table]
    out = []
    for date, writer, *values in reversed(rows):
        if isinstance(date, str):  # SQLite keeps the text
            date = datetime.datetime.fromisoformat(date)
        out.append(StatusRow(
            date=date, writer=None if writer is None else str(writer),
            values={c: int(v) for c, v in zip(columns, values, strict=True)},
        ))  # fmt: skip
    return out


def check_new_accounts(accounts: Sequence[NewAccount]) -> None:
    """Raise ValueError for a batch that could not be stored faithfully (a programming error)."""
    seen: set[int] = set()
    for account in accounts:
        if len(account.session_key) != 64:
            raise ValueError(
                f"AccountNo {account.account_no}: session key is {len(account.session_key)} bytes,"
                " not 64"
            )
        if account.account_no in seen:
            raise ValueError(f"AccountNo {account.account_no} appears twice in one batch")
        seen.add(account.account_no)


def duplicates_message(existing: Iterable[int]) -> str:
    """The DatabaseError text for AccountNos that already exist."""
    nos = sorted(set(existing))
    shown = ", ".join(map(str, nos[:10])) + (
        f" (and {len(nos) - 10} more)" if len(nos) > 10 else ""
    )
    return f"AccountNo {shown} already exist{'s' if len(nos) == 1 else ''}; nothing was inserted"
