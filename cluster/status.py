"""Asking the monitor what it knows, over the bus: `cluster status` and the `cluster up` screens.

A :class:`MonitorClient` joins the bus as a short-lived ``cli`` peer, learns the monitor's
identity from the broker's ROSTER, and sends it STATUS queries. Each failure is one clear
:class:`StatusUnavailable` line: the broker cannot be reached, no monitor is registered, or the
monitor did not answer.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from typing import Any

from cluster import bus
from cluster.bus import Item
from cluster.config import Config
from cluster.dispatch import Dispatcher, Roster
from cluster.link import bus_link

STATUS = bus.Control.STATUS
#: The figure shown as TPS for each role.
TPS_FIELD = {
    "gateway": "recv_tps",
    "game": "recv_tps",
    "chat": "message_tps",
    "auth": "login_success_tps",
    "web": "login_ok_tps",
    "broker": "routed_tps",
}
#: The role's own figures in the table's FIGURES column: (label, sample field), in order.
FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "gateway": (("login", "sessions_login"), ("game", "sessions_game"), ("chat", "sessions_chat")),
    "game": (("auth", "session_auth"), ("game", "session_game"), ("auth_fps", "auth_fps"),
             ("game_fps", "game_fps")),
    "chat": (("players", "session_login"), ("auth", "session_auth"),
             ("deliver_tps", "delivery_tps"), ("update_tps", "update_tps"),
             ("sectors", "sectors_occupied"), ("sector_max", "sector_max"),
             ("keys", "pending_keys"), ("key_miss", "key_miss")),
    "auth": (("avg_ms", "login_latency_avg_ms"), ("total", "login_total")),
    "broker": (("peers", "peers"), ("holders", "holders")),
    "monitor": (("processes", "processes"),),
    "web": (("ok", "login_ok"), ("invalid", "login_invalid"), ("locked", "login_locked"),
            ("limited", "login_rate_limited"), ("accounts_locked", "accounts_locked")),
}  # fmt: skip


class StatusUnavailable(RuntimeError):
    """The status cannot be had; the message says why, in one line."""


class MonitorClient:
    """A bus peer that queries the cluster's monitor."""

    def __init__(self, config: Config) -> None:
        self.endpoint = config.broker.endpoint
        self.roster: dict[str, list[str]] = {}
        self._roster_known = asyncio.Event()
        self._answer: asyncio.Future[dict[str, Any]] | None = None
        self.counters: Counter[str] = Counter()
        dispatch = Dispatcher(
            self.counters, roster=self._on_roster, items=self._on_items,
            unroutable=self._on_lost, gone=self._on_lost,
        )  # fmt: skip
        self.link = bus_link(config, "cli", dispatch, counters=self.counters)

    def _on_roster(self, roster: Roster) -> None:
        self.roster = roster.members
        self._roster_known.set()

    def _on_items(self, source: bytes, items: list[Item]) -> None:
        for _, mtype, fields in items:
            if mtype == STATUS and fields and isinstance(fields[0], dict):
                self._settle(result=fields[0])

    def _on_lost(self, identity: bytes, *_: Any) -> None:
        if identity.decode(errors="replace") in self.roster.get("monitor", []):
            self._settle(error=StatusUnavailable("the monitor went away"))

    def _settle(self, result: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        if self._answer is None or self._answer.done():
            return
        if error is not None:
            self._answer.set_exception(error)
        else:
            self._answer.set_result(result or {})

    async def connect(self, timeout: float) -> None:
        await self.link.start()
        try:
            async with asyncio.timeout(timeout):
                await self._roster_known.wait()
        except TimeoutError:
            raise StatusUnavailable(f"cannot reach the broker at {self.endpoint}") from None

    async def snapshot(self, timeout: float) -> dict[str, Any]:
        """The monitor's current snapshot: ``{"processes": [...], "gone": [...]}``."""
        monitors = self.roster.get("monitor") or []
        if not monitors:
            raise StatusUnavailable(f"no monitor is registered with the broker at {self.endpoint}")
        self._answer = asyncio.get_running_loop().create_future()
        self.link.send([bus.TO, monitors[0].encode(), bus.pack_body([[0, STATUS]])])
        try:
            async with asyncio.timeout(timeout):
                return await self._answer
        except TimeoutError:
            raise StatusUnavailable(f"the monitor {monitors[0]} did not answer") from None

    async def close(self) -> None:
        await self.link.close()


async def fetch(config: Config, timeout: float = 3.0) -> dict[str, Any]:
    """One snapshot, or StatusUnavailable."""
    client = MonitorClient(config)
    try:
        await client.connect(timeout)
        return await client.snapshot(timeout)
    finally:
        await client.close()


def rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """The processes of a snapshot with the common columns filled in."""
    out = []
    for sample in snapshot.get("processes", []):
        row = dict(sample)
        row["tps"] = sample.get(TPS_FIELD.get(sample.get("role", ""), ""), 0)
        out.append(row)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def figures(row: dict[str, Any]) -> str:
    """The FIGURES cell: ``label=value`` of the role's own figures that the sample has."""
    pairs = []
    for name, key in FIGURES.get(str(row.get("role", "")), ()):
        value = _number(row.get(key))
        if value is not None:
            whole = not math.isfinite(value) or value == int(value) or abs(value) >= 100
            pairs.append(f"{name}={value:.0f}" if whole else f"{name}={value:.1f}")
    return " ".join(pairs)


def as_json(snapshot: dict[str, Any]) -> str:
    return json.dumps({"processes": rows(snapshot), "gone": snapshot.get("gone", [])}, indent=1)


def as_table(snapshot: dict[str, Any]) -> str:
    header = ("ROLE", "HOST", "PID", "HB AGE", "SESSIONS", "TPS", "CPU %", "MEM MB", "ID",
              "FIGURES")  # fmt: skip
    lines = [header]
    for row in rows(snapshot):
        lines.append((
            row.get("role", "?"), row.get("host", "?"), str(row.get("pid", "?")),
            f"{row.get('heartbeat_age_s', 0):.1f}s", str(round(row.get("sessions", 0))),
            f"{row.get('tps', 0):.0f}", f"{row.get('cpu_percent', 0):.1f}",
            f"{row.get('memory_mb', 0):.1f}", row.get("id", "?"), figures(row),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    for gone in snapshot.get("gone", []):
        text.append(f"GONE {gone.get('role', '?')} {gone.get('id', '?')} "
                    f"(silent {gone.get('heartbeat_age_s', 0):.0f}s)")  # fmt: skip
    return "\n".join(text)
