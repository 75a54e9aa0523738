"""The one place where configuration is read, defaulted and validated.

A cluster is configured by one TOML file (every key has a default) and by environment variables
``CLUSTER_<SECTION>_<KEY>`` that override single keys. :func:`load` returns a frozen
:class:`Config`; the rest of the code receives that object and never reads the file or the
environment itself. Any problem raises :class:`ConfigError` whose message names the key
(``section.key``) and the problem in one line; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LINK_MODES = ("systemlink", "non-systemlink")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_ROTATIONS = ("daily", "size")
#: CS_MONITOR_TOOL_REQ_LOGIN carries the tool's key as char[32].
TOOL_KEY_BYTES = 32
WHITEIP_MODES = ("off", "enforce")
BUS_SCHEMES = ("tcp://", "ipc://")
ENV_PREFIX = "CLUSTER_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def _port(default: int) -> Any:
    return field(default=default, metadata={"range": (1, 65535)})


def _ranged(default: float, low: float, high: float | None = None) -> Any:
    return field(default=default, metadata={"range": (low, high)})


def _choice(default: str, choices: tuple[str, ...]) -> Any:
    return field(default=default, metadata={"choices": choices})


@dataclass(frozen=True)
class ClusterSection:
    """``[cluster]``: the switches that shape the whole cluster."""

    link_mode: str = _choice("systemlink", LINK_MODES)
    data_dir: str = "cluster-data"
    log_level: str = _choice("info", LOG_LEVELS)
    log_dir: str = ""  # also write each process's log to <log_dir>/<role>.log; "" = stderr only
    log_rotate: str = _choice("daily", LOG_ROTATIONS)  # start a new log file each day, or by size
    log_max_bytes: int = _ranged(10 * 2**20, 4096, 2**40)  # log_rotate = "size": bytes per file
    log_keep: int = _ranged(14, 0, 100_000)  # rotated files kept per role (0 = keep every file)


@dataclass(frozen=True)
class GatewaySection:
    """``[gateway]``: the TCP front that clients connect to."""

    host: str = "127.0.0.1"
    public_host: str = ""  # address given to clients in RES_LOGIN; "" means `host`
    login_port: int = _port(8091)
    game_port: int = _port(12211)
    chat_port: int = _port(50000)  # the chat port (the original ChatServer's), when chat.enabled
    max_sessions: int = _ranged(15000, 1, 1_000_000)
    heartbeat_timeout: float = _ranged(40.0, 0)  # seconds of client silence; 0 = off
    reply_timeout: float = _ranged(10.0, 0.1)  # a forwarded login must be answered by then
    login_timeout: float = _ranged(10.0, 0.1)  # either port: the login must arrive by then
    whiteip: str = _choice("off", WHITEIP_MODES)  # "enforce": only accountdb.whiteip may connect
    whiteip_refresh: float = _ranged(10.0, 0.1)  # seconds between reloads of the allow-list
    max_outbound: int = _ranged(1_048_576, 1024)  # bytes queued to a client before it is dropped
    login_rate: float = _ranged(0.0, 0)  # login requests per second per client address; 0 = off
    max_inflight: int = _ranged(256, 1, 65536)  # requests one session may have unanswered
    #: the same while the gateway is congested (2 x max_inflight unanswered in all); 0 = no cap
    fair_inflight: int = _ranged(32, 0, 65536)
    stall_timeout: float = _ranged(10.0, 0.1)  # seconds a client may leave its replies unread
    max_per_address: int = _ranged(0, 0, 1_000_000)  # connections per client address; 0 = off
    data_bind: str = ""  # the data port workers connect to; "" = this host's bus address, any port


@dataclass(frozen=True)
class BrokerSection:
    """``[broker]``: the ZeroMQ ROUTER every gateway and worker connects to."""

    bind: str = "tcp://127.0.0.1:5555"
    endpoint: str = ""  # what the other processes connect to; "" means `bind`
    heartbeat_interval: float = _ranged(1.0, 0.05, 60)
    heartbeat_liveness: int = _ranged(3, 1, 100)


@dataclass(frozen=True)
class WorkersSection:
    """``[workers]``: how many worker processes `cluster up` starts on this host."""

    auth: int = _ranged(2, 0, 256)
    game: int = _ranged(2, 0, 256)
    chat: int = _ranged(1, 0, 256)  # started only when chat.enabled


@dataclass(frozen=True)
class AuthSection:
    """``[auth]``: the auth (login) workers."""

    link_timeout: float = _ranged(5.0, 0.05, 120)  # systemlink: wait this long for the game ACK
    max_inflight: int = _ranged(1000, 1, 1_000_000)  # logins one auth worker works on at once
    reconcile_interval: float = _ranged(30.0, 0.1)  # seconds between dead-owner status checks
    key_ttl: int = _ranged(600, 0, 10 * 365 * 86400)  # life of a web-issued key (s); 0 = forever
    #: accounts below this AccountNo log in with any key (the original's dummies); 0 = off
    dummy_accounts_below: int = _ranged(0, 0, 2**62)


@dataclass(frozen=True)
class GameSection:
    """``[game]``: the game (echo) workers."""

    verify_key: bool = True
    version: int = _ranged(1, -(2**31), 2**31 - 1)
    pending_key_ttl: float = _ranged(60.0, 0.1)  # systemlink: a pushed key's lifetime
    frame_interval: float = _ranged(0.02, 0.001, 1.0)  # longest pause between two loop frames
    max_inbox: int = _ranged(100_000, 100, 100_000_000)  # items queued before reading pauses
    app: str = "workers.apps.echo"  # the module of the app the game workers run (its game logic)


@dataclass(frozen=True)
class ChatSection:
    """``[chat]``: the chat port and the chat workers (the original set's ChatServer)."""

    enabled: bool = True  # gateways open the chat port; logins need a chat worker (NOSERVER)
    app: str = "workers.apps.chat"  # the module of the app chat workers run
    #: messages per second one player may say (burst: as many); more closes it: chat_flood
    message_rate: float = _ranged(50.0, 0)  # 0 = no limit
    pending_key_ttl: float = _ranged(60.0, 0.1)  # systemlink: a pushed key's lifetime
    frame_interval: float = _ranged(0.02, 0.001, 1.0)  # longest pause between two loop frames
    max_inbox: int = _ranged(100_000, 100, 100_000_000)  # items queued before reading pauses


@dataclass(frozen=True)
class WebSection:
    """``[web]``: the web login (``POST /v1/login``: ID and password -> a session key)."""

    enabled: bool = True  # `cluster up` starts the web role
    host: str = "127.0.0.1"
    port: int = _port(8080)
    #: argon2id cost of the password hashes `cluster accounts` makes (OWASP's first profile)
    hash_time_cost: int = _ranged(2, 1, 100)
    hash_memory_kib: int = _ranged(19456, 8, 4_194_304)
    hash_parallelism: int = _ranged(1, 1, 64)
    hash_threads: int = _ranged(2, 1, 256)  # password checks run at once (a thread pool)
    max_waiting: int = _ranged(256, 0, 1_000_000)  # logins queued for a hash thread; more: 503
    address_rate: float = _ranged(10.0, 0)  # attempts per second per client address; 0 = off
    address_burst: int = _ranged(20, 1, 1_000_000)  # ... and as many at once
    lockout_failures: int = _ranged(5, 0, 1_000_000)  # wrong passwords that lock; 0 = off
    lockout_window: float = _ranged(900.0, 1)  # ... within this many seconds
    lockout_duration: float = _ranged(900.0, 1)  # seconds the account's web login stays locked


@dataclass(frozen=True)
class MonitorSection:
    """``[monitor]``: the process that gathers every process's counters."""

    db_interval: float = _ranged(600.0, 1)  # seconds between status_server rows (original: 600)
    metrics_host: str = "127.0.0.1"  # where /metrics (Prometheus text) is served
    metrics_port: int = _port(9108)
    summary_interval: float = _ranged(10.0, 0.5)  # `cluster up` off a terminal: log line period
    history_seconds: int = _ranged(3600, 10, 7 * 86400)  # dashboard: seconds of samples in memory
    tool_host: str = "127.0.0.1"  # where the original MonitoringClient tool connects
    tool_port: int = _port(12212)
    tool_key: str = ""  # the tool's 32-byte login key; "" = the tool port stays closed


@dataclass(frozen=True)
class SecuritySection:
    """``[security]``: who may join the bus (see cluster.security)."""

    curve: bool = False  # CurveZMQ on the bus: encrypted, only holders of the cluster's keys
    keys_dir: str = "keys"  # where `cluster keys generate` put the key pairs
    allow_from: str = ""  # addresses/networks the broker accepts peers from ("" = any)


@dataclass(frozen=True)
class ProtocolSection:
    """``[protocol]``: the client wire protocol's packet code and XOR keys (docs/protocol.md)."""

    code: int = _ranged(119, 0, 255)
    key1: int = _ranged(50, 0, 255)
    key2: int = _ranged(132, 0, 255)


@dataclass(frozen=True)
class DbSection:
    """``[db]``: where accounts and monitoring rows live."""

    url: str = ""  # "" means sqlite:///<data_dir>/db
    pool_size: int = _ranged(10, 1, 1000)
    prefix: str = ""  # MySQL/MariaDB: databases are <prefix>accountdb and <prefix>status_server
    timeout: float = _ranged(5.0, 0.1, 600)  # seconds for one connect or query before giving up


@dataclass(frozen=True)
class Config:
    """A whole, validated configuration. Derived defaults (public_host, endpoint, db url) are
    already resolved, so readers never re-apply defaulting rules."""

    cluster: ClusterSection = field(default_factory=ClusterSection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    workers: WorkersSection = field(default_factory=WorkersSection)
    auth: AuthSection = field(default_factory=AuthSection)
    game: GameSection = field(default_factory=GameSection)
    chat: ChatSection = field(default_factory=ChatSection)
    web: WebSection = field(default_factory=WebSection)
    monitor: MonitorSection = field(default_factory=MonitorSection)
    security: SecuritySection = field(default_factory=SecuritySection)
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    db: DbSection = field(default_factory=DbSection)
    source: str = ""  # the file it was read from ("" for defaults only)


SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[f.type]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}
_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def load(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Read `path` (TOML; None means defaults only), apply ``CLUSTER_<SECTION>_<KEY>`` overrides
    from `env` (default: ``os.environ``), validate, and return the resolved :class:`Config`.

    Raises :class:`ConfigError` naming the first bad key."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: must be a [section] table")
    overrides = _env_overrides(os.environ if env is None else env)
    for name, cls in SECTIONS.items():
        values = dict(raw.get(name, {}))
        values.update(overrides.get(name, {}))
        sections[name] = _build_section(name, cls, values)
    return _resolve(Config(**sections, source=str(path or "")))


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            continue  # CLUSTER_* variables of other tools are not ours to judge
        key = rest[len(section) + 1 :]
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        if key not in fields:
            raise ConfigError(f"{var}: unknown key {section}.{key}")
        out.setdefault(section, {})[key] = _parse_env(f"{section}.{key}", fields[key], text)
    return out


def _parse_env(key: str, f: dataclasses.Field[Any], text: str) -> Any:
    kind = _TYPES[str(f.type)]
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        return kind(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} (from environment) is not {_NOUNS[kind]}") from None


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        full = f"{name}.{key}"
        if key not in fields:
            raise ConfigError(f"{full}: unknown key (known: {', '.join(fields)})")
        f = fields[key]
        values[key] = _check(full, f, value)
    return cls(**values)


def _check(full: str, f: dataclasses.Field[Any], value: Any) -> Any:
    kind = _TYPES[str(f.type)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{full}: expected {_NOUNS[kind]}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):  # value is a `kind` by now
        raise ConfigError(f"{full}: {value} is not a finite number")
    if "range" in f.metadata:
        low, high = f.metadata["range"]
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise ConfigError(f"{full}: {value} is out of range {bounds}")
    if "choices" in f.metadata and value not in f.metadata["choices"]:
        options = " | ".join(repr(c) for c in f.metadata["choices"])
        raise ConfigError(f"{full}: {value!r} is not one of {options}")
    return value


#: How a message names the values a key takes.
_NOUNS: dict[type, str] = {int: "an integer", float: "a number", bool: "true or false", str: "text"}
#: RES_LOGIN carries the game (and chat) server address as WCHAR[16].
PUBLIC_HOST_UNITS = 16


def _resolve(config: Config) -> Config:
    gateway, broker, db = config.gateway, config.broker, config.db
    if not gateway.host:
        raise ConfigError("gateway.host: must not be empty")
    public = gateway.public_host or gateway.host
    if len(public.encode("utf-16-le")) // 2 > PUBLIC_HOST_UNITS:
        key = "gateway.public_host" if gateway.public_host else "gateway.host (as public_host)"
        raise ConfigError(
            f"{key}: {public!r} is longer than the {PUBLIC_HOST_UNITS} UTF-16 units RES_LOGIN "
            "holds for the game server address"
        )
    if gateway.login_port == gateway.game_port:
        raise ConfigError(f"gateway.game_port: {gateway.game_port} is also the login_port")
    if config.chat.enabled and gateway.chat_port in (gateway.login_port, gateway.game_port):
        other = "login_port" if gateway.chat_port == gateway.login_port else "game_port"
        raise ConfigError(f"gateway.chat_port: {gateway.chat_port} is also the {other}")
    tool_key = config.monitor.tool_key
    if tool_key and (not tool_key.isascii() or len(tool_key) != TOOL_KEY_BYTES):
        raise ConfigError(
            f"monitor.tool_key: must be {TOOL_KEY_BYTES} ASCII characters (the original tool "
            f"sends char[{TOOL_KEY_BYTES}]), got {len(tool_key)}"
        )
    if tool_key and config.monitor.tool_port == config.monitor.metrics_port and (
        config.monitor.tool_host == config.monitor.metrics_host
    ):
        raise ConfigError(f"monitor.tool_port: {config.monitor.tool_port} is also the metrics_port")
    web = config.web
    if not web.host:
        raise ConfigError("web.host: must not be empty")
    gateway_ports = {"login_port": gateway.login_port, "game_port": gateway.game_port}
    if config.chat.enabled:
        gateway_ports["chat_port"] = gateway.chat_port
    for name, port in gateway_ports.items():
        if web.enabled and web.host == gateway.host and web.port == port:
            raise ConfigError(f"web.port: {web.port} is also the gateway.{name}")
    for key, module in (("game.app", config.game.app), ("chat.app", config.chat.app)):
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", module):
            raise ConfigError(f"{key}: {module!r} is not a module name (like workers.apps.echo)")
    for key, url in (
        ("broker.bind", broker.bind), ("broker.endpoint", broker.endpoint),
        ("gateway.data_bind", gateway.data_bind),
    ):  # fmt: skip
        if url and not url.startswith(BUS_SCHEMES):
            raise ConfigError(f"{key}: {url!r} must start with tcp:// or ipc://")
    if not broker.bind:
        raise ConfigError("broker.bind: must not be empty")
    for entry in (e.strip() for e in config.security.allow_from.split(",")):
        try:
            if entry:
                ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"security.allow_from: {entry!r} is not an address or network"
            ) from None
    if db.prefix and not db.prefix.replace("_", "").isalnum():
        raise ConfigError(f"db.prefix: {db.prefix!r} may hold only letters, digits and _")
    url = db.url or f"sqlite:///{Path(config.cluster.data_dir) / 'db'}"
    if not url.startswith(("sqlite:///", "mysql://")):
        raise ConfigError(f"db.url: {url!r} must be sqlite:///DIR or mysql://user:pass@host:port")
    return dataclasses.replace(
        config,
        gateway=dataclasses.replace(gateway, public_host=gateway.public_host or gateway.host),
        broker=dataclasses.replace(broker, endpoint=broker.endpoint or broker.bind),
        db=dataclasses.replace(db, url=url),
    )


