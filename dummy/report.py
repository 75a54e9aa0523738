"""What a dummy run shows and leaves behind: the live screen, progress lines, the JSON report
and the per-second CSV, for the game (echo) load and for the chat load.

The screen and the progress line take a view, the merged state of one second (one engine, or
every agent of a distributed run), so local and distributed runs look the same: :class:`View`
for echo, :class:`ChatView` for chat, :class:`Views` for both at once (the demo). Each has
``screen(title)``, ``progress()`` and ``row()``, which is all the console needs.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dummy.chat_engine import CHECK_ERRORS, ChatTotals
from dummy.engine import RunShape, Totals
from dummy.histogram import Histogram

#: The web login's failure kinds, as counted in ``errors`` (a success is ``web_ok``).
WEB_ERRORS = ("web_invalid", "web_rate_limited", "web_busy", "web_error")


def web_counts(totals: Totals | ChatTotals) -> dict[str, int]:
    """The web login's results (``--path web``): ``web_ok`` and every failure kind."""
    return {"web_ok": totals.web_ok} | {kind: totals.errors.get(kind, 0) for kind in WEB_ERRORS}


def web_line(counts: dict[str, int]) -> str:
    """``ok N, invalid N, rate limited N, busy N, error N`` (the screen's and summary's words)."""
    return ", ".join(f"{kind.removeprefix('web_').replace('_', ' ')} {n}"
                     for kind, n in counts.items())  # fmt: skip


def _merge_delays(delays: list[Any]) -> tuple[float, float, float]:
    if not delays:
        return (0.0, 0.0, 0.0)
    return (min(d[0] for d in delays), sum(d[1] for d in delays) / len(delays),
            max(d[2] for d in delays))  # fmt: skip


@dataclass
class View:
    """One second of a run, merged over every source (engine or agent)."""

    elapsed: float = 0.0
    clients: int = 0
    in_login: int = 0
    in_game: int = 0
    reply_wait: int = 0
    send_tps: float = 0.0
    recv_tps: float = 0.0
    totals: Totals = field(default_factory=Totals)
    latency: Histogram = field(default_factory=Histogram)  # this second
    action_delay_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    agents: int = 1
    agents_lost: int = 0
    paused: bool = False
    disconnected: int = 0  # clients without an open connection
    shape: RunShape = field(default_factory=RunShape)  # start, threads, Minimum Check Delay

    def row(self) -> dict[str, Any]:
        """The CSV row of this second."""
        t = self.totals
        return {
            "elapsed_s": round(self.elapsed, 1),
            "clients": self.clients,
            "in_login": self.in_login,
            "in_game": self.in_game,
            "reply_wait": self.reply_wait,
            "connect_total": t.connect_total,
            "connect_fail": t.connect_fail,
            "down_client": t.down_client,
            "send_tps": round(self.send_tps),
            "recv_tps": round(self.recv_tps),
            "echo_sent": t.echo_sent,
            "echo_recv": t.echo_recv,
            "web_ok": t.web_ok,
            "latency_p50_ms": round(self.latency.percentile(50) / 1000, 3),
            "latency_p99_ms": round(self.latency.percentile(99) / 1000, 3),
            "latency_max_ms": round(self.latency.max / 1000, 3),
            "errors": sum(t.errors.values()),
        }

    def screen(self, title: str = "Dummy") -> str:
        return screen(self, title)

    def progress(self) -> str:
        return progress_line(self)

    @classmethod
    def from_maps(cls, maps: list[dict[str, Any]], totals: Totals, latency: Histogram,
                  elapsed: float, agents: int = 1, agents_lost: int = 0) -> View:  # fmt: skip
        """The view of one second from the second maps of every live source
        (:meth:`dummy.engine.SecondStats.to_map`), with the summed totals."""
        view = cls(elapsed=elapsed, agents=agents, agents_lost=agents_lost, totals=totals,
                   latency=latency)  # fmt: skip
        for second in maps:
            view.clients += int(second["clients"])
            view.in_login += int(second["in_login"])
            view.in_game += int(second["in_game"])
            view.reply_wait += int(second["reply_wait"])
            view.send_tps += float(second["send_tps"])
            view.recv_tps += float(second["recv_tps"])
            view.disconnected += int(second.get("disconnected", 0))
        view.action_delay_ms = _merge_delays([m["action_delay_ms"] for m in maps])
        view.shape = RunShape.merged(maps)
        return view


