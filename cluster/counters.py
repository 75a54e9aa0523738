"""Counters as the original's console screens showed them: totals that only grow, turned into
per-second rates once a second."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable


class PerSecond:
    """Rates of some of a :class:`~collections.Counter`'s totals over the last sample period.

    Call :meth:`sample` about once a second; ``rates[name]`` is then the growth of
    ``counters[name]`` per second since the previous sample (0.0 before the first period)."""

    def __init__(self, counters: Counter[str], names: Iterable[str]) -> None:
        self.counters = counters
        self.names = tuple(names)
        self.rates = dict.fromkeys(self.names, 0.0)
        self._last = {name: counters[name] for name in self.names}
        self._at = time.monotonic()

    def sample(self, now: float | None = None) -> dict[str, float]:
        now = time.monotonic() if now is None else now
        elapsed = now - self._at
        if elapsed > 0:
            for name in self.names:
                total = self.counters[name]
                self.rates[name] = (total - self._last[name]) / elapsed
                self._last[name] = total
            self._at = now
        return self.rates
