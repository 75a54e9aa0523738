"""The monitor's live web dashboard, served at ``/`` of ``[monitor] metrics_port``.

- :mod:`cluster.dashboard.history`: the last ``[monitor] history_seconds`` of the charted figures,
  in memory (fed by :meth:`cluster.monitor.Monitor.record`);
- :mod:`cluster.dashboard.server`: the HTTP responder of that port (the page, its JSON API,
  ``/metrics`` and ``/status.json``);
- ``static/``: the page (plain HTML, CSS and canvas-drawing JS; no build step, nothing fetched
  from elsewhere).
"""
