"""The dummy's HTML load report (``--html FILE``): one self-contained page, as Locust's report.

The page holds the run summary (start, duration, app, path, link mode, clients, the knobs, the
closing lines and the pass/fail verdict), charts over time (one point per second) of TPS, latency
percentiles, connections, logins, errors by kind and Down Client, and tables of the final
counters, errors and agents. It needs nothing but itself: CSS, the chart code
(``report_template.js``, drawn as SVG) and the data are inline, and its Content-Security-Policy
forbids every fetch and every script but its own (by hash).

The seconds are the views the screen and the CSV already get (:func:`point` of each, so nothing
is sampled twice); ``final`` is the run's totals after the wind-down, which the page charts as
a closing point so that the per-second counts add up to the JSON report's totals.

The data travels as JSON in a ``<script type="application/json">`` element, with ``<``, ``>``,
``&`` and the JavaScript line separators escaped, so no string of the data (an agent's host name,
an error kind) can end that element or start markup; the page only ever shows data as text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

from dummy.report import ChatView, View

#: The placeholders of ``report_template.html``; replaced in one pass (a value is never
#: scanned again, so data that looks like a placeholder stays data).
_PLACEHOLDER = re.compile(r"__(TITLE|CSP|DATA|SCRIPT)__")

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}  # fmt: skip


def point(view: View | ChatView) -> dict[str, Any]:
    """One second of a run for the page: the view's gauges and rates, its latency percentiles
    (ms, from that second's histogram) and the cumulative totals with the errors by kind."""
    lat = view.latency
    gauges: dict[str, Any] = {
        "elapsed": round(view.elapsed, 3),
        "clients": view.clients,
        "in_login": view.in_login,
        "reply_wait": view.reply_wait,
        "agents": view.agents,
        "agents_lost": view.agents_lost,
        "send_tps": round(view.send_tps, 1),
        "recv_tps": round(view.recv_tps, 1),
    }
    if isinstance(view, ChatView):
        gauges |= {"in_chat": view.in_chat, "connected": view.connected}
    else:
        gauges |= {"in_game": view.in_game}
    return gauges | {
        "latency_ms": {
            "count": lat.count,
            "p50": lat.percentile(50) / 1000,
            "p95": lat.percentile(95) / 1000,
            "p99": lat.percentile(99) / 1000,
            "max": lat.max / 1000,
        },
        "totals": view.totals.to_dict(),
    }


def json_for_script(data: Any) -> str:
    """`data` as JSON that is safe inside a ``<script>`` element: no ``</script>``, no ``<!--``,
    no markup, no raw U+2028/U+2029; ``JSON.parse`` of it gives `data` back."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_ESCAPES[m.group()], text)


def _template(name: str) -> str:
    return resources.files("dummy").joinpath(name).read_text(encoding="utf-8")


def render(
    report: dict[str, Any],
    seconds: list[dict[str, Any]],
    final: dict[str, Any],
    *,
    passed: bool,
    closing: str,
    link_mode: str | None = None,
    finished_at: float | None = None,
) -> str:
    """The page of one run: `report` is the JSON report, `seconds` the :func:`point` of each
    second, `final` the totals (``to_dict``) after the wind-down, `passed` the verdict (the exit
    code's), `closing` the summary lines printed at the end, `link_mode` the cluster's."""
    finished = time.time() if finished_at is None else finished_at
    started = finished - float(report.get("duration_s", 0.0))
    data = {
        "app": report.get("app", "echo"),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(finished)),
        "link_mode": link_mode,
        "passed": passed,
        "closing": closing,
        "report": report,
        "seconds": seconds,
        "final": final,
    }
    script = _template("report_template.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
           "img-src data:; base-uri 'none'; form-action 'none'")  # fmt: skip
    title = f"{'Chat dummy' if data['app'] == 'chat' else 'Dummy'} load report, {data['started']}"
    values = {"TITLE": html.escape(title), "CSP": html.escape(csp), "DATA": json_for_script(data),
              "SCRIPT": script}  # fmt: skip
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _template("report_template.html"))


def write_html(path: Path, report: dict[str, Any], seconds: list[dict[str, Any]],
               final: dict[str, Any], **kwargs: Any) -> None:  # fmt: skip
    """Write the page of :func:`render` to `path` (UTF-8)."""
    path.write_text(render(report, seconds, final, **kwargs), encoding="utf-8")
