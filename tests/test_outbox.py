"""cluster.outbox.Outbox: one batch per destination, order kept while a link is full, the owner
told when a destination stalls and when it flows again."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from cluster.outbox import Outbox
from cluster.testkit import async_wait_until


def test_a_full_link_keeps_its_items_in_order_and_the_owner_hears_stall_and_unstall() -> None:
    async def scenario() -> tuple[list[Any], list[str], Outbox]:
        delivered: list[Any] = []
        events: list[str] = []
        full = {b"w1": 2}  # w1 refuses its first two deliveries

        def deliver(dest: bytes, batch: list[list[Any]]) -> bool:
            if full.get(dest, 0) > 0:
                full[dest] -= 1
                return False
            delivered.append((dest, [item[0] for item in batch]))
            return True

        outbox = Outbox(
            deliver, Counter(), lambda d: events.append(f"stall {d.decode()}"),
            lambda d: events.append(f"unstall {d.decode()}"),
        )  # fmt: skip
        outbox.add(b"w1", [1])
        outbox.add(b"w2", [10])
        outbox.add(b"w1", [2])
        outbox.flush()
        assert outbox.stalled(b"w1") and not outbox.stalled(b"w2")
        outbox.add(b"w1", [3])  # queued behind what waits
        outbox.flush()
        assert outbox.pending == 3

        async def flowing() -> bool:
            return not outbox.stalled(b"w1")

        await async_wait_until(flowing, "w1 delivered", timeout=10)
        return delivered, events, outbox

    delivered, events, outbox = asyncio.run(scenario())
    assert delivered == [(b"w2", [10]), (b"w1", [1, 2, 3])]  # one batch, in order
    assert events == ["stall w1", "unstall w1"]  # once each, however many retries
    assert outbox.pending == 0 and outbox.sent == 4
    assert outbox.counters["link_full"] >= 1


def test_forget_drops_what_waits_for_a_peer_that_is_gone() -> None:
    async def scenario() -> Outbox:
        outbox = Outbox(lambda dest, batch: False, Counter())
        outbox.add(b"gone", [1])
        outbox.flush()
        outbox.add(b"gone", [2])
        outbox.forget(b"gone")
        return outbox

    outbox = asyncio.run(scenario())
    assert outbox.pending == 0 and not outbox.stalled(b"gone")
