"""Prometheus text exposition of the processes' 1-second samples (schema: :mod:`cluster.stats`).

:func:`exposition` turns the live samples into one scrape that ``promtool check metrics`` passes:

- every known sample field is exported as its row of :data:`FIELDS` says (family name, type,
  unit scale, HELP), with the labels ``{role, host, process}`` (``process`` is the sample's
  ``id``) and the row's own constant labels (the gateway's per-port fields are one family with a
  ``port`` label, the web login's results one family with a ``result`` label);
- ``hw`` becomes ``cluster_host_*{host}`` by :data:`HOST_FIELDS`, one series per host (its
  newest sample by ``time``);
- ``drops`` becomes the counter ``cluster_drops_total{role, host, process, reason}``;
- ``cluster_up{role, host, process}`` = 1 and ``cluster_sample_age_seconds{...}`` (now minus the
  sample's ``time``) for every process.

Naming: base units (memory in bytes, latencies and ages in seconds, network in bytes per second),
every count that only grows is a counter ending in ``_total``, no gauge ends in ``_total``. CPU
stays in percent (``*_cpu_percent``): a process's figure is % of one core and goes past 100 on
more than one, as the original's CPU figures and the console screens show it, so a 0..1 ratio
would mislead. ``*_tps`` / ``*_fps`` gauges are per second over the last second (the original's
TPS and FPS figures); for rates over longer windows use ``rate()`` of the counters.

A numeric field not in the table (an app may add its own) is still exported, unscaled, under a
lint-safe name (:func:`metric_name`): a counter when its name ends in ``_total``, else a gauge;
never under a name of the table. Bools, strings, nested maps other than ``drops`` / ``hw``,
numbers too large for a float, and counters that are negative or not finite are skipped; odd
samples never raise. Pure: no registry is global, nothing is served.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "FIELDS", "HOST_FIELDS", "Field", "exposition", "metric_name"]

#: The Content-Type of :func:`exposition`'s bytes (prometheus_client's text format).
CONTENT_TYPE = CONTENT_TYPE_LATEST

PREFIX = "cluster_"
HOST_PREFIX = PREFIX + "host_"
PROCESS_LABELS = ("role", "host", "process")
#: Top-level fields that are not figures (or are exported otherwise).
SKIPPED = frozenset({"time", "pid", "id", "role", "host", "drops", "hw"})

Kind = Literal["gauge", "counter"]
MB = float(2**20)
KB = 1024.0
MS = 0.001


@dataclass(frozen=True)
class Field:
    """How one sample field is exported: family `name` (a counter's ends in ``_total``), `kind`,
    `help`, the factor from the field's unit to the base unit, and constant labels."""

    name: str
    kind: Kind
    help: str
    scale: float = 1.0
    labels: tuple[tuple[str, str], ...] = ()


def _gauge(name: str, help_text: str, scale: float = 1.0, **labels: str) -> Field:
    return Field(PREFIX + name, "gauge", help_text, scale, tuple(labels.items()))


def _counter(name: str, help_text: str, **labels: str) -> Field:
    return Field(PREFIX + name, "counter", help_text, 1.0, tuple(labels.items()))


def _per_port(port: str) -> dict[str, Field]:
    return {
        f"sessions_{port}": _gauge("port_sessions", PORT_SESSIONS_HELP, port=port),
        f"accept_total_{port}": _counter("port_accepts_total", PORT_ACCEPTS_HELP, port=port),
        f"accept_tps_{port}": _gauge("port_accept_tps", PORT_ACCEPT_TPS_HELP, port=port),
    }


PORT_SESSIONS_HELP = "Gateway: client sessions on each client port (login, game, chat)."
PORT_ACCEPTS_HELP = "Gateway: connections accepted on each client port since start."
PORT_ACCEPT_TPS_HELP = "Gateway: connections accepted per second on each client port."
WEB_LOGINS_HELP = (
    "Web login: requests answered since start, by result: ok (a session key issued), invalid "
    "(wrong password, unknown user or no password: 401), locked (account locked out: 401), "
    "rate_limited (over the per-address rate: 429), bad_request (malformed body: 400, 413), "
    "busy (too many waiting for a hashing thread: 503), unavailable (database unreachable: 503)."
)
WEB_RESULTS = ("ok", "invalid", "locked", "rate_limited", "bad_request", "busy", "unavailable")

#: Every known per-process sample field -> how it is exported (cluster.stats' meanings).
FIELDS: dict[str, Field] = {
    "cpu_percent": _gauge("cpu_percent", "CPU of this process over the last second, % of one "
                          "core (CPU)."),
    "memory_mb": _gauge("memory_bytes", "Private (unique set) memory of this process in bytes "
                        "(MEMORY_COMMIT).", MB),
    "packet_pool": _gauge("packet_pool", "Messages held in this process's queues right now "
                          "(PACKET_POOL)."),
    "sessions": _gauge("sessions", "Client sessions held (SESSION): gateway all ports, game "
                       "worker all modes, chat worker all sessions, auth worker logins in "
                       "progress, web login requests in progress."),
    **_per_port("login"),
    **_per_port("game"),
    **_per_port("chat"),
    "sessions_paused": _gauge("sessions_paused", "Gateway: client sessions whose socket is not "
                              "being read right now."),
    "inflight": _gauge("inflight", "Gateway: client requests forwarded to workers and not "
                       "answered yet."),
    "recv_tps": _gauge("recv_tps", "Per second: client packets decoded (gateway) or session "
                       "items in (game and chat workers)."),
    "send_tps": _gauge("send_tps", "Per second: client packets encoded (gateway) or session "
                       "items out (game and chat workers)."),
    "session_auth": _gauge("session_auth", "Game worker: sessions in AUTH mode (SESSION_AUTH); "
                           "chat worker: sessions not logged in yet."),
    "session_game": _gauge("session_game", "Game worker: sessions in GAME mode (SESSION_GAME); "
                           "chat worker: logged-in sessions."),
    "auth_fps": _gauge("auth_fps", "Game or chat worker: auth loop iterations per second "
                       "(AUTH_FPS)."),
    "game_fps": _gauge("game_fps", "Game or chat worker: game loop iterations per second "
                       "(GAME_FPS; chat: the update loop)."),
    "login_tps": _gauge("login_tps", "Game or chat worker: logins completed per second."),
    "pending_keys": _gauge("pending_keys", "Game or chat worker: session keys pushed by auth "
                           "workers, not used yet (chat: LoginMap Size)."),
    "session_login": _gauge("session_login", "Chat worker: logged-in sessions (PlayerCount; "
                            "CHAT PLAYER)."),
    "sectors_occupied": _gauge("sectors_occupied", "Chat worker: sectors with at least one of "
                               "its players."),
    "sector_max": _gauge("sector_max", "Chat worker: most of its players in one sector."),
    "message_tps": _gauge("message_tps", "Chat worker: chat messages received per second "
                          "(MessageTPS; CHAT UPDATEMSG_TPS)."),
    "delivery_tps": _gauge("delivery_tps", "Chat worker: chat messages delivered per second, "
                           "one per receiver."),
    "cast_in_tps": _gauge("cast_in_tps", "Chat worker: chat messages received from the other "
                          "chat workers per second."),
    "cast_out_tps": _gauge("cast_out_tps", "Chat worker: chat messages sent to the other chat "
                           "workers per second."),
    "update_tps": _gauge("update_tps", "Chat worker: update loop frames per second (Update "
                         "TPS)."),
    "key_miss": _counter("key_misses_total", "Chat worker: logins refused for a wrong or "
                         "missing session key since start (SessionKey Miss)."),
    "message_total": _counter("messages_total", "Chat worker: chat messages received since "
                              "start."),
    "delivery_total": _counter("deliveries_total", "Chat worker: chat messages delivered since "
                               "start, one per receiver."),
    "message_no_sector": _counter("messages_no_sector_total", "Chat worker: chat messages of "
                                  "players in no sector (heard by nobody) since start."),
    "login_success_tps": _gauge("login_success_tps", "Auth worker: successful logins per "
                                "second (LOGIN_SUCCESS_TPS)."),
    "login_total": _counter("logins_total", "Auth worker: successful logins since start."),
    "login_latency_min_ms": _gauge("login_latency_min_seconds", "Auth worker: fastest login of "
                                   "the last second, in seconds (0 if none).", MS),
    "login_latency_avg_ms": _gauge("login_latency_avg_seconds", "Auth worker: mean login time "
                                   "of the last second, in seconds (0 if none).", MS),
    "login_latency_max_ms": _gauge("login_latency_max_seconds", "Auth worker: slowest login of "
                                   "the last second, in seconds (0 if none).", MS),
    "game_workers": _gauge("game_workers", "Auth worker: game workers it knows."),
    "chat_workers": _gauge("chat_workers", "Auth worker: chat workers it knows."),
    **{f"login_{result}": _counter("web_logins_total", WEB_LOGINS_HELP, result=result)
       for result in WEB_RESULTS},
    "lockouts": _counter("web_lockouts_total", "Web login: accounts locked out (too many wrong "
                         "passwords) since start."),
    "accounts_locked": _gauge("accounts_locked", "Web login: accounts locked out right now."),
    "hashing": _gauge("hashing", "Web login: password checks running or queued for a hashing "
                      "thread right now."),
    "rate_addresses": _gauge("rate_addresses", "Web login: client addresses whose rate bucket "
                             "is not full right now."),
    "login_ok_tps": _gauge("login_ok_tps", "Web login: session keys issued per second."),
    "peers": _gauge("peers", "Broker: registered peers."),
    "routed_tps": _gauge("routed_tps", "Broker: messages routed per second."),
    "placed_tps": _gauge("placed_tps", "Broker: sessions placed on workers per second."),
    "holders": _gauge("holders", "Broker: accounts held by a game worker."),
    "processes": _gauge("processes", "Monitor: live processes it tracks."),
    "tool_logins": _counter("tool_logins_total", "Monitor: logins of the original monitoring "
                            "tool on monitor.tool_port since start."),
    "heartbeat_age_s": _gauge("heartbeat_age_seconds", "Monitor: seconds since this process's "
                              "last sample arrived."),
}  # fmt: skip

#: Every known ``hw`` field -> how it is exported (label ``host`` only).
HOST_FIELDS: dict[str, Field] = {
    "cpu_total": Field(HOST_PREFIX + "cpu_percent", "gauge", "Host CPU usage, % of all cores "
                       "(CPU_TOTAL)."),
    "available_mb": Field(HOST_PREFIX + "memory_available_bytes", "gauge", "Host available "
                          "memory in bytes (AVAILABLE_MEMORY).", MB),
    "nonpaged_mb": Field(HOST_PREFIX + "memory_nonpaged_bytes", "gauge", "Host non-swappable "
                         "kernel memory in bytes: SUnreclaim + KernelStack (NONPAGED_MEMORY).",
                         MB),
    "net_recv_kbps": Field(HOST_PREFIX + "network_receive_bytes_per_second", "gauge", "Host "
                           "network receive rate in bytes per second (NETWORK_RECV).", KB),
    "net_send_kbps": Field(HOST_PREFIX + "network_transmit_bytes_per_second", "gauge", "Host "
                           "network send rate in bytes per second (NETWORK_SEND).", KB),
}  # fmt: skip

DROPS = Field(PREFIX + "drops_total", "counter", "Client connections closed, by reason, since "
              "the process started.")  # fmt: skip
UP = Field(PREFIX + "up", "gauge", "1 for every process with a live sample.")
AGE = Field(PREFIX + "sample_age_seconds", "gauge", "Seconds between the sample's time and "
            "this exposition.")  # fmt: skip


def family_key(name: str) -> str:
    """The name a family is known by whatever its type: a counter's without ``_total``, so a
    gauge ``x`` and a counter ``x_total`` count as the same name."""
    return name.removesuffix("_total")


#: Family names of the table and of this module, never taken by a field not in the table.
RESERVED = frozenset(
    family_key(f.name) for f in (*FIELDS.values(), *HOST_FIELDS.values(), DROPS, UP, AGE)
)

# -- names for fields not in the table ------------------------------------------------------------

_INVALID = re.compile(r"[^a-z0-9_]")
# What `promtool check metrics` (client_golang's promlint) refuses as a part of a name:
# abbreviated units, units that are not base units, prefixed units and metric types.
_ABBREVIATIONS = {"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"}
_UNITS = {"amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres",
          "seconds", "volts"}  # fmt: skip
_NON_BASE_UNITS = {"minutes", "hours", "days", "weeks", "kelvins", "fahrenheit", "rankine",
                   "inches", "yards", "miles", "bits", "calories", "pounds", "ounces"}  # fmt: skip
_UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto",
                  "kilo", "kibi", "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta",
                  "pebi")  # fmt: skip
