"""The dashboard's memory: the last ``[monitor] history_seconds`` of the charted figures of every
process and host, in rings of packed floats (no object per sample).

What is kept (the figures the original MonitoringClient drew):

- per process (:data:`COMMON_FIELDS` plus its role's :data:`ROLE_FIELDS`): CPU, memory, packet
  pool, sessions; auth workers' LoginSuccess TPS and login latency; game workers' Auth/Game FPS
  and sessions per mode; gateways' sessions per port; chat workers' players, MessageTPS and
  deliveries; and the per-second rate of each drop reason (``drops.<reason>``, from the
  ``drops`` totals and ``time`` of two consecutive samples; a total that went down, a restart,
  counts 0);
- per host (:data:`HOST_FIELDS`, the ``hw`` map of any process on it, one point a second at
  most): CPU total, available and NonPaged memory, network in and out.

Every point carries the monitor's receive time (Unix seconds), made strictly increasing across
all rings: a client that passes back the ``now`` of an answer as ``since`` gets exactly the
points recorded after that answer, whatever the processes' clocks say.

Memory bound: one :class:`Ring` per process or host seen in the window, at most
:data:`MAX_SOURCES`; a ring holds at most ``history_seconds`` points (one a second), each 8 bytes
of time plus 8 bytes per field, and at most :data:`MAX_FIELDS` fields. A process ring has
4 common + at most 4 role fields + at most :data:`MAX_DROP_REASONS` drop rates (16 fields): at
most ``history_seconds * 136`` bytes, 490 KB for the default hour (about 260 KB for a process
without drops); a host ring ``history_seconds * 48`` bytes. N processes on H hosts: at most
``history_seconds * (136 N + 48 H)`` bytes, 10 MB for 20 processes on one host. A ring with no
point in the window is dropped.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cluster.dashboard")

#: Fields charted for every process.
COMMON_FIELDS = ("cpu_percent", "memory_mb", "packet_pool", "sessions")
#: Fields charted per role, on top of :data:`COMMON_FIELDS`.
ROLE_FIELDS: dict[str, tuple[str, ...]] = {
    "auth": (
        "login_success_tps",
        "login_latency_min_ms",
        "login_latency_avg_ms",
        "login_latency_max_ms",
    ),
    "game": ("auth_fps", "game_fps", "session_auth", "session_game"),
    "gateway": ("sessions_login", "sessions_game", "sessions_chat"),
    "chat": ("session_login", "message_tps", "delivery_tps"),
}
#: Fields charted per host (the samples' ``hw`` map).
HOST_FIELDS = ("cpu_total", "available_mb", "nonpaged_mb", "net_recv_kbps", "net_send_kbps")
#: Drop reasons charted per process (the first ones seen; more are not charted).
MAX_DROP_REASONS = 8
#: Fields per ring, whatever a sample holds.
MAX_FIELDS = len(COMMON_FIELDS) + 4 + MAX_DROP_REASONS
#: Processes plus hosts kept at once; samples of further ones are not charted.
MAX_SOURCES = 512
#: Longest drop reason, role, host or id kept (longer ones are cut).
MAX_NAME = 128
#: A host's figures are charted at most once per this many seconds (every process sends them).
HOST_STEP = 0.9

_NAN = math.nan


def _number(value: Any) -> float | None:
    """A finite number as a float rounded to 3 decimals (short in JSON), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return round(number, 3) if math.isfinite(number) else None


class Ring:
    """The points of one source: times and fields as parallel arrays of float64. It grows up to
    `capacity` points, then overwrites its oldest one (`head` is the oldest once full). A field
    that appears late is NaN (None in JSON) for the points before it."""

    def __init__(self, capacity: int, info: dict[str, Any]) -> None:
        self.capacity = capacity
        self.info = info  # kind, role, host, label... as the API shows them
        self.times: array[float] = array("d")
        self.fields: dict[str, array[float]] = {}
        self.head = 0
        self.drop_totals: dict[str, tuple[float, float]] = {}  # reason -> (time, total)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def last_time(self) -> float:
        if not self.times:
            return -math.inf
        return self.times[(self.head - 1) % len(self.times)]

    def append(self, when: float, values: dict[str, float]) -> None:
        for name in values:
            if name not in self.fields and len(self.fields) < MAX_FIELDS:
                self.fields[name] = array("d", [_NAN]) * len(self.times)
        if len(self.times) < self.capacity:
            self.times.append(when)
            for name, points in self.fields.items():
                points.append(values.get(name, _NAN))
            return
        slot = self.head
        self.times[slot] = when
        for name, points in self.fields.items():
            points[slot] = values.get(name, _NAN)
        self.head = (slot + 1) % self.capacity

    def _at(self, logical: int) -> int:
        return (self.head + logical) % len(self.times)

    def after(self, since: float) -> tuple[list[float], dict[str, list[float | None]]]:
        """The points whose time is > `since`, oldest first: (times, field -> values)."""
        count = len(self.times)
        low, high = 0, count
        while low < high:  # first logical index with time > since
            mid = (low + high) // 2
            if self.times[self._at(mid)] <= since:
                low = mid + 1
            else:
                high = mid
        start = self.head + low  # physical index of the first point wanted
        if start >= count:
            ranges = [(start - count, self.head)]
        else:
            ranges = [(start, count), (0, self.head)] if self.head else [(start, count)]
        times = [v for a, b in ranges for v in self.times[a:b].tolist()]
        fields = {
            name: [None if v != v else v for a, b in ranges for v in points[a:b].tolist()]
            for name, points in self.fields.items()
        }
        return times, fields

    def drop_rates(self, when: float, drops: dict[Any, Any]) -> dict[str, float]:
        """Per-second rates of the ``drops`` totals since the previous sample, over the samples'
        own times (`when`: the process's clock; a reason's first sample, or a sample not later
        than the previous one, has no rate)."""
        rates: dict[str, float] = {}
        for reason, value in drops.items():
            total = _number(value)
            if not isinstance(reason, str) or total is None:
                continue
            name = reason[:MAX_NAME]
            previous = self.drop_totals.get(name)
            if previous is None and len(self.drop_totals) >= MAX_DROP_REASONS:
                continue
            self.drop_totals[name] = (when, total)
            if previous is not None and when > previous[0]:
                then, before = previous
                rate = (total - before) / (when - then) if total >= before else 0.0
                rates[f"drops.{name}"] = round(rate, 3)
        return rates


