"""Session items waiting to go out, grouped by destination peer: one bus message per destination
per flush. Every role that sends session items uses it (gateway, game and auth workers).

Where a destination's batch goes is the owner's business (a ``deliver(dest, items) -> bool``
function: over a data link, or TO through the broker); the outbox keeps the order and the
waiting. ``deliver`` returns False when the way to `dest` is full right now: the batch is kept,
in order, ahead of anything queued for that destination later, the owner hears ``on_stall(dest)``
(the gateway stops reading that worker's clients), and the outbox tries again every ``RETRY``
seconds until ``deliver`` takes it (``on_unstall(dest)``). Nothing is dropped for being early;
what cannot ever be delivered is ``deliver``'s to dispose of (and return True).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from cluster import bus
from cluster.datalink import WorkerDataLinks
from cluster.link import BusLink

#: Seconds between two tries to hand a full link what waits for it.
RETRY = 0.002

Deliver = Callable[[bytes, list[list[Any]]], bool]


class Outbox:
    """Items by destination; :meth:`flush` sends them, one message per destination.

    :meth:`add` queues; :meth:`add_soon` also schedules a flush for the end of this loop
    iteration (for owners without a frame loop of their own)."""

    def __init__(
        self,
        deliver: Deliver,
        counters: Counter[str],
        on_stall: Callable[[bytes], None] | None = None,
        on_unstall: Callable[[bytes], None] | None = None,
    ) -> None:
        self.deliver = deliver
        self.counters = counters
        self.on_stall = on_stall
        self.on_unstall = on_unstall
        self._items: dict[bytes, list[list[Any]]] = {}
        self._waiting: dict[bytes, list[list[Any]]] = {}  # for full links, oldest first
        self._scheduled = False
        self._retry: asyncio.TimerHandle | None = None
        self.sent = 0  # items handed on, in total
        self.pending = 0  # items queued or waiting

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

    def stalled(self, dest: bytes) -> bool:
        """Whether items for `dest` wait for its link to take them."""
        return dest in self._waiting

    def forget(self, dest: bytes) -> None:
        """Drop what waits for a peer that is gone."""
        self.pending -= len(self._items.pop(dest, ()))
        self.pending -= len(self._waiting.pop(dest, ()))

    def flush(self) -> None:
        """Hand every destination its batch (waiting items first)."""
        self._scheduled = False
        if not self._items and not self._waiting:
            return
        items, self._items = self._items, {}
        waiting, self._waiting = self._waiting, {}
        if waiting:
            for dest, batch in items.items():
                waiting.setdefault(dest, []).extend(batch)
            items = waiting
        for dest, batch in items.items():
            if not self.deliver(dest, batch):
                self._waiting[dest] = batch
                if dest not in waiting and self.on_stall is not None:
                    self.on_stall(dest)
                continue
            self.sent += len(batch)
            self.pending -= len(batch)
            if dest in waiting and self.on_unstall is not None:
                self.on_unstall(dest)
        if self._waiting and self._retry is None:
            self.counters["link_full"] += 1
            self._retry = asyncio.get_running_loop().call_later(RETRY, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.flush()


def worker_delivery(
    link: BusLink, counters: Counter[str], data: WorkerDataLinks | None = None
) -> Deliver:
    """How a worker sends: over the data link to a gateway that has one (False when that link
    is full), else TO through the broker (a failure is counted as ``reply_not_sent``)."""

    def deliver(dest: bytes, batch: list[list[Any]]) -> bool:
        if data is not None and data.reachable(dest):
            return data.send(dest, bus.pack_body(batch))
        if not link.send([bus.TO, dest, bus.pack_body(batch)]):
            counters["reply_not_sent"] += len(batch)
        return True

    return deliver