_TYPES = {"counter", "gauge", "histogram", "gaugehistogram", "summary", "untyped", "unknown",
          "info", "stateset"}  # fmt: skip
_RESERVED_SUFFIXES = {"count", "sum", "bucket", "created"}


def _refused(part: str, last: bool) -> bool:
    if part in _ABBREVIATIONS or part in _NON_BASE_UNITS or part in _TYPES:
        return True
    if last and part in _RESERVED_SUFFIXES:
        return True
    units = _UNITS | _NON_BASE_UNITS
    return any(part.startswith(p) and part.removeprefix(p) in units for p in _UNIT_PREFIXES)


def metric_name(field: Any, prefix: str = PREFIX) -> str:
    """A name for a field not in the table that promtool accepts: `prefix` + the field in
    lower case, every run of characters outside ``[a-z0-9]`` one ``_``; a word promtool refuses
    (``ms``, ``minutes``, ``kilobytes``, ``gauge``, a trailing ``count``, ...) is joined to the
    word before it (``latency_ms`` -> ``cluster_latencyms``), a first one to the word after it,
    a lone one gets ``field`` in front (``ms`` -> ``cluster_fieldms``). A final ``_total`` is
    kept (``counter_total`` -> ``cluster_fieldcounter_total``)."""
    words = [w for w in _INVALID.sub("_", str(field).lower()).split("_") if w] or ["unnamed"]
    counter = len(words) > 1 and words[-1] == "total"
    if counter:
        words.pop()  # a counter's ``_total`` stays as it is
    refused = _first_refused(words)
    while refused is not None:
        if refused > 0:
            words[refused - 1 : refused + 1] = [words[refused - 1] + words[refused]]
        elif len(words) > 1:
            words[0:2] = [words[0] + words[1]]
        else:
            words = ["field" + words[0]]  # "field..." is never refused
        refused = _first_refused(words)
    return prefix + "_".join(words) + ("_total" if counter else "")


