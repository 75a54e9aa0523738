"""Account passwords: argon2id hashes (argon2-cffi) in ``accountdb.account.userpass``.

The hashes are made by ``cluster accounts create`` / ``cluster accounts passwd`` with the cost
``[web] hash_time_cost``, ``hash_memory_kib`` and ``hash_parallelism`` (default: OWASP's first
argon2id profile, m = 19 MiB, t = 2, p = 1: about 20 ms of one core). A hash carries its own
parameters, so the web role checks any hash whatever the configuration says now. Passwords
themselves are never stored, logged or shown; only ``cluster accounts create`` writes the ones it
generates into its accounts file, for the operator to hand out.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.low_level import Type

from cluster.config import Config

#: Shortest and longest password accepted where one is set.
MIN_LENGTH = 8
MAX_LENGTH = 1024
#: Characters a generated password is made of (no look-alikes, nothing a shell or TSV minds).
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
GENERATED_LENGTH = 16


def hasher(config: Config) -> PasswordHasher:
    """The argon2id hasher of the configured cost (``[web] hash_*``)."""
    web = config.web
    return PasswordHasher(
        time_cost=web.hash_time_cost, memory_cost=web.hash_memory_kib,
        parallelism=web.hash_parallelism, type=Type.ID,
    )  # fmt: skip


def generate() -> str:
    """A random password of :data:`GENERATED_LENGTH` characters (about 93 bits)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(GENERATED_LENGTH))


def check(password: str) -> str | None:
    """Why `password` cannot be set (one phrase), or None when it can."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if any(c in password for c in "\t\r\n\x00"):
        return "a password may not hold a tab, a line break or NUL"
    return None


def read_file(path: str | Path) -> list[str]:
    """The passwords in `path`, one a line (UTF-8; the line break is not part of it). Raises
    ValueError naming the line (never the password) when one cannot be set, OSError when the
    file cannot be read."""
    passwords = []
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()  # the file's final line break
    for number, raw in enumerate(lines, start=1):
        line = raw.removesuffix("\r")
        problem = check(line)
        if problem is not None:
            raise ValueError(f"{path}:{number}: {problem}")
        passwords.append(line)
    return passwords
