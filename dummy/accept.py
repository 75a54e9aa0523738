"""What the gateways accepted during a run (``accept_total``), from the monitor's samples.

Each gateway process counts the connections it accepted since it started
(``accept_total_login`` + ``accept_total_game`` + ``accept_total_chat`` of its samples: every
port, so one figure serves an echo run, a chat run, or both at once), and each sample carries the
process's bus identity (``id``), new for every start. Summing the totals after the run and
subtracting the sum before goes wrong as soon as a gateway restarts during the run (the new
process starts again from 0), so the count is kept per process, from samples followed through the
run (:class:`AcceptWatch` asks the monitor every second, and again until every live gateway has
sampled after the end):

- a process already known at the start contributes its last total less its first;
- a process that appears during the run contributes its whole total (every accept of it falls in
  the run);
- a process that goes away contributes what it had reached in the last sample seen of it (the
  monitor keeps the last sample of a process gone silent, so a short-lived one is not missed).

What a process killed outright accepted after its last sample (at most a second's worth) is known
to nobody, and a connect the kernel completed into the backlog of a process that then died never
reached a gateway at all; the dummy counts both in ``connect_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cluster.config import Config
from cluster.status import MonitorClient, StatusUnavailable

log = logging.getLogger("dummy")

Sample = dict[str, Any]

#: The gateway counters that add up to accept_total (a gateway without the chat port has no
#: ``accept_total_chat``, which then counts 0).
ACCEPT_COUNTERS = ("accept_total_login", "accept_total_game", "accept_total_chat")
#: Seconds between two questions to the monitor during the run.
POLL_INTERVAL = 1.0
#: How long to wait, after the run, for every live gateway to sample (longer than the monitor
#: takes to call a silent process gone, so a gateway that died at the end does not hold it up).
SETTLE_TIMEOUT = 6.0
#: How long one question to the monitor may take.
QUERY_TIMEOUT = 2.0


def accepted_in(sample: Sample) -> int:
    """The connections a gateway sample says its process accepted since it started."""
    total = 0
    for name in ACCEPT_COUNTERS:
        value = sample.get(name, 0)
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += int(value)
    return total


@dataclass
class GatewayCount:
    """One gateway process, as followed through the run."""

    id: str
    known_before: bool  # seen in the first snapshot, before the run
    first: int  # its total when first seen (0 when it appeared during the run)
    last: int  # its total in the last sample seen
    time: float  # when that sample was taken (Unix time)
    carried: int = 0  # accepts before a counter went backwards within one identity

    @property
    def accepted(self) -> int:
        return self.carried + self.last - self.first


class AcceptLedger:
    """Per-process accept counts from successive observations of gateway samples.

    The first :meth:`observe` (``before_run=True``) is the start of the run; samples of other
    roles, without an ``id``, or not newer than the last one seen of their process are ignored.
    """

    def __init__(self) -> None:
        self.gateways: dict[str, GatewayCount] = {}

    def observe(self, samples: Iterable[Sample], before_run: bool = False) -> None:
        for sample in samples:
            ident = sample.get("id")
            if sample.get("role") != "gateway" or not isinstance(ident, str):
                continue
            value = accepted_in(sample)
            at = float(sample.get("time", 0.0))
            known = self.gateways.get(ident)
            if known is None:
                self.gateways[ident] = GatewayCount(
                    ident, before_run, value if before_run else 0, value, at
                )
                continue
            if at <= known.time:
                continue
            if value < known.last:  # the same identity counting from 0 again: keep what it had
                known.carried += known.last - known.first
                known.first = 0
            known.last, known.time = value, at

    @property
    def total(self) -> int:
        return sum(g.accepted for g in self.gateways.values())


def accepted_during(before: Iterable[Sample], *later: Iterable[Sample]) -> int:
    """accept_total from the gateway samples known at the start (`before`) and those of each
    later observation, in order."""
    ledger = AcceptLedger()
    ledger.observe(before, before_run=True)
    for samples in later:
        ledger.observe(samples)
    return ledger.total


def samples_of(snapshot: dict[str, Any]) -> list[Sample]:
    """Every sample of a monitor snapshot: live processes and gone ones (their last sample)."""
    return [*snapshot.get("processes", []), *snapshot.get("gone", [])]


@dataclass
class AcceptFigure:
    """The outcome: ``total`` None (with ``note`` saying why) when it cannot be known."""

    total: int | None
    note: str | None = None
    gateways: list[dict[str, Any]] | None = None  # one entry per gateway process


class AcceptWatch:
    """Follows the gateways' samples from before a run to after it, through the monitor."""

    def __init__(
        self,
        config: Config,
        interval: float = POLL_INTERVAL,
        settle_timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        self.config = config
        self.interval = interval
        self.settle_timeout = settle_timeout
        self.ledger = AcceptLedger()
        self.client: MonitorClient | None = None
        self.problem: str | None = None  # why the figure cannot be known
        self.gone_before: set[str] = set()  # gateways already gone at the start
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the starting point, then ask again every `interval` seconds in the background.
        Never raises: a monitor that cannot be asked now makes the figure unknown."""
        client = MonitorClient(self.config)
        try:
            await client.connect(QUERY_TIMEOUT)
            snapshot = await self._first_snapshot(client)
        except StatusUnavailable as exc:
            await client.close()
            self.problem = f"the monitor could not be asked at the start of the run ({exc})"
            log.warning("accept_total unknown: %s", self.problem)
            return
        self.client = client
        self.ledger.observe(samples_of(snapshot), before_run=True)
        self.gone_before = {str(p.get("id")) for p in snapshot.get("gone", [])}
        live = [p for p in snapshot.get("processes", []) if p.get("role") == "gateway"]
        log.info("following the gateways' accept totals through the monitor (%d live now)",
                 len(live))  # fmt: skip
        self._task = asyncio.create_task(self._follow(client), name="dummy-accept-watch")

    async def _first_snapshot(self, client: MonitorClient) -> dict[str, Any]:
        """A snapshot with a sample of every gateway the broker knows (a gateway that just
        started has none yet), or the last one asked for when that takes too long."""
        deadline = time.monotonic() + self.settle_timeout
        while True:
            snapshot = await client.snapshot(QUERY_TIMEOUT)
            sampled = {p.get("id") for p in snapshot.get("processes", [])}
            missing = set(client.roster.get("gateway", [])) - sampled
            if not missing or time.monotonic() > deadline:
                return snapshot
            await asyncio.sleep(0.25)

    async def _follow(self, client: MonitorClient) -> None:
        complained = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                snapshot = await client.snapshot(QUERY_TIMEOUT)
            except StatusUnavailable as exc:
                if not complained:
                    log.warning("monitor not answering during the run (asking again): %s", exc)
                    complained = True
                continue
            complained = False
            self.ledger.observe(samples_of(snapshot))

    async def finish(self, after: float | None = None) -> AcceptFigure:
        """The figure, once every live gateway has sampled after `after` (Unix time; now by
        default)."""
        client, self.client = self.client, None
        await self.close()
        if client is None:
            return AcceptFigure(None, self.problem or "the monitor was not asked")
        after = time.time() if after is None else after
        try:
            return await self._settle(client, after)
        finally:
            await client.close()

    async def close(self) -> None:
        """Stop following without a figure (a run that ended in an error); idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        client, self.client = self.client, None
        if client is not None:
            await client.close()

    async def _settle(self, client: MonitorClient, after: float) -> AcceptFigure:
        deadline = time.monotonic() + self.settle_timeout
        while True:
            try:
                snapshot = await client.snapshot(QUERY_TIMEOUT)
            except StatusUnavailable as exc:
                if time.monotonic() > deadline:
                    return self._unknown(
                        f"the monitor could not be reached at the end of the run ({exc})"
                    )
            else:
                self.ledger.observe(samples_of(snapshot))
                live = [p for p in snapshot.get("processes", []) if p.get("role") == "gateway"]
                stale = [str(p.get("id")) for p in live if float(p.get("time", 0.0)) <= after]
                if not stale:
                    break
                if time.monotonic() > deadline:
                    return self._unknown(
                        f"no sample after the run from gateway {', '.join(stale)} "
                        f"within {self.settle_timeout:.0f}s"
                    )
            await asyncio.sleep(0.25)
        if not self.ledger.gateways:
            return self._unknown("the monitor knows no gateway")
        live_ids = {str(p.get("id")) for p in live}
        return AcceptFigure(self.ledger.total, None, [
            {"id": g.id, "accepted": g.accepted,
             "seen": "before the run" if g.known_before else "during the run",
             "status": "live" if g.id in live_ids else "gone"}
            for g in self.ledger.gateways.values() if g.id not in self.gone_before
        ])  # fmt: skip

    def _unknown(self, why: str) -> AcceptFigure:
        log.warning("accept_total unknown: %s", why)
        return AcceptFigure(None, why)
