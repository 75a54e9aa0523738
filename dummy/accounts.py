"""The accounts a load runs on: the lines of the file ``cluster accounts create`` writes.

A line is ``AccountNo<TAB>UserID<TAB>Nick<TAB>SessionKey<TAB>Password``. Files of earlier
versions have no Password column, and ``--no-passwords`` leaves it empty: both still serve the
login and direct paths, which use the listed key; the web path (``--path web``) logs in with the
UserID and the password, so it needs them (:func:`check_passwords`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from cluster.db.accounts import read_account_lines


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
    return [Account(*line) for line in read_account_lines(path)]


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
