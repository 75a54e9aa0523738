"""A mergeable latency histogram: percentiles of many agents and seconds are computed from the
merged counts, never by averaging percentiles.

Values are whole microseconds in log-linear buckets: exact below 64, then 64 buckets per power
of two, so a reported percentile is within 1.6% of the true value (it reports the bucket's lower
bound, the maximum is exact). Buckets are sparse, so a histogram is a small dict that travels as
msgpack between agents and the controller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SUB_BUCKETS = 64


def bucket_of(value: int) -> int:
    """The bucket index of a non-negative value."""
    if value < SUB_BUCKETS:
        return max(value, 0)
    shift = value.bit_length() - 7  # value >> shift is in [64, 128)
    return (shift + 1) * SUB_BUCKETS + ((value >> shift) - SUB_BUCKETS)


def lower_bound(index: int) -> int:
    """The smallest value that falls in bucket `index`."""
    if index < SUB_BUCKETS:
        return index
    shift = index // SUB_BUCKETS - 1
    return (index % SUB_BUCKETS + SUB_BUCKETS) << shift


class Histogram:
    """Counts of values (microseconds) per bucket, plus the exact count, sum and maximum."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.max = 0

    def record(self, value: int) -> None:
        index = bucket_of(value)
        self.buckets[index] = self.buckets.get(index, 0) + 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> Histogram:
        """Add `other`'s counts into this one; returns self."""
        for index, count in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + count
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)
        return self

    def percentile(self, percent: float) -> int:
        """The value below which `percent` % of the recorded values fall (0 when empty)."""
        if not self.count:
            return 0
        if percent >= 100:
            return self.max
        rank = max(1, int(self.count * percent / 100 + 0.999999))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(lower_bound(index), self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"buckets": self.buckets, "count": self.count, "total": self.total, "max": self.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        hist = cls()
        hist.buckets = {int(k): int(v) for k, v in data.get("buckets", {}).items()}
        hist.count = int(data.get("count", 0))
        hist.total = int(data.get("total", 0))
        hist.max = int(data.get("max", 0))
        return hist

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        out = cls()
        for hist in histograms:
            out.merge(hist)
        return out

    def summary_ms(self) -> dict[str, float]:
        """``{"p50", "p99", "max"}`` in milliseconds (the report's latency_ms)."""
        return {
            "p50": round(self.percentile(50) / 1000, 3),
            "p99": round(self.percentile(99) / 1000, 3),
            "max": round(self.max / 1000, 3),
        }
