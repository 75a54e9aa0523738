"""Once-a-second samples of every process, as the original's console screens and monitoring
protocol counted them.

Every process (broker, gateway, auth, game, chat, monitor) builds a **sample** each second and
sends it over the bus (STATS) to the monitor. A sample is a flat msgpack map:

===================  =====================================================================
key                  meaning
===================  =====================================================================
``id``               the process's bus identity (unique, e.g. ``game@host/pid/rand``)
``role``             broker | gateway | auth | game | chat | monitor | web
``host``, ``pid``    where it runs
``time``             Unix time the sample was taken
``cpu_percent``      CPU of this process over the last second, % of one core (CPU)
``memory_mb``        private (unique set) memory in MB (MEMORY_COMMIT)
``packet_pool``      messages held in this process's queues right now (PACKET_POOL)
``sessions``         client sessions held (SESSION): gateway all ports, game worker all
                     modes, chat worker all sessions, auth worker logins in progress
*role fields*        see below; every value is a number
``drops``            map reason -> total closes for that reason that this process decided
                     (gateway, game and chat workers): each client close is in exactly
                     one process's map (a worker's CLOSE is counted by the worker, the
                     gateway that carries it out counts it in ``worker_closes``), so
                     the maps of all processes add up to the closes of the cluster
``hw``               the host's figures: ``cpu_total`` (%), ``available_mb``,
                     ``nonpaged_mb`` (SUnreclaim + KernelStack from /proc/meminfo),
                     ``net_recv_kbps``, ``net_send_kbps``
===================  =====================================================================

Role fields (totals only grow; ``*_tps`` / ``*_fps`` are per second over the last second):

- gateway: ``sessions_login``, ``sessions_game``, ``sessions_chat``, ``accept_total_login``,
  ``accept_total_game``, ``accept_total_chat``, ``accept_tps_login``, ``accept_tps_game``,
  ``accept_tps_chat``, ``recv_tps``, ``send_tps`` (client packets decoded / encoded);
  ``worker_closes`` (a map like ``drops``: the closes its workers asked for, already in those
  workers' ``drops``; the gateway's log lists both together)
- game: ``session_auth``, ``session_game``, ``auth_fps`` / ``game_fps`` (frames per second of
  the auth loop / the game loop, two loops scheduled apart: see :mod:`workers.host`), ``recv_tps``,
  ``send_tps`` (session items in / out), ``login_tps``, ``pending_keys`` (systemlink keys held)
- chat (the original ChatServer): ``session_auth`` (not logged in yet), ``session_login``
  (logged in: PlayerCount), ``sectors_occupied`` (sectors with at least one player),
  ``sector_max`` (most players in one sector), ``message_tps`` (chat messages received:
  MessageTPS), ``delivery_tps`` (RES_MESSAGE deliveries, one per receiver), ``cast_in_tps`` /
  ``cast_out_tps`` (messages exchanged with the other chat workers), ``update_tps`` (frames:
  Update TPS), ``recv_tps``, ``send_tps``, ``login_tps``, ``pending_keys`` (systemlink keys
  waiting: LoginMap Size), ``key_miss`` (total logins refused for a wrong or missing key:
  SessionKey Miss), ``message_total``, ``delivery_total``, ``message_no_sector`` (messages of
  players in no sector, heard by nobody); and, from the worker runtime it shares with the game
  workers, ``session_game``, ``auth_fps``, ``game_fps``
- auth: ``login_success_tps``, ``login_total``, ``login_latency_min_ms``,
  ``login_latency_avg_ms``, ``login_latency_max_ms`` (of the logins completed in the last second),
  ``game_workers`` (live game workers it knows of)
- broker: ``peers``, ``routed_tps``, ``placed_tps``, ``holders`` (accounts placed on a worker)
- monitor: ``processes`` (live processes it tracks)
- web (the web login): totals ``login_ok``, ``login_invalid`` (wrong password, unknown user,
  no password), ``login_locked``, ``login_rate_limited``, ``login_bad_request``,
  ``login_busy``, ``login_unavailable``, ``lockouts`` (accounts locked); ``accounts_locked``
  (locked now), ``hashing`` (password checks running or queued), ``rate_addresses``,
  ``login_ok_tps``; ``sessions`` are its requests in progress

The monitor adds ``heartbeat_age_s`` (seconds since it last heard from the process) to what it
serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import psutil

from cluster import bus
from cluster.link import BusLink

Sample = dict[str, Any]
#: Seconds between two samples.
SAMPLE_INTERVAL = 1.0


def _meminfo_kb(names: tuple[str, ...]) -> int:
    total = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                key, _, rest = line.partition(":")
                if key in names:
                    total += int(rest.split()[0])
    except OSError:
        return 0
    return total


class HostSampler:
    """The host's figures of the original's hardware screen, over the last call's interval."""

    NONPAGED = ("SUnreclaim", "KernelStack")

    def __init__(self) -> None:
        psutil.cpu_percent(None)
        self._net = psutil.net_io_counters()
        self._at = time.monotonic()

    def sample(self) -> dict[str, float]:
        now = time.monotonic()
        net = psutil.net_io_counters()
        elapsed = max(now - self._at, 1e-6)
        recv = (net.bytes_recv - self._net.bytes_recv) / 1024 / elapsed
        sent = (net.bytes_sent - self._net.bytes_sent) / 1024 / elapsed
        self._net, self._at = net, now
        return {
            "cpu_total": psutil.cpu_percent(None),
            "available_mb": psutil.virtual_memory().available / 2**20,
            "nonpaged_mb": _meminfo_kb(self.NONPAGED) / 1024,
            "net_recv_kbps": recv,
            "net_send_kbps": sent,
        }


