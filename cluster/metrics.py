"""Prometheus text exposition of the processes' 1-second samples (schema: :mod:`cluster.stats`).

:func:`exposition` turns the live samples into one scrape, every family a gauge:

- ``cluster_<field>{role, host, process}`` for every numeric top-level field of a sample but
  ``time`` and ``pid`` (``process`` is the sample's ``id``); totals (``*_total*`` fields) stay
  gauges named as the field is;
- ``cluster_drops{role, host, process, reason}`` from the ``drops`` map;
- ``cluster_host_<field>{host}`` from ``hw``, one series per host (its newest sample by ``time``);
- ``cluster_up{role, host, process}`` = 1 and ``cluster_sample_age_seconds{...}`` (now minus the
  sample's ``time``) for every process.

Bools, strings, nested maps other than ``drops`` / ``hw`` and missing fields are skipped; field
names are sanitized into valid metric names. Pure: no registry is global, nothing is served.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeGuard

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "HELP", "HOST_HELP", "exposition", "metric_name"]

#: The Content-Type of :func:`exposition`'s bytes (prometheus_client's text format).
CONTENT_TYPE = CONTENT_TYPE_LATEST

PREFIX = "cluster_"
PROCESS_LABELS = ("role", "host", "process")
#: Top-level fields that are not gauges (or are exposed otherwise).
SKIPPED = frozenset({"time", "pid", "id", "role", "host", "drops", "hw"})
#: Names of the families made here, never taken by a sample field of the same (sanitized) name.
RESERVED = frozenset({PREFIX + "up", PREFIX + "sample_age_seconds", PREFIX + "drops"})

#: HELP text of the per-process gauges, by sample field (cluster.stats' meanings).
HELP: dict[str, str] = {
    "cpu_percent": "CPU of this process over the last second, % of one core (CPU).",
    "memory_mb": "Private (unique set) memory of this process in MB (MEMORY_COMMIT).",
    "packet_pool": "Messages held in this process's queues right now (PACKET_POOL).",
    "sessions": "Client sessions held (SESSION): gateway all ports, game worker all modes, "
    "chat worker all sessions, auth worker logins in progress, web login requests in progress.",
    "sessions_login": "Gateway: client sessions on the login port.",
    "sessions_game": "Gateway: client sessions on the game port.",
    "sessions_chat": "Gateway: client sessions on the chat port.",
    "accept_total_login": "Gateway: connections accepted on the login port since start.",
    "accept_total_game": "Gateway: connections accepted on the game port since start.",
    "accept_total_chat": "Gateway: connections accepted on the chat port since start.",
    "accept_tps_login": "Gateway: connections accepted per second on the login port.",
    "accept_tps_game": "Gateway: connections accepted per second on the game port.",
    "accept_tps_chat": "Gateway: connections accepted per second on the chat port.",
    "sessions_paused": "Gateway: client sessions whose socket is not being read right now.",
    "inflight": "Gateway: client requests forwarded to workers and not answered yet.",
    "recv_tps": "Per second: client packets decoded (gateway) or session items in (game and "
    "chat workers).",
    "send_tps": "Per second: client packets encoded (gateway) or session items out (game and "
    "chat workers).",
    "session_auth": "Game worker: sessions in AUTH mode (SESSION_AUTH); chat worker: sessions "
    "not logged in yet.",
    "session_game": "Game worker: sessions in GAME mode (SESSION_GAME); chat worker: logged-in "
    "sessions.",
    "auth_fps": "Game or chat worker: auth loop iterations per second (AUTH_FPS).",
    "game_fps": "Game or chat worker: game loop iterations per second (GAME_FPS; chat: the "
    "update loop).",
    "login_tps": "Game or chat worker: logins completed per second.",
    "pending_keys": "Game or chat worker: session keys pushed by auth workers, not used yet "
    "(chat: LoginMap Size).",
    "session_login": "Chat worker: logged-in sessions (PlayerCount; CHAT PLAYER).",
    "sectors_occupied": "Chat worker: sectors with at least one of its players.",
    "sector_max": "Chat worker: most of its players in one sector.",
    "message_tps": "Chat worker: chat messages received per second (MessageTPS; "
    "CHAT UPDATEMSG_TPS).",
    "delivery_tps": "Chat worker: chat messages delivered per second, one per receiver.",
    "cast_in_tps": "Chat worker: chat messages received from the other chat workers per second.",
    "cast_out_tps": "Chat worker: chat messages sent to the other chat workers per second.",
    "update_tps": "Chat worker: update loop frames per second (Update TPS).",
    "key_miss": "Chat worker: logins refused for a wrong or missing session key since start "
    "(SessionKey Miss).",
    "message_total": "Chat worker: chat messages received since start.",
    "delivery_total": "Chat worker: chat messages delivered since start, one per receiver.",
    "message_no_sector": "Chat worker: chat messages of players in no sector (heard by nobody) "
    "since start.",
    "login_success_tps": "Auth worker: successful logins per second (LOGIN_SUCCESS_TPS).",
    "login_total": "Auth worker: successful logins since start.",
    "login_latency_min_ms": "Auth worker: fastest login of the last second, ms (0 if none).",
    "login_latency_avg_ms": "Auth worker: mean login time of the last second, ms (0 if none).",
    "login_latency_max_ms": "Auth worker: slowest login of the last second, ms (0 if none).",
    "game_workers": "Auth worker: game workers it knows.",
    "login_ok": "Web login: logins that issued a session key since start.",
    "login_invalid": "Web login: logins refused for a wrong password, an unknown user or an "
    "account without a password since start (401).",
    "login_locked": "Web login: logins refused because the account is locked out since start "
    "(401, the same answer as a wrong password).",
    "login_rate_limited": "Web login: requests refused for going over the per-address rate "
    "since start (429).",
    "login_bad_request": "Web login: requests refused for a malformed body since start (400, "
    "413).",
    "login_busy": "Web login: logins refused because too many waited for a hashing thread "
    "since start (503).",
    "login_unavailable": "Web login: logins answered 503 because the database could not be "
    "reached since start.",
    "lockouts": "Web login: accounts locked out (too many wrong passwords) since start.",
    "accounts_locked": "Web login: accounts locked out right now.",
    "hashing": "Web login: password checks running or queued for a hashing thread right now.",
    "rate_addresses": "Web login: client addresses whose rate bucket is not full right now.",
    "login_ok_tps": "Web login: session keys issued per second.",
    "peers": "Broker: registered peers.",
    "routed_tps": "Broker: messages routed per second.",
    "placed_tps": "Broker: sessions placed on workers per second.",
    "holders": "Broker: accounts held by a game worker.",
    "processes": "Monitor: live processes it tracks.",
    "heartbeat_age_s": "Monitor: seconds since this process's last sample arrived.",
}
#: HELP text of the per-host gauges, by ``hw`` field.
HOST_HELP: dict[str, str] = {
    "cpu_total": "Host CPU usage, % of all cores (CPU_TOTAL).",
    "available_mb": "Host available memory in MB (AVAILABLE_MEMORY).",
    "nonpaged_mb": "Host non-swappable kernel memory in MB: SUnreclaim + KernelStack "
    "(NONPAGED_MEMORY).",
    "net_recv_kbps": "Host network receive rate in KB/s (NETWORK_RECV).",
    "net_send_kbps": "Host network send rate in KB/s (NETWORK_SEND).",
}
DROPS_HELP = "Client connections closed, by reason, since the process started."
UP_HELP = "1 for every process with a live sample."
AGE_HELP = "Seconds between the sample's time and this exposition."

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(field: Any, prefix: str = PREFIX) -> str:
    """`prefix` + `field` with every character outside ``[a-zA-Z0-9_]`` replaced by ``_``."""
    return prefix + _INVALID.sub("_", str(field))


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for ints and floats; a bool is not a number here."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def label(value: Any, default: str = "unknown") -> str:
    """A label value: bytes decoded, missing or empty values as `default`."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "" if value is None else str(value)
    return text or default


