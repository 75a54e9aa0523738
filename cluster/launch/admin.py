"""`cluster db init` and `cluster accounts create`: one-shot administration commands.

Failures are one line on stderr and exit code 1 (2 for bad arguments, as argparse does)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from cluster.config import Config
from cluster.db import DatabaseError
from cluster.db.cli import create_accounts, init_db


def main(args: argparse.Namespace, config: Config) -> int:
    try:
        if args.command == "db":
            print(asyncio.run(init_db(config)))
            return 0
        return asyncio.run(_create(config, args.count, args.start, Path(args.out)))
    except (DatabaseError, ValueError, OSError) as exc:
        print(f"cluster {args.command}: {exc}", file=sys.stderr)
        return 1


async def _create(config: Config, count: int, start: int | None, out: Path) -> int:
    started = time.monotonic()
    last_shown = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last_shown
        now = time.monotonic()
        if now - last_shown >= 1.0 or done == total:
            last_shown = now
            print(f"  {done}/{total} accounts", file=sys.stderr, flush=True)

    await init_db(config)
    first, last = await create_accounts(config, count, start, out, progress)
    elapsed = time.monotonic() - started
    print(f"created accounts {first}..{last} in {elapsed:.1f}s; list written to {out}")
    return 0
