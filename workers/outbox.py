"""Replies gathered per destination and sent as one bus message each (TO dest, one body)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from cluster import bus
from cluster.link import BusLink


class Outbox:
    """Session items waiting to go out, grouped by destination peer.

    :meth:`flush` sends them, one TO message per destination; :meth:`add_soon` also schedules a
    flush for the end of this loop iteration (for workers without a frame loop)."""

    def __init__(self, link: BusLink, counters: Counter[str]) -> None:
        self.link = link
        self.counters = counters
        self._items: dict[bytes, list[list[Any]]] = {}
        self._scheduled = False
        self.sent = 0  # items handed to the bus, in total
        self.pending = 0  # items waiting for the next flush

    def add(self, dest: bytes, item: list[Any]) -> None:
        items = self._items.get(dest)
        if items is None:
            items = self._items[dest] = []
        items.append(item)
        self.pending += 1

    def add_soon(self, dest: bytes, item: list[Any]) -> None:
        self.add(dest, item)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def forget(self, dest: bytes) -> None:
        """Drop what waits for a peer that is gone."""
        self.pending -= len(self._items.pop(dest, ()))

    def flush(self) -> None:
        self._scheduled = False
        if not self._items:
            return
        items, self._items = self._items, {}
        self.sent += self.pending
        self.pending = 0
        for dest, batch in items.items():
            if not self.link.send([bus.TO, dest, bus.pack_body(batch)]):
                self.counters["reply_not_sent"] += len(batch)
