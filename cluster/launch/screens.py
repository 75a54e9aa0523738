"""Console screens of the whole cluster, as the original servers printed theirs every second.

Pure functions of the processes' 1-second samples (the schema is in :mod:`cluster.stats`): the
caller gets the samples (e.g. from the monitor's STATUS snapshot), clears the terminal and prints
:func:`render_screens` once a second, or logs :func:`summary_line` when not on a terminal.

The screen has these sections, in this order:

1. a header: local time, live processes per role, gone processes;
2. ``HARDWARE``: one column per host (the newest sample of each host that has ``hw``), rows as
   the original MonitoringServer's: HW CPU Usage, HW Available Memory, HW NonPaged Memory,
   Ethernet Recv / Send;
3. ``MonitoringServer``: the rest of the original MonitoringServer's screen, one line per kind
   of server that is on (has a live worker): Login, Chat, Echo, each with the figures the
   original showed for it (only when one is on);
4. ``LoginServer``: the original login server's screen, the auth workers and the gateways' login
   port added up (SessionAll: the clients connected to the login ports of the whole cluster,
   logged in or not, as the original's one login server counted its sessions), then one line per
   auth worker (its logins in flight);
5. ``GameServer``: the original BattleServer's ("Echo Server") screen, the game workers and the
   gateways' game port added up, then one line per game worker;
6. ``ChatServer``: the original ChatServer's screen, the chat workers and the gateways' chat
   port added up, then one line per chat worker (only when there is a chat worker or a
   gateway's chat port has had a connection);
7. ``Drops``: closes by reason, summed over every live sample (only when there are any); each
   close is in one process's ``drops`` only (the one that decided it: a worker's, or the gateway's
   own), so one version-miss login shows as ``version_miss=1``;
8. one ``GONE`` line per process in ``gone``.

Missing or non-numeric values count as 0; a figure that has no source at all (no auth worker
completed a login, no game worker, no host figures) shows as ``-``.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Sample = Mapping[str, Any]

#: Roles in the order the header counts them; unknown roles follow, sorted.
ROLES = ("broker", "gateway", "auth", "game", "chat", "monitor")
#: Width of one ``label : value unit`` cell; as many cells as fit go on one line.
CELL_WIDTH = 48
#: Width of the first column of the per-worker tables (the shortened process id).
ID_WIDTH = 24
_LABEL = 21
_VALUE = 11
_HW_LABEL = 26
_HW_COLUMN = 14

Cell = tuple[str, str, str]  # label, value, unit


# -- numbers ------------------------------------------------------------------------------------


def number(value: Any) -> float:
    """`value` as a float when it is an int or float (a bool is not a number here), else 0.0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def is_number(value: Any) -> bool:
    """True when `value` is an int or float and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def field(sample: Sample, key: str) -> float:
    """``sample[key]`` as a number; 0.0 when missing or not a number."""
    return number(sample.get(key))


def total(samples: Iterable[Sample], key: str) -> float:
    """Sum of `key` over `samples` (missing or non-numeric values count as 0)."""
    return sum(field(sample, key) for sample in samples)


def fmt(value: float | None) -> str:
    """A compact figure: ``-`` for None, whole numbers without decimals, 2 decimals below 10,
    1 below 100, none above, and ``12.3M`` from ten million on."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 10_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value == int(value) or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def span(values: Sequence[float]) -> str:
    """``min - max`` of `values`, or ``-`` when there are none."""
    if not values:
        return "-"
    return f"{fmt(min(values))} - {fmt(max(values))}"


def ago(seconds: float | None) -> str:
    """``12s``, ``3m05s`` or ``2h03m``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


# -- selecting samples --------------------------------------------------------------------------


def role_of(sample: Sample) -> str:
    """The sample's role, ``?`` when it has none."""
    role = sample.get("role")
    return role if isinstance(role, str) and role else "?"