def screen(view: View, title: str = "Dummy") -> str:
    """The live screen, as the original dummy's console (no ANSI codes)."""
    t = view.totals
    lat = view.latency
    low, avg, high = view.action_delay_ms
    lines = [
        f"== {title} ==  {time.strftime('%H:%M:%S')}  elapsed {view.elapsed:.0f}s  "
        f"MODE : {'STOP' if view.paused else 'PLAY'}   (S: pause/resume contents, Q: quit)",
        *shape_lines(view.shape, 15),
        f" Client Total   : {view.clients:>9}    Agents        : {view.agents}"
        + (f" ({view.agents_lost} lost)" if view.agents_lost else ""),
        f" Connect Total  : {t.connect_total:>9}    Connect Fail  : {t.connect_fail:>9}",
        f" Down Client    : {t.down_client:>9}    Reply Wait    : {view.reply_wait:>9}",
        f" In Login       : {view.in_login:>9}    In Game       : {view.in_game:>9}",
        f" Disconnect     : {view.disconnected:>9}",
        f" Send TPS       : {view.send_tps:>9.0f}    Recv TPS      : {view.recv_tps:>9.0f}",
        f" Echo latency   : p50 {lat.percentile(50) / 1000:.2f} ms  p99 "
        f"{lat.percentile(99) / 1000:.2f} ms  max {lat.max / 1000:.2f} ms",
        f" Action Delay   : min {low:.1f} ms  avg {avg:.1f} ms  max {high:.1f} ms",
        min_check_line(view.shape),
        *_web_screen_line(t, " Web Login      : "),
        " Errors         : "
        + (", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())) or "none"),
    ]
    return "\n".join(lines)


def shape_lines(shape: RunShape, width: int) -> list[str]:
    """The screen's StartTime and threads lines (labels padded to `width`)."""
    start = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(shape.started_at))
             if shape.started_at else "-")  # fmt: skip
    low, high = shape.per_thread
    per = f"{low}" if low == high else f"{low}-{high}"
    return [
        f" {'StartTime':<{width}}: {start}",
        f" {'Thread Count':<{width}}: {shape.threads:>9}    Client per Thread : {per}",
    ]


def min_check_line(shape: RunShape) -> str:
    """The screen's Minimum Check Delay: Action Delay's floor, the wait of each loop between two
    visits of its clients (--delay-action)."""
    return f" # Minimum Check Delay : {shape.min_check_delay_ms:g} ms (--delay-action)"


def _web_screen_line(totals: Totals | ChatTotals, label: str) -> list[str]:
    """The screen's web login line, when there was any web login."""
    counts = web_counts(totals)
    return [label + web_line(counts)] if any(counts.values()) else []


def progress_line(view: View) -> str:
    """One line for logs when not on a terminal."""
    t = view.totals
    return (
        f"dummy {view.elapsed:.0f}s in_game={view.in_game}/{view.clients} "
        f"connect_total={t.connect_total} down={t.down_client} send_tps={view.send_tps:.0f} "
        f"recv_tps={view.recv_tps:.0f} p99_ms={view.latency.percentile(99) / 1000:.2f} "
        f"{_web_progress(t)}errors={sum(t.errors.values())}"
    )


def _web_progress(totals: Totals | ChatTotals) -> str:
    """``web_ok=N `` for a progress line, when there was any web login."""
    return f"web_ok={totals.web_ok} " if any(web_counts(totals).values()) else ""


