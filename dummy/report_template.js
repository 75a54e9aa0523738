(function () {
  "use strict";
  // The dummy's HTML load report: reads the JSON of #report-data, fills the tables and draws the
  // charts as SVG. Data is only ever shown as text (textContent), never parsed as markup.
  // window.report is the test hook: {ready, app, points, charts: {id: {points, x, series}}}.
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2f6fde", "#e8590c", "#2b9348", "#c2255c", "#7048e8", "#0b7285", "#a61e4d",
                "#5c940d", "#862e9c", "#495057"];
  var hook = { ready: false, app: null, points: 0, charts: {}, problems: [] };
  window.report = hook;

  var data = JSON.parse(document.getElementById("report-data").textContent);
  var report = data.report || {};
  var seconds = data.seconds || [];
  var final = data.final || {};
  var chat = data.app === "chat";
  hook.app = data.app;

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function num(value) { return typeof value === "number" && isFinite(value) ? value : 0; }
  function fmt(value) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "number") {
      return Number.isInteger(value) ? value.toLocaleString("en-US")
        : value.toLocaleString("en-US", { maximumFractionDigits: 3 });
    }
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }
  function rows(table, head, lines) {
    table.textContent = "";
    if (head) {
      var tr = el("tr");
      head.forEach(function (h) { tr.appendChild(el("th", h)); });
      table.appendChild(tr);
    }
    lines.forEach(function (line) {
      var tr = el("tr");
      line.forEach(function (cell, i) {
        var td = el(i === 0 && !head ? "th" : "td", fmt(cell));
        if (typeof cell === "number") td.className = "num";
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
  }

  // -- the points: every second, and the wind-down as a closing point ---------------------------

  function sameTotals(a, b) {
    var keys = Object.keys(a).concat(Object.keys(b));
    for (var i = 0; i < keys.length; i++) {
      var k = keys[i];
      if (k === "errors") continue;
      if (num(a[k]) !== num(b[k])) return false;
    }
    var ea = a.errors || {}, eb = b.errors || {};
    var kinds = Object.keys(ea).concat(Object.keys(eb));
    for (var j = 0; j < kinds.length; j++) {
      if (num(ea[kinds[j]]) !== num(eb[kinds[j]])) return false;
    }
    return true;
  }

  var points = seconds.map(function (s) { return { t: num(s.elapsed), s: s, totals: s.totals || {} }; });
  var lastT = points.length ? points[points.length - 1].t : 0;
  if (!points.length || !sameTotals(points[points.length - 1].totals, final)) {
    // what the last part-second and the wind-down added (connects still under way, replies)
    points.push({ t: Math.max(num(report.duration_s), lastT + 0.1), s: null, totals: final, end: true });
  }
  hook.points = points.length;
  var xs = points.map(function (p) { return Math.round(p.t * 1000) / 1000; });

  function cumulative(key) { return points.map(function (p) { return num(p.totals[key]); }); }
  function perSecond(values) {
    return values.map(function (v, i) { return i === 0 ? v : v - values[i - 1]; });
  }
  function delta(key) { return perSecond(cumulative(key)); }
  function errorKinds() {
    var kinds = {};
    points.forEach(function (p) { Object.keys(p.totals.errors || {}).forEach(function (k) { kinds[k] = 1; }); });
    return Object.keys(kinds).sort();
  }
  function errorDelta(match) {
    return perSecond(points.map(function (p) {
      var errors = p.totals.errors || {}, sum = 0;
      Object.keys(errors).forEach(function (k) { if (match(k)) sum += num(errors[k]); });
      return sum;
    }));
  }
  function gauge(read) { return points.map(function (p) { return p.s ? read(p.s) : null; }); }
  function latency(which) {
    return gauge(function (s) { var l = s.latency_ms || {}; return num(l.count) ? num(l[which]) : null; });
  }
  function isLoginFailure(kind) { return /^(login_|game_login|chat_login|web_)/.test(kind); }

  // -- charts ------------------------------------------------------------------------------------

  function niceStep(span, ticks) {
    var raw = span / ticks, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= raw) return steps[i] * power;
    return 10 * power;
  }
  function svgEl(tag, attrs, text) {
    var node = document.createElementNS(SVGNS, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function chart(id, title, unit, series, note) {
    var W = 560, H = 230, L = 54, R = 12, T = 10, B = 26;
    var fig = el("figure");
    fig.id = "chart-" + id;
    fig.setAttribute("data-chart", id);
    fig.setAttribute("data-points", String(points.length));
    fig.appendChild(el("figcaption", title + (unit ? " (" + unit + ")" : "")));
    var svg = svgEl("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    var x0 = 0, x1 = Math.max(1, xs.length ? xs[xs.length - 1] : 1);
    var ymax = 0;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v !== null && v > ymax) ymax = v; }); });
    var ystep = niceStep(ymax > 0 ? ymax : 1, 4);
    var ytop = Math.max(ystep, Math.ceil((ymax > 0 ? ymax : 1) / ystep) * ystep);
    function px(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function py(y) { return H - B - y / ytop * (H - T - B); }
    for (var y = 0; y <= ytop + ystep / 2; y += ystep) {
      svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: py(y), y2: py(y), stroke: "#e5e8ed" }));
      svg.appendChild(svgEl("text", { x: L - 6, y: py(y) + 4, "text-anchor": "end" }, fmt(Math.round(y * 1000) / 1000)));
    }
    var xstep = Math.max(1, niceStep(x1 - x0, 8));
    for (var x = 0; x <= x1 + 1e-9; x += xstep) {
      svg.appendChild(svgEl("text", { x: px(x), y: H - 8, "text-anchor": "middle" }, fmt(x) + "s"));
    }
    svg.appendChild(svgEl("line", { x1: L, x2: W - R, y1: py(0), y2: py(0), stroke: "#9aa3b0" }));
    var hooked = { points: points.length, x: xs, series: {} };
    var legend = el("div", null, "legend");
    series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length], d = "", drawn = 0, pen = false;
      s.values.forEach(function (v, j) {
        if (v === null) { pen = false; return; }
        d += (pen ? "L" : "M") + px(xs[j]).toFixed(1) + " " + py(v).toFixed(1);
        pen = true;
        drawn += 1;
        if (points.length <= 120) {
          svg.appendChild(svgEl("circle", { cx: px(xs[j]).toFixed(1), cy: py(v).toFixed(1), r: 2, fill: color }));
        }
      });
      var path = svgEl("path", { d: d || "M0 0", fill: "none", stroke: color, "stroke-width": 1.8,
                                 "class": "series", "data-drawn": drawn });
      path.setAttribute("data-label", s.label);
      svg.appendChild(path);
      hooked.series[s.label] = s.values;
      var key = el("span", s.label);
      key.style.setProperty("--c", color);
      legend.appendChild(key);
    });
    var cursor = svgEl("line", { x1: 0, x2: 0, y1: T, y2: H - B, stroke: "#9aa3b0", visibility: "hidden" });
    svg.appendChild(cursor);
    fig.appendChild(svg);
    fig.appendChild(legend);
    if (note) fig.appendChild(el("div", note, "note"));
    var tip = el("div", null, "tip");
    fig.appendChild(tip);
    svg.addEventListener("mousemove", function (event) {
      var box = svg.getBoundingClientRect();
      var vx = (event.clientX - box.left) / box.width * W;
      var best = 0;
      xs.forEach(function (x, j) { if (Math.abs(px(x) - vx) < Math.abs(px(xs[best]) - vx)) best = j; });
      cursor.setAttribute("x1", px(xs[best]));
      cursor.setAttribute("x2", px(xs[best]));
      cursor.setAttribute("visibility", "visible");
      var lines = [fmt(xs[best]) + " s" + (points[best].end ? " (end of run, wind-down)" : "")];
      series.forEach(function (s) { lines.push(s.label + ": " + fmt(s.values[best])); });
      tip.textContent = lines.join("\n");
      tip.style.display = "block";
      tip.style.left = Math.min(event.clientX - fig.getBoundingClientRect().left + 14, fig.clientWidth - 220) + "px";
      tip.style.top = (event.clientY - fig.getBoundingClientRect().top + 14) + "px";
    });
    svg.addEventListener("mouseleave", function () {
      tip.style.display = "none";
      cursor.setAttribute("visibility", "hidden");
    });
    hook.charts[id] = hooked;
    return fig;
  }

  function drawCharts() {
    var box = document.getElementById("charts");
    var end = points.length && points[points.length - 1].end
      ? "The last point is the end of the run: the last part-second and the wind-down." : null;
    if (chat) {
      box.appendChild(chart("tps", "Throughput", "per second", [
        { label: "messages sent", values: delta("messages_sent") },
        { label: "messages received", values: delta("messages_recv") },
        { label: "sector moves sent", values: delta("moves_sent") },
        { label: "send TPS (packets)", values: gauge(function (s) { return num(s.send_tps); }) },
        { label: "recv TPS (packets)", values: gauge(function (s) { return num(s.recv_tps); }) },
      ], end));
    } else {
      box.appendChild(chart("tps", "Throughput", "per second", [
        { label: "echoes sent", values: delta("echo_sent") },
        { label: "echo replies", values: delta("echo_recv") },
        { label: "send TPS (packets)", values: gauge(function (s) { return num(s.send_tps); }) },
        { label: "recv TPS (packets)", values: gauge(function (s) { return num(s.recv_tps); }) },
      ], end));
    }
    box.appendChild(chart("latency", chat ? "Reply latency (moves and own messages)" : "Echo latency", "ms", [
      { label: "p50", values: latency("p50") }, { label: "p95", values: latency("p95") },
      { label: "p99", values: latency("p99") }, { label: "max", values: latency("max") },
    ], "Percentiles of each second's replies; no point in a second without replies."));
    var gauges = chat ? [
      { label: "connected", values: gauge(function (s) { return num(s.connected); }) },
      { label: "logged in (chat)", values: gauge(function (s) { return num(s.in_chat); }) },
      { label: "logging in", values: gauge(function (s) { return num(s.in_login); }) },
      { label: "disconnected", values: gauge(function (s) { return num(s.clients) - num(s.connected); }) },
    ] : [
      { label: "logged in (game)", values: gauge(function (s) { return num(s.in_game); }) },
      { label: "logging in", values: gauge(function (s) { return num(s.in_login); }) },
      { label: "disconnected", values: gauge(function (s) { return num(s.clients) - num(s.in_login) - num(s.in_game); }) },
    ];
    box.appendChild(chart("connections", "Connections", "clients", gauges.concat([
      { label: "connects / s", values: delta("connect_total") },
      { label: "disconnects / s (on purpose)", values: delta("disconnects") },
    ])));
    var logins = [
      { label: "logins", values: delta("login_ok") },
      { label: "login failures", values: errorDelta(isLoginFailure) },
      { label: "connect failures", values: delta("connect_fail") },
    ];
    if (cumulative("web_ok").some(function (v) { return v > 0; })) {
      logins.push({ label: "web logins", values: delta("web_ok") });
    }
    box.appendChild(chart("logins", "Logins", "per second", logins,
      "Login failures: every error kind login_*, " + (chat ? "chat_login_*" : "game_login_*") + " and web_*."));
    var errors = [{ label: "all errors", values: errorDelta(function () { return true; }) }];
    errorKinds().forEach(function (kind) {
      errors.push({ label: kind, values: errorDelta(function (k) { return k === kind; }) });
    });
    box.appendChild(chart("errors", "Errors by kind", "per second", errors));
    var down = [
      { label: "Down Client / s", values: delta("down_client") },
      { label: "Down Client total", values: cumulative("down_client") },
    ];
    if (chat) {
      down.push({ label: "Login DownClient / s", values: delta("login_down") });
      down.push({ label: "Chat DownClient / s", values: delta("chat_down") });
    }
    box.appendChild(chart("down", "Down Client", "connections the server closed", down));
  }

  // -- tables ------------------------------------------------------------------------------------

  function fillTables() {
    var options = report.options || {};
    var agents = report.agents || [];
    var title = (chat ? "Chat dummy" : "Dummy") + " load report";
    document.getElementById("title").textContent = title;
    document.getElementById("subtitle").textContent = data.started + "  -  " + fmt(report.duration_s) + " s  -  " +
      fmt(report.clients) + " clients";
    var verdict = document.getElementById("verdict");
    verdict.textContent = data.passed ? "PASS" : "FAIL";
    verdict.className = "verdict " + (data.passed ? "pass" : "fail");
    rows(document.getElementById("run"), null, [
      ["App", chat ? "chat (chat port)" : "echo (game port)"],
      ["Path", options.path],
      ["Link mode", data.link_mode || "unknown"],
      ["Started", data.started], ["Finished", data.finished],
      ["Duration (s)", report.duration_s],
      ["Clients", report.clients],
      ["Agents", agents.length],
      ["Connect check", report.connect_matches_accept === null || report.connect_matches_accept === undefined
        ? "not made" + (report.accept_note ? " (" + report.accept_note + ")" : "")
        : report.connect_matches_accept ? "connect_total == accept_total" : "MISMATCH"],
      ["Verdict", data.passed ? "pass" : "fail"],
    ]);
    rows(document.getElementById("knobs"), ["Knob", "Value"], Object.keys(options).sort().map(function (k) {
      return [k, typeof options[k] === "number" ? String(options[k]) : options[k]];  // no 50,000 ports
    }));
    document.getElementById("closing").textContent = data.closing || "";
    var counters = [];
    Object.keys(report).forEach(function (k) {
      var v = report[k];
      if (typeof v === "number" || typeof v === "boolean" || v === null) counters.push([k, v]);
    });
    Object.keys(report.web || {}).forEach(function (k) { counters.push(["web " + k, report.web[k]]); });
    Object.keys(report.latency_ms || {}).forEach(function (k) { counters.push(["latency " + k + " (ms)", report.latency_ms[k]]); });
    rows(document.getElementById("counters"), ["Counter", "Value"], counters);
    var errors = report.errors || {};
    var errorRows = Object.keys(errors).sort().map(function (k) { return [k, errors[k]]; });
    rows(document.getElementById("errors"), ["Error", "Count"], errorRows.length ? errorRows : [["none", 0]]);
    var columns = [];
    agents.forEach(function (a) {
      Object.keys(a).forEach(function (k) { if (columns.indexOf(k) < 0) columns.push(k); });
    });
    rows(document.getElementById("agents"), columns, agents.map(function (a) {
      return columns.map(function (k) {
        var v = a[k];
        if (k === "errors" && v && typeof v === "object") {
          return Object.keys(v).sort().map(function (e) { return e + "=" + v[e]; }).join(", ") || "none";
        }
        return v;
      });
    }));
  }

  try {
    fillTables();
    drawCharts();
  } catch (error) {
    hook.problems.push(String(error));
    throw error;
  }
  hook.ready = true;
  document.body.setAttribute("data-ready", "1");
})();