class History:
    """Every source's :class:`Ring`, fed one sample at a time by :meth:`record`."""

    def __init__(self, seconds: int, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock
        self.processes: dict[str, Ring] = {}
        self.hosts: dict[str, Ring] = {}
        self.ignored = 0  # samples of sources beyond MAX_SOURCES
        self._last = -math.inf

    def now(self) -> float:
        """The cursor of an answer: every point recorded later has a greater time."""
        return max(self.clock(), self._last)

    def _tick(self) -> float:
        self._last = max(self.clock(), self._last + 1e-6)
        return self._last

    def _ring(self, table: dict[str, Ring], key: str, info: dict[str, Any]) -> Ring | None:
        ring = table.get(key)
        if ring is None:
            if len(self.processes) + len(self.hosts) >= MAX_SOURCES:
                if not self.ignored:
                    log.warning("dashboard: %d processes and hosts charted already (the most "
                                "it keeps); %r and later ones are not charted", MAX_SOURCES, key)
                self.ignored += 1
                return None
            ring = table[key] = Ring(self.seconds, info)
        return ring

    def record(self, sample: dict[str, Any]) -> None:
        """Chart a process's sample (its ``id`` and ``role`` are strings: checked by the
        caller); odd values are left out, never raised on."""
        when = self._tick()
        self._expire(when)
        ident, role = sample["id"][:MAX_NAME], sample["role"][:MAX_NAME]
        host = str(sample.get("host", ""))[:MAX_NAME]
        info = {"kind": "process", "id": ident, "role": role, "host": host,
                "label": f"{role} {ident.rsplit('/', 1)[-1][-4:]}"}  # fmt: skip
        ring = self._ring(self.processes, ident, info)
        if ring is not None:
            values: dict[str, float] = {}
            for name in (*COMMON_FIELDS, *ROLE_FIELDS.get(role, ())):
                number = _number(sample.get(name))
                if number is not None:
                    values[name] = number
            drops = sample.get("drops")
            taken = _number(sample.get("time"))
            if isinstance(drops, dict):
                values.update(ring.drop_rates(when if taken is None else taken, drops))
            ring.append(when, values)
        hw = sample.get("hw")
        if isinstance(hw, dict):
            info = {"kind": "host", "id": host, "host": host, "label": host or "?"}
            host_ring = self._ring(self.hosts, host, info)
            if host_ring is not None and when - host_ring.last_time >= HOST_STEP:
                figures = {name: _number(hw.get(name)) for name in HOST_FIELDS}
                host_ring.append(when, {k: v for k, v in figures.items() if v is not None})

    def _expire(self, when: float) -> None:
        horizon = when - self.seconds
        for table in (self.processes, self.hosts):
            for key in [k for k, ring in table.items() if ring.last_time < horizon]:
                del table[key]

    def series(self, since: float = -math.inf) -> dict[str, Any]:
        """What the series API answers: ``now`` (pass it back as `since`), ``window`` (seconds
        kept) and one entry per source with points after `since` (every source is listed, with
        empty lists when it has none): ``key``, ``kind`` (process | host), ``id``, ``role``,
        ``host``, ``label``, ``t`` (times) and ``fields`` (name -> values, null where absent)."""
        now = self.now()
        out = []
        for prefix, table in (("host:", self.hosts), ("process:", self.processes)):
            for key, ring in table.items():
                times, fields = ring.after(since)
                out.append({"key": prefix + key, **ring.info, "t": times, "fields": fields})
        return {"now": now, "window": self.seconds, "series": out}
