"""The accounts a load runs on: the lines of the file ``cluster accounts create`` writes.

A line is ``AccountNo<TAB>UserID<TAB>Nick<TAB>SessionKey<TAB>Password``. Files of earlier
versions have no Password column, and ``--no-passwords`` leaves it empty: both still serve the
login and direct paths, which use the listed key; the web path (``--path web``) logs in with the
UserID and the password, so it needs them (:func:`check_passwords`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cluster.db.accounts import KEY_LENGTH


class Account(NamedTuple):
    """One line of the accounts file ("" when it lists no password)."""

    account_no: int
    user_id: str
    nickname: str
    session_key: bytes
    password: str = ""


def read_accounts(path: str | os.PathLike[str]) -> list[Account]:
    """Every account of an accounts file, in file order (blank lines skipped). ValueError names
    the file and line of a line without four or five tab-separated fields, an integer AccountNo
    and a 64-character ASCII key (never the password); OSError when the file cannot be read."""
    accounts = []
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{path}:{number}"
        if len(fields) not in (4, 5):
            raise ValueError(f"{where}: expected 4 or 5 tab-separated fields, found {len(fields)}")
        no_text, user_id, nickname, key_text = fields[:4]
        try:
            account_no = int(no_text)
        except ValueError:
            raise ValueError(f"{where}: AccountNo {no_text!r} is not an integer") from None
        if len(key_text) != KEY_LENGTH or not key_text.isascii():
            raise ValueError(f"{where}: session key must be {KEY_LENGTH} ASCII characters")
        password = fields[4] if len(fields) == 5 else ""
        accounts.append(Account(account_no, user_id, nickname, key_text.encode("ascii"), password))
    return accounts


def check_passwords(accounts: Sequence[Account], path: str | os.PathLike[str] | None) -> None:
    """ValueError (one line) unless every account of `accounts` has a UserID and a password, as
    the web path needs."""
    missing = [a for a in accounts if not a.password or not a.user_id]
    if not missing:
        return
    where = f"{path} lists" if path is not None else "the accounts list"
    how_many = "no password" if len(missing) == len(accounts) else (
        f"no password for {len(missing)} of the {len(accounts)} accounts used "
        f"(first AccountNo {missing[0].account_no})"
    )  # fmt: skip
    raise ValueError(f"--path web logs in with each account's UserID and password, and {where} "
                     f"{how_many}: make it with 'cluster accounts create' (without "
                     "--no-passwords), or use --path login")  # fmt: skip
