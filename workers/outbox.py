"""Replies gathered per destination and sent as one bus message each.

A destination with a data link (:class:`cluster.datalink.WorkerDataLinks`: a gateway) gets its
items over that link; any other (an auth worker, a CLI, a gateway without a data port) as TO
through the broker. A data link whose queue is full keeps its items, in order, ahead of anything
queued for it later, and they are sent again shortly: nothing is dropped for being early.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from cluster import bus
from cluster.datalink import WorkerDataLinks
from cluster.link import BusLink

#: Seconds between two tries to hand a full data link what waits for it.
RETRY = 0.002


class Outbox:
    """Session items waiting to go out, grouped by destination peer.

    :meth:`flush` sends them, one message per destination; :meth:`add_soon` also schedules a
    flush for the end of this loop iteration (for workers without a frame loop)."""

    def __init__(
        self, link: BusLink, counters: Counter[str], data: WorkerDataLinks | None = None
    ) -> None:
        self.link = link
        self.data = data
        self.counters = counters
        self._items: dict[bytes, list[list[Any]]] = {}
        self._waiting: dict[bytes, list[list[Any]]] = {}  # for full data links, oldest first
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None
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
        self.pending -= len(self._waiting.pop(dest, ()))

    def flush(self) -> None:
        self._scheduled = False
        if not self._items and not self._waiting:
            return
        items, self._items = self._items, {}
        if self._waiting:
            waiting, self._waiting = self._waiting, {}
            for dest, batch in items.items():
                waiting.setdefault(dest, []).extend(batch)
            items = waiting
        data = self.data
        for dest, batch in items.items():
            if data is not None and data.reachable(dest):
                if not data.send(dest, bus.pack_body(batch)):
                    self._waiting[dest] = batch
                    continue
            elif not self.link.send([bus.TO, dest, bus.pack_body(batch)]):
                self.counters["reply_not_sent"] += len(batch)
            self.sent += len(batch)
            self.pending -= len(batch)
        if self._waiting and self._retry is None:
            self.counters["link_full"] += 1
            self._retry = asyncio.get_running_loop().call_later(RETRY, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.flush()