def _first_refused(words: list[str]) -> int | None:
    last = len(words) - 1
    return next((i for i, word in enumerate(words) if _refused(word, i == last)), None)


def _unknown(field: Any, prefix: str, what: str) -> Field | None:
    """The Field of a numeric field not in the table, or None when its name is the table's."""
    name = metric_name(field, prefix)
    if family_key(name) in RESERVED:
        return None
    kind: Kind = "counter" if name.endswith("_total") else "gauge"
    text = _text(repr(field))[:200]
    help_text = f"{what} {text}, not in cluster.metrics' table: exported as sent (a {kind})."
    return Field(name, kind, help_text)


# -- values and labels ----------------------------------------------------------------------------


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for ints and floats; a bool is not a number here."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: Any) -> float | None:
    """`value` as a float, or None when it is not a number (a bool, a string, an int too large
    for a float)."""
    if not is_number(value):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _text(value: str) -> str:
    """`value` with what UTF-8 cannot encode (lone surrogates) replaced."""
    return value.encode("utf-8", "replace").decode("utf-8")


def label(value: Any, default: str = "unknown") -> str:
    """A label value: bytes decoded, missing or empty values as `default`."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "" if value is None else _text(str(value))
    return text or default


def sample_time(sample: Mapping[str, Any]) -> float:
    """The sample's ``time``, or -inf when it has none (so it loses every newest-wins)."""
    value = number(sample.get("time"))
    return value if value is not None and not math.isnan(value) else float("-inf")


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