def text_of(value: Any) -> str:
    """A label or id as text (bytes decoded, None as empty)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def latest_per_process(samples: Iterable[Sample]) -> list[Sample]:
    """One sample per ``id``, the newest by ``time`` (the first one on a tie); samples without
    an id are all kept. The order of first appearance is kept."""
    chosen: dict[Any, Sample] = {}
    anonymous: list[Sample] = []
    for sample in samples:
        ident = text_of(sample.get("id"))
        if not ident:
            anonymous.append(sample)
        elif ident not in chosen or field(sample, "time") > field(chosen[ident], "time"):
            chosen[ident] = sample
    return [*chosen.values(), *anonymous]


def of_role(samples: Iterable[Sample], role: str) -> list[Sample]:
    """The samples of one role, sorted by host then id."""
    picked = [s for s in samples if role_of(s) == role]
    return sorted(picked, key=lambda s: (text_of(s.get("host")), text_of(s.get("id"))))


def hosts_hardware(samples: Iterable[Sample]) -> dict[str, Mapping[str, Any]]:
    """Host -> ``hw`` of the newest sample (by ``time``) of that host that has an ``hw`` map,
    sorted by host name."""
    newest: dict[str, Sample] = {}
    for sample in samples:
        if not isinstance(sample.get("hw"), Mapping):
            continue
        host = text_of(sample.get("host")) or "?"
        if host not in newest or field(sample, "time") > field(newest[host], "time"):
            newest[host] = sample
    return {host: newest[host]["hw"] for host in sorted(newest)}


def drops_by_reason(samples: Iterable[Sample]) -> dict[str, float]:
    """Every sample's ``drops`` map added up by reason, sorted by reason."""
    summed: defaultdict[str, float] = defaultdict(float)
    for sample in samples:
        drops = sample.get("drops")
        if isinstance(drops, Mapping):
            for reason, count in drops.items():
                summed[text_of(reason)] += number(count)
    return {reason: summed[reason] for reason in sorted(summed)}


def short_id(sample: Sample, limit: int = ID_WIDTH - 1) -> str:
    """The sample's id without its ``role@`` prefix, the host cut to its first DNS label and
    the random suffix to 4 digits (``host/pid/rand``), at most `limit` characters (the host
    is shortened first). Without an id: ``host/pid``."""
    ident = text_of(sample.get("id"))
    if not ident:
        ident = f"{text_of(sample.get('host')) or '?'}/{text_of(sample.get('pid')) or '?'}"
    _, at, rest = ident.partition("@")
    parts = (rest if at else ident).split("/")
    host, tail = parts[0].split(".")[0], "/".join(parts[1:])
    if len(parts) == 3:
        tail = f"{parts[1]}/{parts[2][:4]}"
    if not tail:
        return host[:limit]
    room = limit - len(tail) - 1
    if room < 1:
        return tail[-limit:]
    return f"{host[:room]}/{tail}"


def login_latency(auth: Sequence[Sample]) -> tuple[float | None, float | None, float | None]:
    """(avg, min, max) login latency in ms over the auth workers' last second.

    Only workers that completed a login (``login_latency_avg_ms`` > 0; a worker with none
    reports zeros) count: min of their mins, max of their maxes, and the average weighted by
    each worker's ``login_success_tps`` (the plain mean of the averages when every TPS is 0).
    None for all three when no worker completed a login."""
    done = [s for s in auth if field(s, "login_latency_avg_ms") > 0]
    if not done:
        return None, None, None
    low = min(field(s, "login_latency_min_ms") for s in done)
    high = max(field(s, "login_latency_max_ms") for s in done)
    weight = total(done, "login_success_tps")
    if weight > 0:
        avg = sum(field(s, "login_latency_avg_ms") * field(s, "login_success_tps") for s in done)
        return avg / weight, low, high
    return total(done, "login_latency_avg_ms") / len(done), low, high


# -- layout -------------------------------------------------------------------------------------


def title(text: str, width: int) -> str:
    """A section title: ``== text ====...`` filled to `width`."""
    head = f"== {text} "
    return head + "=" * max(0, width - len(head))


def cell(label: str, value: str, unit: str = "") -> Cell:
    """One ``label : value unit`` figure of a section."""
    return label, value, unit


