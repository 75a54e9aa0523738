"""The one bus dispatcher: every message a role receives is parsed and checked here, once.

A role hands a :class:`Dispatcher` the handlers it cares about; the dispatcher is the
``on_message`` of its :class:`~cluster.link.BusLink` (and of its data links). Each message is
checked for its frames, bodies are parsed into :class:`~cluster.bus.Item` records by
:func:`cluster.bus.parse_items`, and the handler gets named values, never frame indices. Anything
malformed (a short message, a body that is not msgpack, an item of the wrong shape, a roster or
sample that is not a map) is counted in ``counters["bad_bus_message"]`` /
``counters["bad_bus_item"]``, logged at most once per :data:`LOG_EVERY` seconds, and dropped
without touching anything else. A command the role has no handler for is ignored.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster import bus
from cluster.bus import Item

log = logging.getLogger("cluster.dispatch")

#: Seconds between two log lines about malformed bus input.
LOG_EVERY = 10.0

ItemsHandler = Callable[[bytes, list[Item]], None]


@dataclass(frozen=True)
class Roster:
    """Who is live, per the broker: peer names by role, and the gateways' data endpoints."""

    members: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    def of(self, role: str) -> list[str]:
        return self.members.get(role, [])


def parse_roster(frame: bytes) -> Roster:
    """A ROSTER frame's roster; ValueError when it is not one."""
    raw = bus.unpack_info(frame)
    members: dict[str, list[str]] = {}
    for role in bus.ROSTER_ROLES:
        names = raw.get(role, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"roster {role} is not a list of names")
        members[role] = names
    data = raw.get("data", {})
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError("roster data is not a map of names to endpoints")
    return Roster(members, data)


class Dispatcher:
    """Routes received bus messages to handlers with checked, named arguments.

    Handlers (all optional): ``items(source, items)`` for FROM and data-link DATA,
    ``unroutable(dest, items)``, ``gone(identity, role)``, ``roster(Roster)``,
    ``stats(source, sample)``, ``evicted()``, ``reset()``, ``registered(fresh)``.
    ``encodes_replies``: the role puts every client-message item through the codec's encoder
    (the gateway), which checks those items' fields; they are not checked twice."""

    def __init__(
        self,
        counters: Counter[str],
        *,
        items: ItemsHandler | None = None,
        unroutable: ItemsHandler | None = None,
        gone: Callable[[bytes, str], None] | None = None,
        roster: Callable[[Roster], None] | None = None,
        stats: Callable[[bytes, dict[str, Any]], None] | None = None,
        evicted: Callable[[], None] | None = None,
        reset: Callable[[], None] | None = None,
        registered: Callable[[bool], None] | None = None,
        encodes_replies: bool = False,
    ) -> None:
        self.counters = counters
        self.encodes_replies = encodes_replies  # see cluster.bus.parse_items(encoded=...)
        self._items = items
        self._unroutable = unroutable
        self._gone = gone
        self._roster = roster
        self._stats = stats
        self._evicted = evicted
        self._reset = reset
        self._registered = registered
        self._logged_at = 0.0

    def __call__(self, frames: list[bytes]) -> None:
        """Dispatch one message from the broker link."""
        command = frames[0] if frames else b""
        if command == bus.FROM:
            if len(frames) < 3:
                return self._bad(command, "no source or body")
            if self._items is not None:
                self.deliver(frames[1], frames[2:])
        elif command == bus.UNROUTABLE:
            if len(frames) < 2:
                return self._bad(command, "no destination")
            if self._unroutable is not None:
                self._unroutable(frames[1], self.parse(frames[2:], frames[1]))
        elif command == bus.GONE:
            if len(frames) < 3:
                return self._bad(command, "no identity or role")
            if self._gone is not None:
                self._gone(frames[1], frames[2].decode(errors="replace"))
        elif command == bus.ROSTER:
            if len(frames) < 2:
                return self._bad(command, "no roster")
            try:
                roster = parse_roster(frames[1])
            except ValueError as exc:
                return self._bad(command, str(exc))
            if self._roster is not None:
                self._roster(roster)
        elif command == bus.STATS:
            if len(frames) < 3:
                return self._bad(command, "no source or sample")
            try:
                sample = bus.unpack_info(frames[2])
            except Exception as exc:
                return self._bad(command, f"sample: {exc}")
            if self._stats is not None:
                self._stats(frames[1], sample)
        elif command == bus.EVICTED:
            if self._evicted is not None:
                self._evicted()
        elif command == bus.RESET:
            if self._reset is not None:
                self._reset()
        elif command == bus.REGISTERED:
            if self._registered is not None:
                self._registered(len(frames) > 1 and frames[1] == b"1")
        else:
            self._bad(command, "unknown command")
        return None

    def deliver(self, source: bytes, bodies: list[bytes]) -> None:
        """Hand the items of `bodies` from `source` to the items handler (FROM, DATA)."""
        items = self.parse(bodies, source)
        if items and self._items is not None:
            self._items(source, items)

    def parse(self, bodies: list[bytes], source: bytes) -> list[Item]:
        """The checked items of `bodies`; malformed ones are counted and left out."""
        encoded = self.encodes_replies
        if len(bodies) == 1:
            items, bad = bus.parse_items(bodies[0], encoded)
        else:
            items, bad = [], 0
            for body in bodies:
                more, worse = bus.parse_items(body, encoded)
                items += more
                bad += worse
        if bad:
            self.counters["bad_bus_item"] += bad
            self._log(f"{bad} malformed bus items from {source[:64]!r} dropped")
        return items

    def _bad(self, command: bytes, why: str) -> None:
        self.counters["bad_bus_message"] += 1
        self._log(f"malformed bus message {command[:16]!r}: {why}; dropped")

    def _log(self, line: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            log.warning("%s (counted in bad_bus_item / bad_bus_message)", line)