class ProcessSampler:
    """Builds this process's sample: the common fields plus what `collect()` returns (the role
    fields, ``sessions``, ``packet_pool`` and ``drops``)."""

    def __init__(self, identity: str, role: str, collect: Callable[[], dict[str, Any]]) -> None:
        self.identity = identity
        self.role = role
        self.collect = collect
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        self._host = HostSampler()

    def _memory_mb(self) -> float:
        try:
            return self._process.memory_full_info().uss / 2**20
        except (psutil.AccessDenied, AttributeError):
            return self._process.memory_info().rss / 2**20

    def sample(self) -> Sample:
        sample: Sample = {
            "id": self.identity,
            "role": self.role,
            "host": self.host,
            "pid": self.pid,
            "time": time.time(),
            "cpu_percent": self._process.cpu_percent(None),
            "memory_mb": self._memory_mb(),
            "packet_pool": 0,
            "sessions": 0,
        }
        sample.update(self.collect())
        sample["hw"] = self._host.sample()
        return sample


class Rates:
    """Per-second rates of growing totals, between two calls of :meth:`update` (the first call
    measures from creation, when every total is taken to be 0)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._at = time.monotonic()

    def update(self, totals: dict[str, float]) -> dict[str, float]:
        now = time.monotonic()
        elapsed = max(now - self._at, 1e-6)
        rates = {name: (value - self._last.get(name, 0.0)) / elapsed for name, value in
                 totals.items()}  # fmt: skip
        self._last, self._at = dict(totals), now
        return rates


class Reporter:
    """Sends this process's sample over the bus every second (STATS) and logs a one-line
    summary of `log_keys` every `log_interval` seconds (the first after about a second)."""

    def __init__(
        self,
        link: BusLink,
        sampler: ProcessSampler,
        log_keys: tuple[str, ...],
        logger: logging.Logger,
        log_interval: float = 10.0,
    ) -> None:
        self.link = link
        self.sampler = sampler
        self.log_keys = log_keys
        self.logger = logger
        self.log_interval = log_interval
        self.latest: Sample | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stats-reporter")

    def stop(self, final: bool = False) -> None:
        """Stop sampling; with `final`, send one last sample first (so counters reached after
        the last tick, e.g. a stopping gateway's accepts, are not lost to the monitor)."""
        if self._task is not None:
            self._task.cancel()
        if final and self.link.registered.is_set():
            self.link.send([bus.STATS, bus.pack_info(self.sampler.sample())])

    async def _run(self) -> None:
        next_log = time.monotonic() + 1.5
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            sample = self.latest = self.sampler.sample()
            if self.link.registered.is_set():
                self.link.send([bus.STATS, bus.pack_info(sample)])
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + self.log_interval
                self.logger.info(
                    " ".join(f"{key}={sample.get(key, 0):.0f}" for key in self.log_keys)
                )