def grid(cells: Sequence[Cell], width: int) -> list[str]:
    """The cells in as many :data:`CELL_WIDTH` columns as fit in `width` (at least one)."""
    per_line = max(1, width // CELL_WIDTH)
    texts = [
        f" {label:<{_LABEL}}: {value:>{_VALUE}} {unit}".rstrip() for label, value, unit in cells
    ]
    lines = []
    for start in range(0, len(texts), per_line):
        row = texts[start : start + per_line]
        lines.append("".join(text.ljust(CELL_WIDTH) for text in row).rstrip())
    return lines


def table(header: Sequence[str], rows: Sequence[Sequence[str]], widths: Sequence[int]) -> list[str]:
    """A table indented by one space: the first column left-aligned, the others right-aligned."""

    def line(values: Sequence[str]) -> str:
        first = f" {values[0]:<{widths[0]}}"
        rest = "".join(f"{value:>{w}}" for value, w in zip(values[1:], widths[1:], strict=True))
        return (first + rest).rstrip()

    return [line(header), *(line(row) for row in rows)]


def packed(tokens: Sequence[str], width: int) -> list[str]:
    """`tokens` joined by two spaces, indented by one, wrapped at `width`."""
    lines: list[str] = []
    current = ""
    for token in tokens:
        if current and len(current) + 2 + len(token) > width:
            lines.append(current)
            current = ""
        current = f"{current}  {token}" if current else f" {token}"
    if current:
        lines.append(current)
    return lines


# -- sections -----------------------------------------------------------------------------------


def header(samples: Sequence[Sample], gone: Sequence[Sample], now: float) -> str:
    """Local time, live processes per role (known roles first) and how many are gone."""
    counts = Counter(role_of(s) for s in samples)
    order = [r for r in ROLES if counts[r]] + sorted(r for r in counts if r not in ROLES)
    roles = "  ".join(f"{role} {counts[role]}" for role in order) or "none"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return f"{stamp}  live {len(samples)}: {roles}  |  gone {len(gone)}"


HW_ROWS = (
    ("HW CPU Usage %", "cpu_total"),
    ("HW Available Memory M", "available_mb"),
    ("HW NonPaged Memory M", "nonpaged_mb"),
    ("Ethernet Recv K/s", "net_recv_kbps"),
    ("Ethernet Send K/s", "net_send_kbps"),
)


def hardware_section(samples: Sequence[Sample], width: int) -> list[str]:
    """The MonitoringServer's hardware figures, one column per host (wrapped to `width`)."""
    hosts = hosts_hardware(samples)
    lines = [title("HARDWARE (per host; NonPaged = SUnreclaim + KernelStack)", width)]
    if not hosts:
        return [*lines, " no host figures yet"]
    per_chunk = max(1, (width - _HW_LABEL) // _HW_COLUMN)
    names = list(hosts)
    for start in range(0, len(names), per_chunk):
        chunk = names[start : start + per_chunk]
        names_row = "".join(f"{name[: _HW_COLUMN - 1]:>{_HW_COLUMN}}" for name in chunk)
        lines.append(" " * _HW_LABEL + names_row)
        for label, key in HW_ROWS:
            values = "".join(f"{fmt(field(hosts[n], key)):>{_HW_COLUMN}}" for n in chunk)
            lines.append(f" {label:<{_HW_LABEL - 1}}{values}")
    return lines


def login_section(samples: Sequence[Sample], width: int) -> list[str]:
    """The original LoginServer screen: auth workers plus the gateways' login port."""
    auth, gateways = of_role(samples, "auth"), of_role(samples, "gateway")
    avg, low, high = login_latency(auth)
    pool = total(gateways, "packet_pool") + total(auth, "packet_pool")
    lines = [title(f"LoginServer (auth workers: {len(auth)}, gateways: {len(gateways)})", width)]
    lines += grid(
        [
            cell("SessionAll", fmt(total(gateways, "sessions_login")), "(login)"),
            cell("LoginSuccess TPS", fmt(total(auth, "login_success_tps"))),
            cell("CompleteTime Avr", fmt(avg), "ms"),
            cell("CompleteTime Min/Max", f"{fmt(low)} / {fmt(high)}", "ms"),
            cell("Login Total", fmt(total(auth, "login_total"))),
            cell("CPU Usage", fmt(total(auth, "cpu_percent")), "% (auth)"),
            cell("Commit Memory", fmt(total(auth, "memory_mb")), "M (auth)"),
        ],
        width,
    )
    lines.append(" * Net Server (login port of the gateways)")
    lines += grid(
        [
            cell("ConnectSession", fmt(total(gateways, "sessions_login"))),
            cell("PacketPool Use", fmt(pool), "(gw+auth)"),
            cell("Accept TPS", fmt(total(gateways, "accept_tps_login"))),
            cell("Accept Total", fmt(total(gateways, "accept_total_login"))),
            cell("RecvPacket TPS", fmt(total(gateways, "recv_tps")), "all ports"),
            cell("SendPacket TPS", fmt(total(gateways, "send_tps")), "all ports"),
        ],
        width,
    )
    rows = [
        [
            short_id(s),
            fmt(field(s, "sessions")),
            fmt(field(s, "login_success_tps")),
            fmt(field(s, "login_latency_avg_ms") or None),
            fmt(field(s, "cpu_percent")),
            fmt(field(s, "memory_mb")),
        ]
        for s in auth
    ]
    header_row = ["auth worker", "in flight", "LoginTPS", "Avr ms", "CPU %", "Commit M"]
    return lines + table(header_row, rows, [ID_WIDTH, 9, 10, 9, 8, 10])


def game_section(samples: Sequence[Sample], width: int) -> list[str]:
    """The original BattleServer ("Echo Server") screen: game workers plus the game port."""
    game, gateways = of_role(samples, "game"), of_role(samples, "gateway")
    auth_fps = [field(s, "auth_fps") for s in game]
    game_fps = [field(s, "game_fps") for s in game]
    lines = [title(f"GameServer / Echo Server (game workers: {len(game)})", width)]
    lines += grid(
        [
            cell("AcceptSocket", fmt(total(gateways, "sessions_game")), "(gateways)"),
            cell("ALL Mode", fmt(total(game, "sessions"))),
            cell("Auth Mode", fmt(total(game, "session_auth"))),
            cell("Game Mode", fmt(total(game, "session_game"))),
            cell("Auth Update FPS", span(auth_fps), "min-max"),
            cell("Auth Update FPS sum", fmt(sum(auth_fps))),
            cell("Game Update FPS", span(game_fps), "min-max"),
            cell("Game Update FPS sum", fmt(sum(game_fps))),
            cell("Packet Proc TPS", fmt(total(game, "recv_tps"))),
            cell("Packet Send TPS", fmt(total(game, "send_tps"))),
            cell("Accept TPS", fmt(total(gateways, "accept_tps_game")), "(game port)"),
            cell("Accept Total", fmt(total(gateways, "accept_total_game")), "(game port)"),
            cell("Packet Pool use", fmt(total(game, "packet_pool"))),
            cell("Login TPS", fmt(total(game, "login_tps"))),
            cell("CPU Usage", fmt(total(game, "cpu_percent")), "% (game)"),
            cell("Commit Memory", fmt(total(game, "memory_mb")), "M (game)"),
        ],
        width,
    )
    rows = [
        [
            short_id(s),
            fmt(field(s, "sessions")),
            fmt(field(s, "auth_fps")),
            fmt(field(s, "game_fps")),
            fmt(field(s, "recv_tps")),
            fmt(field(s, "send_tps")),
            fmt(field(s, "cpu_percent")),
            fmt(field(s, "memory_mb")),
        ]
        for s in game
    ]
    header_row = ["game worker", "sessions", "AuthFPS", "GameFPS", "RecvTPS", "SendTPS", "CPU %"]
    return lines + table([*header_row, "Commit M"], rows, [ID_WIDTH, 9, 9, 9, 9, 9, 8, 10])


def chat_port_used(gateways: Iterable[Sample]) -> bool:
    """True when a gateway has accepted or holds a connection on its chat port."""
    keys = ("sessions_chat", "accept_total_chat")
    return any(field(g, key) > 0 for g in gateways for key in keys)


def chat_section(samples: Sequence[Sample], width: int) -> list[str]:
    """The original ChatServer screen: chat workers plus the gateways' chat port; no lines at
    all when there is no chat worker and no gateway's chat port was ever used (chat off)."""
    chat, gateways = of_role(samples, "chat"), of_role(samples, "gateway")
    if not chat and not chat_port_used(gateways):
        return []
    update = [field(s, "update_tps") for s in chat]
    pool = total(gateways, "packet_pool") + total(chat, "packet_pool")
    sector_max = max((field(s, "sector_max") for s in chat), default=None)
    lines = [title(f"ChatServer (chat workers: {len(chat)})", width)]
    lines += grid(
        [
            cell("Update TPS", span(update), "min-max"),
            cell("Update TPS sum", fmt(sum(update))),
            cell("MessagePool Use", fmt(total(chat, "packet_pool"))),
            cell("MessageTPS", fmt(total(chat, "message_tps"))),
            cell("Delivery TPS", fmt(total(chat, "delivery_tps")), "(receivers)"),
            cell("Cast In / Out TPS",
                 f"{fmt(total(chat, 'cast_in_tps'))} / {fmt(total(chat, 'cast_out_tps'))}",
                 "(workers)"),
            cell("PlayerPool", fmt(total(chat, "sessions")), "(sessions)"),
            cell("PlayerCount", fmt(total(chat, "session_login")), "(logged in)"),
            cell("Not Logged In", fmt(total(chat, "session_auth"))),
            cell("Login TPS", fmt(total(chat, "login_tps"))),
            cell("SessionKey Miss", fmt(total(chat, "key_miss"))),
            cell("LoginMap Size", fmt(total(chat, "pending_keys"))),
            cell("Sectors Occupied", fmt(total(chat, "sectors_occupied")), "(sum)"),
            cell("Sector Max", fmt(sector_max), "players"),
            cell("CPU Usage", fmt(total(chat, "cpu_percent")), "% (chat)"),
            cell("Commit Memory", fmt(total(chat, "memory_mb")), "M (chat)"),
        ],
        width,
    )  # fmt: skip
    lines.append(" * Net Server (chat port of the gateways)")
    lines += grid(
        [
            cell("ConnectSession", fmt(total(gateways, "sessions_chat"))),
            cell("PacketPool Use", fmt(pool), "(gw+chat)"),
            cell("Accept TPS", fmt(total(gateways, "accept_tps_chat"))),
            cell("Accept Total", fmt(total(gateways, "accept_total_chat"))),
            cell("RecvPacket TPS", fmt(total(chat, "recv_tps")), "(chat)"),
            cell("SendPacket TPS", fmt(total(chat, "send_tps")), "(chat)"),
        ],
        width,
    )
    rows = [
        [
            short_id(s),
            fmt(field(s, "sessions")),
            fmt(field(s, "session_login")),
            fmt(field(s, "message_tps")),
            fmt(field(s, "delivery_tps")),
            fmt(field(s, "update_tps")),
            fmt(field(s, "cpu_percent")),
            fmt(field(s, "memory_mb")),
        ]
        for s in chat
    ]
    header_row = ["chat worker", "sessions", "Players", "MsgTPS", "DelivTPS", "UpdTPS", "CPU %"]
    return lines + table([*header_row, "Commit M"], rows, [ID_WIDTH, 9, 9, 9, 10, 8, 8, 10])


def servers_section(samples: Sequence[Sample], width: int) -> list[str]:
    """The original MonitoringServer's per-server lines, for each kind of server that is on:
    Login (auth workers; SESSION is the login ports' sessions, as SessionAll), Chat (chat
    workers), Echo (game workers). Packet Pool is counted as on the LoginServer / ChatServer /
    GameServer screens. No lines when none is on."""
    auth, game, chat = (of_role(samples, role) for role in ("auth", "game", "chat"))
    gateways = of_role(samples, "gateway")
    servers: list[tuple[str, list[str]]] = []

    def common(workers: Sequence[Sample], pool: float) -> list[str]:
        return [
            f"Packet Pool {fmt(pool)}",
            f"CPU {fmt(total(workers, 'cpu_percent'))}%",
            f"Commit {fmt(total(workers, 'memory_mb'))}M",
        ]

    gw_pool = total(gateways, "packet_pool")
    if auth:
        servers.append(("Login", [
            f"SESSION {fmt(total(gateways, 'sessions_login'))}",
            f"LoginSuccess TPS {fmt(total(auth, 'login_success_tps'))}",
            *common(auth, gw_pool + total(auth, "packet_pool")),
        ]))  # fmt: skip
    if chat:
        servers.append(("Chat", [
            f"SESSION {fmt(total(chat, 'sessions'))}",
            f"PLAYER {fmt(total(chat, 'session_login'))}",
            f"MSG Pool {fmt(total(chat, 'packet_pool'))}",
            f"MSG TPS {fmt(total(chat, 'message_tps'))}",
            *common(chat, gw_pool + total(chat, "packet_pool")),
        ]))  # fmt: skip
    if game:
        servers.append(("Echo", [
            f"ALL {fmt(total(game, 'sessions'))}",
            f"Auth {fmt(total(game, 'session_auth'))}",
            f"Game {fmt(total(game, 'session_game'))}",
            f"Auth FPS {span([field(s, 'auth_fps') for s in game])}",
            f"Game FPS {span([field(s, 'game_fps') for s in game])}",
            *common(game, total(game, "packet_pool")),
        ]))  # fmt: skip
    if not servers:
        return []
    lines = [title("MonitoringServer (servers on)", width)]
    for name, tokens in servers:
        for number_, line in enumerate(packed(tokens, width - 7)):
            lines.append(f" {name:<5}:{line}" if number_ == 0 else f" {'':<5} {line}")
    return lines


def drops_section(samples: Sequence[Sample], width: int) -> list[str]:
    """Closes by reason summed over the samples (each close is in the ``drops`` of the one
    process that decided it); no lines at all when there are none."""
    drops = drops_by_reason(samples)
    if not drops:
        return []
    tokens = [f"{reason}={fmt(count)}" for reason, count in drops.items()]
    return [title(f"Drops (total {fmt(sum(drops.values()))})", width), *packed(tokens, width)]


def gone_age(sample: Sample, now: float) -> float | None:
    """Seconds since the process was last heard of: ``heartbeat_age_s`` (the monitor adds it)
    when present, else `now` minus the sample's ``time``; None when neither is known."""
    if is_number(sample.get("heartbeat_age_s")):
        return number(sample["heartbeat_age_s"])
    if is_number(sample.get("time")):
        return now - number(sample["time"])
    return None


def gone_lines(gone: Sequence[Sample], now: float) -> list[str]:
    """One ``GONE role id on host, last heard Ns ago`` line per gone process, latest first."""
    aged = sorted(((gone_age(s, now), s) for s in gone), key=lambda a: (a[0] is None, a[0] or 0))
    return [
        f"GONE {role_of(s):<8} {text_of(s.get('id')) or short_id(s)}"
        f" on {text_of(s.get('host')) or '?'}, last heard {ago(age)} ago"
        for age, s in aged
    ]


def render_screens(
    samples: Iterable[Sample], gone: Sequence[Sample], now: float, width: int = 100
) -> str:
    """The whole console screen for the live `samples` and the `gone` processes' last samples.

    `samples` are deduplicated per process id (the newest ``time`` wins); `now` is the Unix time
    printed in the header and used for the ages of gone processes. No ANSI codes and no final
    newline; no line is longer than `width` (longer lines are cut). Never raises on missing or
    non-numeric fields."""
    live = latest_per_process(samples)
    lines = [header(live, gone, now)]
    sections = (hardware_section, servers_section, login_section, game_section, chat_section,
                drops_section)  # fmt: skip
    for section in sections:
        lines += section(live, width)
    lines += gone_lines(gone, now)
    return "\n".join(line[: max(0, width)].rstrip() for line in lines)


def summary_line(samples: Iterable[Sample], gone: Sequence[Sample]) -> str:
    """One line (no newline) of ``key=value`` pairs for logs, in this order:

    ``procs`` live processes (one per id), ``gone``, ``login_tps`` (sum over auth workers),
    ``login_avg_ms`` (as on the LoginServer screen, ``-`` without logins), ``sessions`` (client
    connections held by the gateways, all ports), ``auth_fps`` / ``game_fps`` (the slowest game
    worker's, ``-`` without game workers), ``players`` / ``msg_tps`` (logged-in chat sessions and
    chat messages received per second, summed over the chat workers, ``-`` without chat
    workers), ``recv_tps`` / ``send_tps`` (client packets decoded / encoded by the gateways),
    ``drops`` (all reasons, summed), ``cpu_total`` (the busiest host's CPU, ``-`` without host
    figures)."""
    live = latest_per_process(samples)
    auth, game, chat, gateways = (
        of_role(live, role) for role in ("auth", "game", "chat", "gateway")
    )
    hosts = hosts_hardware(live)
    cpu = max((field(hw, "cpu_total") for hw in hosts.values()), default=None)
    pairs = {
        "procs": fmt(len(live)),
        "gone": fmt(len(gone)),
        "login_tps": fmt(total(auth, "login_success_tps")),
        "login_avg_ms": fmt(login_latency(auth)[0]),
        "sessions": fmt(total(gateways, "sessions")),
        "auth_fps": fmt(min((field(s, "auth_fps") for s in game), default=None)),
        "game_fps": fmt(min((field(s, "game_fps") for s in game), default=None)),
        "players": fmt(total(chat, "session_login") if chat else None),
        "msg_tps": fmt(total(chat, "message_tps") if chat else None),
        "recv_tps": fmt(total(gateways, "recv_tps")),
        "send_tps": fmt(total(gateways, "send_tps")),
        "drops": fmt(sum(drops_by_reason(live).values())),
        "cpu_total": "-" if cpu is None else f"{fmt(cpu)}%",
    }
    return " ".join(f"{key}={value}" for key, value in pairs.items())
