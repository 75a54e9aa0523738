"""Accounts made in bulk, and the accounts file that lists them for the dummy clients.

An accounts file has one line per account: ``AccountNo<TAB>UserID<TAB>Nick<TAB>SessionKey``, the
key as its 64 ASCII characters (generated keys are hex text, so they can be typed and stored in
text files), lines ending in ``\\n``, UTF-8.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cluster.db.base import NewAccount

KEY_LENGTH = 64


def hash_password(password: str, salt: str) -> str:
    """``userpass``: sha256 of the hex salt followed by the password (UTF-8), as 64 hex chars."""
    return hashlib.sha256((salt + password).encode("utf-8")).hexdigest()


def unusable_password() -> tuple[str, str]:
    """(userpass, salt) for an account created without a password: the sha256 hash of a fresh
    random salt and a random password that is not kept, as ``cluster accounts create`` has always
    written. Not an argon2id hash, so the web login refuses it until a password is set."""
    salt = secrets.token_hex(16)
    return hash_password(secrets.token_urlsafe(18), salt), salt


def new_account(account_no: int, password_hash: str | None = None) -> NewAccount:
    """Account `account_no` with ID ``ID_<no>``, nick ``NICK_<no>``, a random 64-character session
    key, and `password_hash` as its userpass (None: a random password that is not kept, only its
    salted sha256 hash, see :func:`unusable_password`)."""
    return NewAccount(
        account_no=account_no,
        user_id=f"ID_{account_no}",
        nickname=f"NICK_{account_no}",
        session_key=secrets.token_hex(KEY_LENGTH // 2).encode("ascii"),
        password_hash=password_hash,
    )


def format_line(account: NewAccount) -> str:
    """The accounts-file line for `account` (its key must be ASCII text)."""
    key = account.session_key.decode("ascii")
    return f"{account.account_no}\t{account.user_id}\t{account.nickname}\t{key}\n"


def read_accounts_file(path: str | os.PathLike[str]) -> list[tuple[int, str, str, bytes]]:
    """Every ``(account_no, user_id, nickname, session_key)`` in an accounts file, in file order
    (see :func:`read_account_lines`, whose Password column this leaves out)."""
    return [line[:4] for line in read_account_lines(path)]


def read_account_lines(path: str | os.PathLike[str]) -> list[tuple[int, str, str, bytes, str]]:
    """Every ``(account_no, user_id, nickname, session_key, password)`` in an accounts file, in
    file order; the password is "" when the line has no fifth column (files of earlier versions)
    or an empty one (``--no-passwords``).

    Blank lines are skipped. Raises ValueError naming the file and line number (never the
    password) for a line that does not have four or five tab-separated fields, an integer
    AccountNo and a 64-character ASCII key; OSError when the file cannot be read."""
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
        accounts.append((account_no, user_id, nickname, key_text.encode("ascii"), password))
    return accounts