@dataclass
class ChatView:
    """One second of a chat run, merged over every source (engine or agent)."""

    elapsed: float = 0.0
    clients: int = 0
    in_login: int = 0
    in_chat: int = 0
    connected: int = 0
    reply_wait: int = 0
    send_tps: float = 0.0
    recv_tps: float = 0.0
    totals: ChatTotals = field(default_factory=ChatTotals)
    latency: Histogram = field(default_factory=Histogram)  # this second
    action_delay_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    agents: int = 1
    agents_lost: int = 0
    paused: bool = False
    shape: RunShape = field(default_factory=RunShape)  # start, threads, Minimum Check Delay

    @classmethod
    def from_maps(cls, maps: list[dict[str, Any]], totals: ChatTotals, latency: Histogram,
                  elapsed: float, agents: int = 1, agents_lost: int = 0) -> ChatView:  # fmt: skip
        """The view of one second from the second maps of every live source
        (:meth:`dummy.chat_engine.ChatSecond.to_map`), with the summed totals."""
        view = cls(elapsed=elapsed, agents=agents, agents_lost=agents_lost, totals=totals,
                   latency=latency)  # fmt: skip
        for second in maps:
            view.clients += int(second["clients"])
            view.in_login += int(second["in_login"])
            view.in_chat += int(second["in_chat"])
            view.connected += int(second["connected"])
            view.reply_wait += int(second["reply_wait"])
            view.send_tps += float(second["send_tps"])
            view.recv_tps += float(second["recv_tps"])
        view.action_delay_ms = _merge_delays([m["action_delay_ms"] for m in maps])
        view.shape = RunShape.merged(maps)
        return view

    def row(self) -> dict[str, Any]:
        """The CSV row of this second."""
        t = self.totals
        return {
            "elapsed_s": round(self.elapsed, 1),
            "clients": self.clients,
            "in_login": self.in_login,
            "in_chat": self.in_chat,
            "connected": self.connected,
            "reply_wait": self.reply_wait,
            "connect_total": t.connect_total,
            "connect_fail": t.connect_fail,
            "login_down": t.login_down,
            "chat_down": t.chat_down,
            "send_tps": round(self.send_tps),
            "recv_tps": round(self.recv_tps),
            "moves_sent": t.moves_sent,
            "messages_sent": t.messages_sent,
            "messages_recv": t.messages_recv,
            "deliveries": t.deliveries,
            "web_ok": t.web_ok,
            "latency_p50_ms": round(self.latency.percentile(50) / 1000, 3),
            "latency_p99_ms": round(self.latency.percentile(99) / 1000, 3),
            "latency_max_ms": round(self.latency.max / 1000, 3),
            "check_errors": t.check_errors(),
            "errors": sum(t.errors.values()),
        }

    def screen(self, title: str = "Chat Dummy") -> str:
        """The live screen, as the original chat dummy's console (login stage, chat stage)."""
        t = self.totals
        lat = self.latency
        low, avg, high = self.action_delay_ms
        disconnected = self.clients - self.connected
        lines = [
            f"== {title} ==  {time.strftime('%H:%M:%S')}  elapsed {self.elapsed:.0f}s  "
            f"MODE : {'STOP' if self.paused else 'PLAY'}   (S: pause/resume connects and "
            "contents, Q: quit)",
            *shape_lines(self.shape, 17),
            f" Client Total     : {self.clients:>9}    Agents           : {self.agents}"
            + (f" ({self.agents_lost} lost)" if self.agents_lost else ""),
            f" Connect Total    : {t.connect_total:>9}    Disconnect       : {disconnected:>9}",
            " -- login --",
            *_web_screen_line(t, " Web Login        : "),
            f" IN Login         : {self.in_login:>9}    ConnectFail      : "
            f"{t.connect_fail - t.chat_connect_fail:>9}",
            f" Login DownClient : {t.login_down:>9}",
            " -- chat --",
            f" IN Chat          : {self.in_chat:>9}    Connect / Login  : "
            f"{self.connected:>5} / {self.in_chat}",
            f" ConnectFail      : {t.chat_connect_fail:>9}    Chat DownClient  : {t.chat_down:>9}",
            f" ReplyWait        : {self.reply_wait:>9}    Send/Recv TPS    : "
            f"{self.send_tps:.0f} / {self.recv_tps:.0f}",
            f" Messages         : sent {t.messages_sent}  received {t.messages_recv} (own "
            f"{t.echoes}, from dummies {t.deliveries}, foreign {t.foreign})  missed "
            f"{t.missed}/{t.expected}",
            f" Sector moves     : sent {t.moves_sent}  answered {t.moves_recv}",
            f" Reply latency    : p50 {lat.percentile(50) / 1000:.2f} ms  p99 "
            f"{lat.percentile(99) / 1000:.2f} ms  max {lat.max / 1000:.2f} ms",
            f" Action Delay     : min {low:.1f} ms  avg {avg:.1f} ms  max {high:.1f} ms",
            min_check_line(self.shape),
            " Check Errors     : " + (", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())
                                              if k in CHECK_ERRORS) or "none"),
            " Other Errors     : " + (", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())
                                              if k not in CHECK_ERRORS) or "none"),
        ]  # fmt: skip
        return "\n".join(lines)

    def progress(self) -> str:
        """One line for logs when not on a terminal."""
        t = self.totals
        return (
            f"chat dummy {self.elapsed:.0f}s in_chat={self.in_chat}/{self.clients} "
            f"connect_total={t.connect_total} down={t.down_client} "
            f"messages={t.messages_sent}/{t.messages_recv} deliveries={t.deliveries} "
            f"p99_ms={self.latency.percentile(99) / 1000:.2f} check_errors={t.check_errors()} "
            f"{_web_progress(t)}errors={sum(t.errors.values())}"
        )


