"""`cluster db init` and `cluster accounts create|passwd|lock|unlock`: one-shot administration
commands.

Failures are one line on stderr and exit code 1 (2 for bad arguments, as argparse does). A
password is never printed, logged or put in an error message; ``accounts create`` writes the
passwords it was given or made into its accounts file only (mode 0600), for the operator to hand
out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from cluster import passwords
from cluster.config import Config
from cluster.db import DatabaseError, open_database
from cluster.db.accounts import format_line, new_account
from cluster.db.cli import BATCH_SIZE, init_db


def main(args: argparse.Namespace, config: Config) -> int:
    try:
        if args.command == "db":
            print(asyncio.run(init_db(config)))
            return 0
        if args.accounts_command == "passwd":
            return asyncio.run(_passwd(config, args.account_no, args.password_file))
        if args.accounts_command in ("lock", "unlock"):
            return asyncio.run(_set_status(config, args.account_no, args.accounts_command))
        given = passwords.read_file(args.password_file) if args.password_file else None
        count = args.count
        if given is not None:
            if count is None:
                count = len(given)
            elif count != len(given):
                raise ValueError(f"--count {count} but {args.password_file} holds "
                                 f"{len(given)} passwords")  # fmt: skip
            if count == 0:
                raise ValueError(f"{args.password_file} holds no password")
        elif count is None:
            raise ValueError("--count N is needed (or --password-file)")
        return asyncio.run(
            _create(config, count, args.start, Path(args.out), given, args.no_passwords)
        )
    except (DatabaseError, ValueError, OSError) as exc:
        print(f"cluster {args.command}: {exc}", file=sys.stderr)
        return 1


async def _create(
    config: Config, count: int, start: int | None, out: Path, given: list[str] | None,
    no_passwords: bool,
) -> int:  # fmt: skip
    """Create `count` accounts with the passwords `given` (else generated ones, else none when
    `no_passwords`) and list them, passwords last, in `out`."""
    started = time.monotonic()
    last_shown = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last_shown
        now = time.monotonic()
        if now - last_shown >= 1.0 or done == total:
            last_shown = now
            print(f"  {done}/{total} accounts", file=sys.stderr, flush=True)

    await init_db(config)
    if no_passwords:
        plain: list[str] = [""] * count
    else:
        plain = given if given is not None else [passwords.generate() for _ in range(count)]
    hasher = passwords.hasher(config)
    db = await open_database(config)
    loop = asyncio.get_running_loop()
    try:
        first = start if start is not None else max(await db.max_account_no() + 1, 1)
        # argon2 releases the GIL: hash on every core
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool, _private(out) as listing:
            for offset in range(0, count, BATCH_SIZE):
                batch_plain = plain[offset : offset + BATCH_SIZE]
                hashes: list[str | None] = (
                    [None] * len(batch_plain) if no_passwords
                    else list(await asyncio.gather(*(
                        loop.run_in_executor(pool, hasher.hash, p) for p in batch_plain
                    )))
                )  # fmt: skip
                batch = [new_account(first + offset + i, h) for i, h in enumerate(hashes)]
                await db.create_accounts(batch)
                listing.write("".join(
                    format_line(a).removesuffix("\n") + f"\t{p}\n"
                    for a, p in zip(batch, batch_plain, strict=True)
                ))  # fmt: skip
                listing.flush()
                progress(offset + len(batch), count)
    finally:
        await db.close()
    elapsed = time.monotonic() - started
    print(f"created accounts {first}..{first + count - 1} in {elapsed:.1f}s; "
          f"list written to {out}")  # fmt: skip
    return 0


def _private(path: Path) -> TextIO:
    """`path` opened for writing, readable by its owner only (it holds passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", newline="\n")


async def _set_status(config: Config, account_no: int, command: str) -> int:
    """An operator's lock (status 1, no owner) or unlock (status 0, no owner) of one account."""
    db = await open_database(config)
    try:
        found = await db.set_status(account_no, 1 if command == "lock" else 0)
    finally:
        await db.close()
    if not found:
        raise ValueError(f"account {account_no} has no status row")
    print(f"account {account_no} {command}ed")
    return 0


async def _passwd(config: Config, account_no: int, password_file: str | None) -> int:
    """Set the password of `account_no` from `password_file`'s first line, else from stdin's."""
    if password_file:
        given = passwords.read_file(password_file)
        if not given:
            raise ValueError(f"{password_file} holds no password")
        password = given[0]
    else:
        if sys.stdin.isatty():
            import getpass

            password = getpass.getpass("new password: ")
        else:
            password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        problem = passwords.check(password)
        if problem is not None:
            raise ValueError(problem)
    encoded = await asyncio.get_running_loop().run_in_executor(
        None, passwords.hasher(config).hash, password
    )
    db = await open_database(config)
    try:
        found = await db.set_password(account_no, encoded)
    finally:
        await db.close()
    if not found:
        raise ValueError(f"no account {account_no}")
    print(f"password of account {account_no} set")
    return 0
