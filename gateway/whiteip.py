"""``[gateway] whiteip = "enforce"``: only addresses listed in ``accountdb.whiteip`` may connect.

The list is read at start and then every ``whiteip_refresh`` seconds; checks at accept time use
the cached copy (no DB round trip per connection). If the DB cannot be read, the last list read
stays in force; until a first list has been read, nobody is admitted (fail closed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from cluster.db import Database, DatabaseError

log = logging.getLogger("gateway.whiteip")


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip()))
    except ValueError:
        return address.strip()


class WhiteList:
    """The cached allow-list and its refresh task."""

    def __init__(self, db: Database, refresh: float) -> None:
        self.db = db
        self.refresh = refresh
        self.addresses: frozenset[str] | None = None  # None: never loaded
        self._task: asyncio.Task[None] | None = None

    def admit(self, address: str) -> bool:
        addresses = self.addresses
        return addresses is not None and _normal(address) in addresses

    async def load(self) -> bool:
        try:
            addresses = frozenset(_normal(ip) for ip in await self.db.white_ips())
        except DatabaseError as exc:
            log.warning("cannot read accountdb.whiteip (keeping the last list): %s", exc)
            return False
        if addresses != self.addresses:
            log.info("whiteip: %d addresses admitted", len(addresses))
        self.addresses = addresses
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="whiteip-refresh")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            await self.load()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
