"""What a dummy run shows and leaves behind: the live screen, progress lines, the JSON report
and the per-second CSV.

The screen and the progress line take a :class:`View`, the merged state of one second (one
engine, or every agent of a distributed run), so local and distributed runs look the same.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dummy.engine import Totals
from dummy.histogram import Histogram


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
            "latency_p50_ms": round(self.latency.percentile(50) / 1000, 3),
            "latency_p99_ms": round(self.latency.percentile(99) / 1000, 3),
            "latency_max_ms": round(self.latency.max / 1000, 3),
            "errors": sum(t.errors.values()),
        }


def screen(view: View, title: str = "Dummy") -> str:
    """The live screen, as the original dummy's console (no ANSI codes)."""
    t = view.totals
    lat = view.latency
    low, avg, high = view.action_delay_ms
    lines = [
        f"== {title} ==  {time.strftime('%H:%M:%S')}  elapsed {view.elapsed:.0f}s  "
        f"MODE : {'STOP' if view.paused else 'PLAY'}   (S: pause/resume contents, Q: quit)",
        f" Client Total   : {view.clients:>9}    Agents        : {view.agents}"
        + (f" ({view.agents_lost} lost)" if view.agents_lost else ""),
        f" Connect Total  : {t.connect_total:>9}    Connect Fail  : {t.connect_fail:>9}",
        f" Down Client    : {t.down_client:>9}    Reply Wait    : {view.reply_wait:>9}",
        f" In Login       : {view.in_login:>9}    In Game       : {view.in_game:>9}",
        f" Send TPS       : {view.send_tps:>9.0f}    Recv TPS      : {view.recv_tps:>9.0f}",
        f" Echo latency   : p50 {lat.percentile(50) / 1000:.2f} ms  p99 "
        f"{lat.percentile(99) / 1000:.2f} ms  max {lat.max / 1000:.2f} ms",
        f" Action Delay   : min {low:.1f} ms  avg {avg:.1f} ms  max {high:.1f} ms",
        " Errors         : "
        + (", ".join(f"{k} {v}" for k, v in sorted(t.errors.items())) or "none"),
    ]
    return "\n".join(lines)


def progress_line(view: View) -> str:
    """One line for logs when not on a terminal."""
    t = view.totals
    return (
        f"dummy {view.elapsed:.0f}s in_game={view.in_game}/{view.clients} "
        f"connect_total={t.connect_total} down={t.down_client} send_tps={view.send_tps:.0f} "
        f"recv_tps={view.recv_tps:.0f} p99_ms={view.latency.percentile(99) / 1000:.2f} "
        f"errors={sum(t.errors.values())}"
    )


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
        "echo_sent": totals.echo_sent,
        "echo_recv": totals.echo_recv,
        "errors": dict(sorted(totals.errors.items())),
        "latency_ms": latency.summary_ms(),
        "agents": agents,
        "options": options,
    }
    return report


def summary(report: dict[str, Any]) -> str:
    """The closing lines printed after a run, with the original's ConnectTotal == AcceptTotal
    check stated plainly."""
    lat = report["latency_ms"]
    errors = report["errors"]
    lines = [
        f"clients {report['clients']} for {report['duration_s']:.0f}s: "
        f"echo sent {report['echo_sent']}, received {report['echo_recv']}, "
        f"latency p50 {lat['p50']} ms, p99 {lat['p99']} ms, max {lat['max']} ms",
        f"connects {report['connect_total']} (failed {report['connect_fail']}), "
        f"down clients {report['down_client']}, logins in game {report['login_ok']}",
        "errors: " + (", ".join(f"{k}={v}" for k, v in errors.items()) or "none"),
    ]
    lost = [a for a in report["agents"] if a.get("status") == "lost"]
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
        lines.append(
            f"MISMATCH: connect_total {report['connect_total']} != accept_total {accept} "
            f"(difference {accept - report['connect_total']:+d})"
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