def describe() -> list[tuple[str, str, str]]:
    """Every key as ``(section.key, type, default)``, for help text and the README table."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{name}.{f.name}", str(f.type), repr(f.default)))
    return rows


#: Shown as this by ``to_toml(hide_secrets=True)`` (a tool key is not a valid one).
HIDDEN = "(hidden)"


def to_toml(config: Config, hide_secrets: bool = False) -> str:
    """The configuration as a TOML file that :func:`load` reads back to the same values.

    With `hide_secrets`, ``db.url``'s password is shown as ``***`` and ``monitor.tool_key`` as
    :data:`HIDDEN` (what ``cluster config`` prints unless asked with ``--show-secrets``), and a
    first comment line says so: that output is for reading, not for loading back."""
    from cluster.db.url import redact

    hidden = {}
    if hide_secrets:
        if redact(config.db.url) != config.db.url:
            hidden[("db", "url")] = redact(config.db.url)
        if config.monitor.tool_key:
            hidden[("monitor", "tool_key")] = HIDDEN
    lines = []
    if hidden:
        names = ", ".join(f"{section}.{key}" for section, key in hidden)
        lines.append(f"# secrets hidden ({names}); cluster config --show-secrets prints them")
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for key, value in vars(getattr(config, section)).items():
            value = hidden.get((section, key), value)
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


#: The keys every process of one cluster must share, whatever host it runs on: the link mode, the
#: heartbeat rules, the client protocol's code and keys, the key checks and the apps. Each peer
#: sends its values in READY; the broker refuses a peer whose values differ from its own (REFUSED,
#: naming the keys), and that peer exits with code 2 instead of failing its clients one by one.
AGREED_KEYS = (
    "cluster.link_mode",
    "broker.heartbeat_interval",
    "broker.heartbeat_liveness",
    "protocol.code",
    "protocol.key1",
    "protocol.key2",
    "game.verify_key",
    "game.version",
    "game.app",
    "chat.enabled",
    "chat.app",
    "auth.dummy_accounts_below",
)


def agreed_settings(config: Config) -> dict[str, Any]:
    """`config`'s values of :data:`AGREED_KEYS`, as READY carries them."""
    out = {}
    for key in AGREED_KEYS:
        section, name = key.split(".")
        out[key] = getattr(getattr(config, section), name)
    return out


def settings_mismatch(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> str:
    """The keys on which a peer's settings (`theirs`) differ from the broker's (`ours`), as one
    line (``""`` when they agree). A key only one side knows (another release) is not compared."""
    differ = [
        f"{key} is {theirs[key]!r} in the peer's config but {value!r} in the broker's"
        for key, value in ours.items()
        if key in theirs and theirs[key] != value
    ]
    return "; ".join(differ)
