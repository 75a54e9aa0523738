// The monitor's live dashboard: polls /api/series every second and draws every chart on a
// canvas (no library). The DB ranges read /api/history (the status_server rows) instead.
// Test hook: window.dashboard = {mode, polls, charts: {id: {points, lines, db}}, error}: the
// points and lines each chart draws now, and whether it has a DB-range equivalent.
"use strict";

(() => {
  const POLL_MS = 1000;
  const DB_REFRESH_MS = 30000;
  const PALETTE = ["#4f7cff", "#e8613c", "#2aa876", "#b04fd6", "#e0a21b", "#1fa5c4",
    "#d6457a", "#6b8e23", "#8a5a44", "#5561a8", "#c0392b", "#16a085"];
  const RANGES = [
    { id: "live10m", label: "10 min", span: 600 },
    { id: "live1h", label: "1 h", span: 3600 },
    { id: "db1h", label: "DB 1 h", span: 3600, db: true },
    { id: "db24h", label: "DB 24 h", span: 86400, db: true },
    { id: "db7d", label: "DB 7 d", span: 7 * 86400, db: true },
  ];
  const PROC_TABLES = ["battle", "chat", "login"];
  // A chart: the live fields it draws ([suffix, field]) of the sources of `kind`, or every
  // field starting with `prefix`; `db`: the status_server tables and columns it draws instead.
  const PANELS = [
    { title: "Hosts", charts: [
      { id: "host_cpu", title: "CPU total", unit: "%", kind: "host",
        fields: [["", "cpu_total"]], db: { tables: ["hardware"], cols: [["", "CPUUsage"]] } },
      { id: "host_available", title: "Available memory", unit: "MB", kind: "host",
        fields: [["", "available_mb"]],
        db: { tables: ["hardware"], cols: [["", "AvailableMBytes"]] } },
      { id: "host_nonpaged", title: "NonPaged memory", unit: "MB", kind: "host",
        fields: [["", "nonpaged_mb"]], db: { tables: ["hardware"], cols: [["", "NonPagedBytes"]] } },
      { id: "host_network", title: "Network", unit: "KB/s", kind: "host",
        fields: [["in", "net_recv_kbps"], ["out", "net_send_kbps"]] },
    ] },
    { title: "Processes", charts: [
      { id: "proc_cpu", title: "CPU", unit: "% of a core", kind: "process",
        fields: [["", "cpu_percent"]], db: { tables: PROC_TABLES, cols: [["", "CPUUsage"]] } },
      { id: "proc_memory", title: "Memory", unit: "MB", kind: "process",
        fields: [["", "memory_mb"]], db: { tables: PROC_TABLES, cols: [["", "CommitMemory"]] } },
      { id: "proc_packet_pool", title: "Packet pool", unit: "messages", kind: "process",
        fields: [["", "packet_pool"]], db: { tables: PROC_TABLES, cols: [["", "PacketPool"]] } },
      { id: "proc_sessions", title: "Sessions", unit: "", kind: "process",
        fields: [["", "sessions"]], db: { tables: PROC_TABLES, cols: [["", "SessionAll"]] } },
    ] },
    { title: "Login", charts: [
      { id: "login_tps", title: "LoginSuccess TPS", unit: "/s", kind: "process",
        fields: [["", "login_success_tps"]],
        db: { tables: ["login"], cols: [["", "LoginSuccessTPS"]] } },
      { id: "login_latency", title: "Login latency", unit: "ms", kind: "process",
        fields: [["min", "login_latency_min_ms"], ["avg", "login_latency_avg_ms"],
          ["max", "login_latency_max_ms"]] },
    ] },
    { title: "Game", charts: [
      { id: "game_fps", title: "Auth / Game FPS", unit: "frames/s", kind: "process",
        fields: [["auth", "auth_fps"], ["game", "game_fps"]],
        db: { tables: ["battle"], cols: [["auth", "AuthFPS"], ["game", "GameFPS"]] } },
      { id: "game_sessions", title: "Sessions per mode", unit: "", kind: "process",
        fields: [["auth", "session_auth"], ["game", "session_game"],
          ["login port", "sessions_login"], ["game port", "sessions_game"],
          ["chat port", "sessions_chat"]],
        db: { tables: ["battle"], cols: [["auth", "SessionAuth"], ["game", "SessionGame"]] } },
    ] },
    { title: "Chat", charts: [
      { id: "chat_players", title: "Players (logged in)", unit: "", kind: "process",
        fields: [["", "session_login"]], db: { tables: ["chat"], cols: [["", "SessionLogin"]] } },
      { id: "chat_messages", title: "Messages", unit: "/s", kind: "process",
        fields: [["received", "message_tps"], ["delivered", "delivery_tps"]] },
    ] },
    { title: "Drops", charts: [
      { id: "drops", title: "Drops by reason", unit: "/s", kind: "process", prefix: "drops." },
    ] },
  ];

  const sources = new Map(); // key -> {info, t: [], fields: {name: []}}
  const charts = [];
  const hook = { mode: RANGES[0].id, polls: 0, charts: {}, error: null };
  window.dashboard = hook;
  let range = RANGES[0];
  let cursor = null; // the last answer's `now`
  let windowSeconds = 3600;
  let now = Date.now() / 1000;
  let dbRows = null; // table -> rows, in a DB range
  let dbTimer = null;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return v.toFixed(a >= 10 ? 1 : 2);
  }

  function clock(t, span) {
    const d = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
    if (span > 2 * 86400) return pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hm;
    return span <= 1800 ? hm + ":" + pad(d.getSeconds()) : hm;
  }

  function colour(index) {
    return PALETTE[index % PALETTE.length];
  }

  function build() {
    const nav = document.getElementById("ranges");
    for (const r of RANGES) {
      const button = el("button", r === range ? "on" : "", r.label);
      button.dataset.range = r.id;
      button.addEventListener("click", () => select(r));
      nav.appendChild(button);
    }
    const main = document.getElementById("panels");
    for (const panel of PANELS) {
      const section = el("section", "panel");
      section.appendChild(el("h2", "", panel.title));
      const grid = el("div", "charts");
      for (const spec of panel.charts) {
        const figure = el("figure", "chart");
        figure.dataset.chart = spec.id;
        const caption = el("figcaption", "", spec.title + " ");
        caption.appendChild(el("span", "unit", spec.unit ? "(" + spec.unit + ")" : ""));
        const canvas = el("canvas");
        const legend = el("ul", "legend");
        figure.append(caption, canvas, legend);
        grid.appendChild(figure);
        charts.push({ spec, figure, canvas, legend });
      }
      section.appendChild(grid);
      main.appendChild(section);
    }
  }

  function select(r) {
    range = r;
    hook.mode = r.id;
    for (const b of document.querySelectorAll("#ranges button")) {
      b.className = b.dataset.range === r.id ? "on" : "";
    }
    clearInterval(dbTimer);
    dbRows = null;
    if (r.db) {
      loadHistory();
      dbTimer = setInterval(loadHistory, DB_REFRESH_MS);
    }
    render();
  }

  // -- live series ---------------------------------------------------------------------------

  function merge(answer) {
    now = answer.now;
    windowSeconds = answer.window;
    for (const entry of answer.series) {
      let store = sources.get(entry.key);
      if (!store) {
        store = { info: entry, t: [], fields: {} };
        sources.set(entry.key, store);
      }
      const before = store.t.length;
      for (const name of Object.keys(entry.fields)) {
        if (!store.fields[name]) store.fields[name] = new Array(before).fill(null);
      }
      for (const [name, values] of Object.entries(store.fields)) {
        const added = entry.fields[name] || new Array(entry.t.length).fill(null);
        for (const v of added) values.push(v);
      }
      for (const t of entry.t) store.t.push(t);
    }
    const horizon = now - windowSeconds;
    for (const [key, store] of sources) {
      let cut = 0;
      while (cut < store.t.length && store.t[cut] < horizon) cut++;
      if (cut) {
        store.t.splice(0, cut);
        for (const values of Object.values(store.fields)) values.splice(0, cut);
      }
      if (!store.t.length) sources.delete(key);
    }
  }

  function liveLines(spec) {
    const lines = [];
    for (const [key, store] of sources) {
      if (store.info.kind !== spec.kind) continue;
      const wanted = spec.prefix
        ? Object.keys(store.fields).filter((n) => n.startsWith(spec.prefix)).sort()
            .map((n) => [n.slice(spec.prefix.length), n])
        : spec.fields.filter(([, n]) => store.fields[n]);
      for (const [suffix, name] of wanted) {
        const values = store.fields[name];
        if (!values.some((v) => v !== null)) continue;
        lines.push({ key: key + "/" + name, label: store.info.label + (suffix ? " " + suffix : ""),
          title: store.info.id, t: store.t, v: values });
      }
    }
    return lines;
  }

  async function poll() {
    try {
      const url = "api/series" + (cursor === null ? "" : "?since=" + cursor);
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) throw new Error("/api/series: HTTP " + response.status);
      const answer = await response.json();
      merge(answer);
      cursor = answer.now;
      hook.polls += 1;
      hook.error = null;
      if (!range.db) render();
      setState("live · " + sources.size + " series · " + clock(now, 0), false);
    } catch (error) {
      hook.error = String(error);
      setState("monitor unreachable: " + error.message, true);
    }
    setTimeout(poll, POLL_MS);
  }

  function setState(text, bad) {
    const state = document.getElementById("state");
    state.textContent = text;
    state.className = bad ? "error" : "";
  }

  // -- DB history ----------------------------------------------------------------------------

  async function loadHistory() {
    const r = range;
    const until = Date.now() / 1000;
    const since = until - r.span;
    setState("reading the status_server tables…", false);
    try {
      const tables = ["hardware", ...PROC_TABLES];
      const answers = await Promise.all(tables.map(async (table) => {
        const url = "api/history?table=" + table + "&since=" + Math.floor(since) +
          "&until=" + Math.ceil(until);
        const response = await fetch(url, { cache: "no-store" });
        if (!response.ok) throw new Error(table + ": HTTP " + response.status + " " +
          (await response.text()).trim());
        return response.json();
      }));
      if (r !== range) return;
      dbRows = {};
      let count = 0;
      for (const answer of answers) {
        dbRows[answer.table] = answer.rows;
        count += answer.rows.length;
      }
      hook.error = null;
      setState(r.label + " · " + count + " rows", false);
      render();
    } catch (error) {
      hook.error = String(error);
      setState("history: " + error.message, true);
    }
  }

  function shortWriter(writer) {
    if (!writer) return "?";
    const at = writer.indexOf("@");
    if (at < 0) return writer;
    return writer.slice(0, at) + " " + writer.slice(writer.lastIndexOf("/") + 1).slice(-4);
  }

  function dbLines(spec) {
    if (!spec.db || !dbRows) return [];
    const lines = new Map();
    for (const table of spec.db.tables) {
      for (const row of dbRows[table] || []) {
        for (const [suffix, column] of spec.db.cols) {
          const key = table + "/" + row.writer + "/" + column;
          let line = lines.get(key);
          if (!line) {
            line = { key, label: shortWriter(row.writer) + (suffix ? " " + suffix : ""),
              title: row.writer, t: [], v: [], dots: true };
            lines.set(key, line);
          }
          line.t.push(row.t);
          line.v.push(row[column]);
        }
      }
    }
    return [...lines.values()];
  }

  // -- drawing -------------------------------------------------------------------------------

  function render() {
    const t1 = range.db ? Date.now() / 1000 : now;
    let t0 = t1 - (range.db ? range.span : Math.min(range.span, windowSeconds));
    if (!range.db) { // a young monitor: its points fill the width (a minute at least)
      let oldest = t1 - 60;
      for (const store of sources.values()) {
        if (store.t.length) oldest = Math.min(oldest, store.t[0]);
      }
      t0 = Math.max(t0, oldest);
    }
    const counts = {};
    for (const chart of charts) {
      const lines = range.db ? dbLines(chart.spec) : liveLines(chart.spec);
      let points = 0;
      for (const line of lines) for (const v of line.v) if (v !== null) points++;
      counts[chart.spec.id] = { points, lines: lines.length, db: Boolean(chart.spec.db) };
      chart.figure.dataset.points = String(points);
      const note = range.db && !chart.spec.db ? "not in the status_server tables" : "no data yet";
      draw(chart.canvas, lines, t0, t1, note);
      legend(chart.legend, lines);
    }
    hook.charts = counts;
  }

  function legend(list, lines) {
    list.replaceChildren();
    for (const [index, line] of lines.entries()) {
      const item = el("li");
      item.title = line.title;
      const swatch = el("span", "swatch");
      swatch.style.backgroundColor = colour(index);
      let last = null;
      for (let i = line.v.length - 1; i >= 0 && last === null; i--) last = line.v[i];
      item.append(swatch, line.label + " ", el("span", "value", fmt(last)));
      list.appendChild(item);
    }
  }

  function draw(canvas, lines, t0, t1, note) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 360;
    const height = canvas.clientHeight || 150;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const left = 44, right = 6, top = 6, bottom = 18;
    const plotW = width - left - right, plotH = height - top - bottom;
    let max = 0;
    for (const line of lines) {
      for (let i = 0; i < line.t.length; i++) {
        const v = line.v[i];
        if (v !== null && line.t[i] >= t0 && v > max) max = v;
      }
    }
    max = niceMax(max);
    const x = (t) => left + ((t - t0) / (t1 - t0)) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;
    ctx.font = "10px system-ui, sans-serif";
    ctx.strokeStyle = "#e3e6ec";
    ctx.fillStyle = "#6b7385";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const py = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, py);
      ctx.lineTo(left + plotW, py);
      ctx.stroke();
      ctx.fillText(fmt(v), left - 4, py);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (let i = 0; i <= 4; i++) {
      const t = t0 + ((t1 - t0) * i) / 4;
      ctx.fillText(clock(t, t1 - t0), Math.min(Math.max(x(t), left + 20), width - 24), top + plotH + 4);
    }
    let drawn = 0;
    for (const [index, line] of lines.entries()) {
      ctx.strokeStyle = ctx.fillStyle = colour(index);
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < line.t.length; i++) {
        const v = line.v[i];
        if (line.t[i] < t0 || v === null) { pen = false; continue; }
        const px = x(line.t[i]), py = y(v);
        if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
        pen = true;
        drawn++;
        if (line.dots) ctx.fillRect(px - 1.5, py - 1.5, 3, 3);
      }
      ctx.stroke();
    }
    if (!drawn) {
      ctx.fillStyle = "#6b7385";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(note, left + plotW / 2, top + plotH / 2);
    }
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * step) return m * step;
    return 10 * step;
  }

  build();
  window.addEventListener("resize", render);
  poll();
})();
