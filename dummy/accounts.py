"""The accounts a load runs on: the lines of the file ``cluster accounts create`` writes.

A line is ``AccountNo<TAB>UserID<TAB>Nick<TAB>SessionKey<TAB>Password``. Files of earlier
versions have no Password column, and ``--no-passwords`` leaves it empty: both still serve the
login and direct paths, which use the listed key; the web path (``--path web``) logs in with the
UserID and the password, so it needs them (:func:`check_passwords`).

Several dummies can share one file, as the original's ID lists were shared, each taking the
lines of an AccountNo range: ``--accounts FILE:START-END`` or ``--first N --last M`` (inclusive
bounds; :func:`read_range`).
"""

from __future__ import annotations

import os
import re
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


#: ``FILE:START-END``: the AccountNo range of ``--accounts``.
_RANGE = re.compile(r"(\d{1,18})-(\d{1,18})")


class AccountRange(NamedTuple):
    """An accounts file and the inclusive AccountNo bounds of the lines to use (None: open)."""

    path: str
    first: int | None = None
    last: int | None = None

    def __str__(self) -> str:
        if self.first is None and self.last is None:
            return self.path
        return f"{self.path}:{'' if self.first is None else self.first}-" + (
            "" if self.last is None else str(self.last)
        )


def _bound(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"\d{1,18}", text.strip()):
        raise ValueError(f"{flag} {text!r} is not an AccountNo (a whole number, 0 or more)")
    return int(text)


def account_range(spec: str, first: str | None = None, last: str | None = None) -> AccountRange:
    """What ``--accounts SPEC [--first N] [--last M]`` asks for: SPEC is FILE or FILE:START-END
    (a path that exists as given is a file, even with a colon in its name). ValueError (one
    line) for a malformed range, a range given twice, or START above END."""
    low, high = _bound("--first", first), _bound("--last", last)
    path = spec
    if ":" in spec and not os.path.exists(spec):
        head, _, tail = spec.rpartition(":")
        match = _RANGE.fullmatch(tail.strip())
        if not head or not match:
            raise ValueError(
                f"--accounts {spec!r}: give FILE or FILE:START-END, START and END "
                "the first and last AccountNo to use (e.g. accounts.tsv:1-500)"
            )
        if low is not None or high is not None:
            raise ValueError(
                f"--accounts {spec!r} names a range: give it there or with --first/--last, not both"
            )
        path, low, high = head, int(match[1]), int(match[2])
    if low is not None and high is not None and low > high:
        raise ValueError(f"the AccountNo range {low}-{high} is reversed: the first ({low}) is "
                         f"above the last ({high})")  # fmt: skip
    return AccountRange(path, low, high)


def select(accounts: Sequence[Account], wanted: AccountRange) -> list[Account]:
    """The accounts whose AccountNo is within `wanted`'s bounds, in file order; ValueError (one
    line) when none is."""
    low, high = wanted.first, wanted.last
    if low is None and high is None:
        return list(accounts)
    lowest = -1 if low is None else low
    highest = float("inf") if high is None else high
    chosen = [a for a in accounts if lowest <= a.account_no <= highest]
    if not chosen:
        numbers = [a.account_no for a in accounts]
        listed = f"it lists AccountNo {min(numbers)}..{max(numbers)}" if numbers else "it is empty"
        raise ValueError(f"--accounts {wanted}: no account of {wanted.path} is in that "
                         f"AccountNo range ({listed})")  # fmt: skip
    return chosen


def read_range(spec: str | os.PathLike[str], first: str | None = None,
               last: str | None = None) -> list[Account]:  # fmt: skip
    """The accounts of ``--accounts SPEC`` (FILE or FILE:START-END) within --first/--last."""
    wanted = account_range(os.fspath(spec), first, last)
    return select(read_accounts(wanted.path), wanted)