@dataclass
class Views:
    """Several loads at once (the demo: echo and chat), shown one above the other."""

    parts: list[tuple[str, View | ChatView]]
    paused: bool = False

    def screen(self, title: str = "Dummy") -> str:
        for _, view in self.parts:
            view.paused = self.paused
        return "\n".join(view.screen(f"{title}: {name}") for name, view in self.parts)

    def progress(self) -> str:
        return " | ".join(view.progress() for _, view in self.parts)

    def row(self) -> dict[str, Any]:
        return {f"{name}_{k}": v for name, view in self.parts for k, v in view.row().items()}


def build_report(
    totals: Totals,
    latency: Histogram,
    *,
    duration: float,
    clients: int,
    accept_total: int | None,
    agents: list[dict[str, Any]],
    options: dict[str, Any],
    accept_note: str | None = None,
    accept_gateways: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON report. ``connect_matches_accept`` is None when accept_total is unknown
    (``accept_note`` then says why); ``accept_gateways`` has one entry per gateway process that
    accepted during the run (see :mod:`dummy.accept`)."""
    report: dict[str, Any] = {
        "app": "echo",
        "duration_s": round(duration, 3),
        "clients": clients,
        "connect_total": totals.connect_total,
        "connect_fail": totals.connect_fail,
        "down_client": totals.down_client,
        "accept_total": accept_total,
        "connect_matches_accept": (
            None if accept_total is None else accept_total == totals.connect_total
        ),
        "accept_note": accept_note,
        "accept_gateways": accept_gateways or [],
        "disconnects": totals.disconnects,
        "login_ok": totals.login_ok,
        "web": web_counts(totals),
        "echo_sent": totals.echo_sent,
        "echo_recv": totals.echo_recv,
        "errors": dict(sorted(totals.errors.items())),
        "latency_ms": latency.summary_ms(),
        "agents": agents,
        "options": options,
    }
    return report


def summary(report: dict[str, Any], accept_check: bool = True) -> str:
    """The closing lines printed after a run, with the original's ConnectTotal == AcceptTotal
    check stated plainly (unless `accept_check` is off: the demo states it once for both
    loads)."""
    lat = report["latency_ms"]
    errors = report["errors"]
    lines = [
        f"clients {report['clients']} for {report['duration_s']:.0f}s: "
        f"echo sent {report['echo_sent']}, received {report['echo_recv']}, "
        f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        f"connects {report['connect_total']} (failed {report['connect_fail']}), "
        f"down clients {report['down_client']}, logins in game {report['login_ok']}",
        *_web_summary(report),
        "errors: " + (", ".join(f"{k}={v}" for k, v in errors.items()) or "none"),
    ]
    if accept_check:
        lines.append(accept_lines(report))
    return "\n".join(lines)


def _web_summary(report: dict[str, Any]) -> list[str]:
    """The summary's web login line, when the run made any web login."""
    counts = report.get("web") or {}
    return ["web logins: " + web_line(counts)] if any(counts.values()) else []


def accept_lines(report: dict[str, Any]) -> str:
    """The end of a summary: lost agents, gateways that came or went, and the original's
    ConnectTotal == AcceptTotal check stated plainly."""
    lines = []
    lost = [a for a in report.get("agents", []) if a.get("status") == "lost"]
    if lost:
        lines.append(f"agents lost during the run: {', '.join(a['id'] for a in lost)} "
                     "(their counts up to their last report are included)")  # fmt: skip
    accept = report["accept_total"]
    changed = [g for g in report.get("accept_gateways", [])
               if g["seen"] != "before the run" or g["status"] != "live"]  # fmt: skip
    if changed:
        lines.append("gateway processes came or went during the run (accepts counted per "
                     "process): " + ", ".join(_gateway_change(g) for g in changed))  # fmt: skip
    if accept is None:
        why = report.get("accept_note") or "no monitor answered"
        lines.append(f"accept_total unknown ({why}): connect check not made")
    elif report["connect_matches_accept"]:
        lines.append(f"connect_total == accept_total == {accept}: OK")
    else:
        difference = accept - report["connect_total"]
        why = (
            "the gateways accepted connections this run did not make: other clients (another "
            "dummy, TCP health probes) connected meanwhile; several dummies are checked as one "
            "by a distributed run (cluster dummy controller + agents)"
            if difference > 0 else
            "connects of this run never reached a gateway process (or it was killed before it "
            "sampled them)"
        )  # fmt: skip
        lines.append(
            f"MISMATCH: connect_total {report['connect_total']} != accept_total {accept} "
            f"(difference {difference:+d}): {why}"
        )
    return "\n".join(lines)


def _gateway_change(gateway: dict[str, Any]) -> str:
    what = []
    if gateway["seen"] != "before the run":
        what.append("started during the run")
    if gateway["status"] != "live":
        what.append("went away")
    return f"{gateway['id']} {' and '.join(what)} ({gateway['accepted']} accepted)"


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as out:
        if not rows:
            return
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build_chat_report(
    totals: ChatTotals,
    latency: Histogram,
    *,
    duration: float,
    clients: int,
    accept_total: int | None,
    agents: list[dict[str, Any]],
    options: dict[str, Any],
    accept_note: str | None = None,
    accept_gateways: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON report of a chat run; the connect check as in :func:`build_report`.
    ``check_errors`` sums the error kinds that are checks (replies that must never come)."""
    return {
        "app": "chat",
        "duration_s": round(duration, 3),
        "clients": clients,
        "connect_total": totals.connect_total,
        "connect_fail": totals.connect_fail,
        "chat_connect_fail": totals.chat_connect_fail,
        "down_client": totals.down_client,
        "login_down": totals.login_down,
        "chat_down": totals.chat_down,
        "accept_total": accept_total,
        "connect_matches_accept": (
            None if accept_total is None else accept_total == totals.connect_total
        ),
        "accept_note": accept_note,
        "accept_gateways": accept_gateways or [],
        "disconnects": totals.disconnects,
        "login_ok": totals.login_ok,
        "web": web_counts(totals),
        "moves_sent": totals.moves_sent,
        "moves_recv": totals.moves_recv,
        "messages_sent": totals.messages_sent,
        "messages_recv": totals.messages_recv,
        "echoes": totals.echoes,
        "deliveries": totals.deliveries,
        "foreign": totals.foreign,
        "expected": totals.expected,
        "missed": totals.missed,
        "heartbeats": totals.heartbeats,
        "check_errors": totals.check_errors(),
        "errors": dict(sorted(totals.errors.items())),
        "latency_ms": latency.summary_ms(),
        "agents": agents,
        "options": options,
    }


def chat_summary(report: dict[str, Any], accept_check: bool = True) -> str:
    """The closing lines of a chat run (and the connect check, unless `accept_check` is off)."""
    lat = report["latency_ms"]
    errors = report["errors"]
    checks = {k: v for k, v in errors.items() if k in CHECK_ERRORS}
    others = {k: v for k, v in errors.items() if k not in CHECK_ERRORS}
    lines = [
        f"chat clients {report['clients']} for {report['duration_s']:.0f}s: messages sent "
        f"{report['messages_sent']}, received {report['messages_recv']} (own "
        f"{report['echoes']}, from other dummies {report['deliveries']}, foreign "
        f"{report['foreign']}), sector moves {report['moves_sent']}, reply latency p50 "
        f"{lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        f"certain deliveries {report['expected']}, missed {report['missed']}",
        f"connects {report['connect_total']} (failed {report['connect_fail']}), down clients "
        f"login {report['login_down']} chat {report['chat_down']}, chat logins "
        f"{report['login_ok']}",
        *_web_summary(report),
        "check errors: " + (", ".join(f"{k}={v}" for k, v in checks.items()) or "none"),
        "other errors: " + (", ".join(f"{k}={v}" for k, v in others.items()) or "none"),
    ]
    if accept_check:
        lines.append(accept_lines(report))
    return "\n".join(lines)