# -- families -------------------------------------------------------------------------------------

Series = dict[tuple[str, ...], float]


class _Families:
    """Families being filled, by :func:`family_key`: (Field, label names, series). A name keeps
    the type and label names it was first added with (a later field that differs is dropped),
    and the first value of a series wins, so no name or series is ever exposed twice."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[Field, tuple[str, ...], Series]] = {}

    def add(self, field: Field, labels: dict[str, str], raw: Any) -> None:
        value = number(raw)
        if value is None:
            return
        value *= field.scale
        if field.kind == "counter" and not (math.isfinite(value) and value >= 0):
            return
        labels = {**labels, **dict(field.labels)}
        family = self.families.setdefault(family_key(field.name), (field, tuple(labels), {}))
        if (family[0].name, family[0].kind, family[1]) == (field.name, field.kind, tuple(labels)):
            family[2].setdefault(tuple(labels.values()), value)

    def metrics(self) -> Iterator[Metric]:
        for field, names, series in (self.families[k] for k in sorted(self.families)):
            maker = CounterMetricFamily if field.kind == "counter" else GaugeMetricFamily
            family = maker(field.name, field.help, labels=list(names))
            for values, value in series.items():
                family.add_metric(list(values), value)
            yield family


def _add_process(families: _Families, sample: Mapping[str, Any], now: float) -> None:
    """The per-process families of one sample: its numeric fields, drops, up and age."""
    labels = dict(zip(PROCESS_LABELS, process_labels(sample), strict=True))
    families.add(UP, labels, 1)
    at = number(sample.get("time"))
    if at is not None and math.isfinite(at):
        families.add(AGE, labels, now - at)
    drops = sample.get("drops")
    if isinstance(drops, Mapping):
        for reason, count in drops.items():
            families.add(DROPS, {**labels, "reason": label(reason)}, count)
    for name, value in sample.items():
        if name in SKIPPED or number(value) is None:
            continue
        field = FIELDS.get(name) if isinstance(name, str) else None
        field = field or _unknown(name, PREFIX, "Sample field")
        if field is not None:
            families.add(field, labels, value)


def _add_hosts(families: _Families, samples: Iterable[Mapping[str, Any]]) -> None:
    """``cluster_host_*`` from the newest sample with an ``hw`` map of each host."""
    with_hw = [s for s in samples if isinstance(s.get("hw"), Mapping)]
    for sample in newest_by(with_hw, lambda s: label(s.get("host"))):
        host = {"host": label(sample.get("host"))}
        for name, value in sample["hw"].items():
            if number(value) is None:
                continue
            field = HOST_FIELDS.get(name) if isinstance(name, str) else None
            field = field or _unknown(name, HOST_PREFIX, "Host figure")
            if field is not None:
                families.add(field, host, value)


class SamplesCollector(Collector):
    """A collector of a fixed list of samples, as of Unix time `now`."""

    def __init__(self, samples: Iterable[Mapping[str, Any]], now: float) -> None:
        self.samples = [s for s in samples if isinstance(s, Mapping)]
        self.now = now

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        # hosts first: a sample field named like a host family then has the wrong label names
        # and is dropped, instead of the host figure
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