def sample_time(sample: Mapping[str, Any]) -> float:
    """The sample's ``time``, or -inf when it has none (so it loses every newest-wins)."""
    value = sample.get("time")
    return float(value) if is_number(value) else float("-inf")


def process_labels(sample: Mapping[str, Any]) -> tuple[str, str, str]:
    """(role, host, process) of a sample; process is the ``id``, else ``host/pid``."""
    host = label(sample.get("host"))
    process = label(sample.get("id"), f"{host}/{label(sample.get('pid'))}")
    return label(sample.get("role")), host, process


def newest_by(samples: Iterable[Mapping[str, Any]], key: Any) -> list[Mapping[str, Any]]:
    """One sample per ``key(sample)``, the newest by ``time`` (the first one on a tie)."""
    chosen: dict[Any, Mapping[str, Any]] = {}
    for sample in samples:
        k = key(sample)
        if k not in chosen or sample_time(sample) > sample_time(chosen[k]):
            chosen[k] = sample
    return list(chosen.values())


class _Families:
    """Gauge families being filled: name -> (help, label names, {label values: value}). The
    first value for a series wins, so two fields sanitized to one name cannot duplicate it."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}

    def add(self, name: str, help_text: str, labels: dict[str, str], value: float) -> None:
        family = self.families.setdefault(name, (help_text, tuple(labels), {}))
        if family[1] == tuple(labels):
            family[2].setdefault(tuple(labels.values()), float(value))

    def metrics(self) -> Iterator[Metric]:
        for name, (help_text, names, series) in sorted(self.families.items()):
            family = GaugeMetricFamily(name, help_text, labels=list(names))
            for values, value in series.items():
                family.add_metric(list(values), value)
            yield family


def _add_process(families: _Families, sample: Mapping[str, Any], now: float) -> None:
    """The per-process families of one sample: its numeric fields, drops, up and age."""
    labels = dict(zip(PROCESS_LABELS, process_labels(sample), strict=True))
    families.add(PREFIX + "up", UP_HELP, labels, 1)
    if is_number(sample.get("time")):
        families.add(PREFIX + "sample_age_seconds", AGE_HELP, labels, now - sample["time"])
    drops = sample.get("drops")
    if isinstance(drops, Mapping):
        for reason, count in drops.items():
            if is_number(count):
                families.add(PREFIX + "drops", DROPS_HELP, {**labels, "reason": label(reason)},
                             count)  # fmt: skip
    for field, value in sample.items():
        name = metric_name(field)
        if field not in SKIPPED and name not in RESERVED and is_number(value):
            help_text = HELP.get(str(field), f"Sample field {field!r} (see cluster.stats).")
            families.add(name, help_text, labels, value)


def _add_hosts(families: _Families, samples: Iterable[Mapping[str, Any]]) -> None:
    """``cluster_host_*`` from the newest sample with an ``hw`` map of each host."""
    with_hw = [s for s in samples if isinstance(s.get("hw"), Mapping)]
    for sample in newest_by(with_hw, lambda s: label(s.get("host"))):
        host = {"host": label(sample.get("host"))}
        for field, value in sample["hw"].items():
            if is_number(value):
                help_text = HOST_HELP.get(str(field), f"Host figure {field!r} (see cluster.stats).")
                families.add(metric_name(field, PREFIX + "host_"), help_text, host, value)


class SamplesCollector(Collector):
    """A collector of a fixed list of samples, as of Unix time `now`."""

    def __init__(self, samples: Iterable[Mapping[str, Any]], now: float) -> None:
        self.samples = [s for s in samples if isinstance(s, Mapping)]
        self.now = now

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        # hosts first: a sample field sanitized to a host family's name then has the wrong
        # label names and is dropped, instead of the host figure
        processes = newest_by(self.samples, lambda s: process_labels(s)[2])
        _add_hosts(families, processes)
        for sample in processes:
            _add_process(families, sample, self.now)
        yield from families.metrics()


def exposition(samples: Iterable[Mapping[str, Any]]) -> bytes:
    """The Prometheus text (:data:`CONTENT_TYPE`) of `samples`: one series per process (the
    newest sample of each ``id`` by ``time``), ages against ``time.time()`` now. Empty input
    gives empty (valid) output; odd samples never raise."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SamplesCollector(samples, time.time()))
    return generate_latest(registry)
