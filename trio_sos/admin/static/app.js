// The trio_sos admin dashboard: signs a SigV4 presigned URL for /ws with WebCrypto, speaks the admin protocol
// (docs/admin-protocol.md) over it, and shows what it hears. No library, no build step; every string from the
// node reaches the DOM through textContent.
"use strict";

(() => {
  const SERVICE = "trio-sos-admin";
  const WORKERS = ["repair", "scrub", "gc", "lifecycle"];
  const WORKER_OPS = ["start", "pause", "resume", "cancel"];
  const STATUS_EVERY_MS = 5000;
  const MAX_EVENTS = 50;
  const HISTORY = 60; // stats samples kept for the sparklines (2 minutes)
  const REFUSED = "connection refused: check the key (must be an administrator)";
  const TRAFFIC = [ // field of the stats event, label, formatter
    ["requests_per_s", "Requests/s", (v) => fmtNum(v, 1)],
    ["errors_per_s", "Errors/s", (v) => fmtNum(v, 1)],
    ["bytes_in_per_s", "In", (v) => fmtBytes(v) + "/s"],
    ["bytes_out_per_s", "Out", (v) => fmtBytes(v) + "/s"],
    ["latency_ms", "Latency", (v) => fmtNum(v, 1) + " ms"],
    ["connections", "Connections", (v) => fmtNum(v, 0)],
  ];
  const QUIET_EVENTS = new Set(["stats", "progress"]); // they have panels of their own, not lines in the list

  const $ = (selector, root = document) => root.querySelector(selector);
  const encoder = new TextEncoder();

  let creds = null; // {accessKey, secretKey, region}: in this page's memory only
  let ws = null;
  let everOpened = false; // this sign-in reached the node at least once (then a close means: reconnect)
  let retryDelay = 1000;
  let retryTimer = null;
  let statusTimer = null;
  let nextId = 1;
  const pending = new Map(); // request id -> {op, done}
  const agentRows = new Map(); // agent id -> <tr>
  const history = Object.fromEntries(TRAFFIC.map(([key]) => [key, []]));

  // ---- formatting ----

  function fmtNum(v, digits) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "—";
  }

  function fmtBytes(v) {
    if (typeof v !== "number" || !isFinite(v)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i ? v.toFixed(1) : v.toFixed(0)) + " " + units[i];
  }

  function fmtSeconds(s) {
    if (typeof s !== "number" || !isFinite(s)) return "—";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function fmtTime(at) {
    return typeof at === "number" ? new Date(at * 1000).toLocaleTimeString() : "";
  }

  function text(v) {
    return v === null || v === undefined || v === "" ? "—" : String(v);
  }

  function el(tag, attrs = {}, content) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (content !== undefined) node.textContent = content;
    return node;
  }

  // ---- SigV4 presigning (WebCrypto) ----

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function hmac(key, message) {
    const k = await crypto.subtle.importKey("raw", key, {name: "HMAC", hash: "SHA-256"}, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", k, encoder.encode(message)));
  }

  async function sha256Hex(message) {
    return hex(await crypto.subtle.digest("SHA-256", encoder.encode(message)));
  }

  // RFC 3986: encodeURIComponent leaves !'()* alone; SigV4 wants them escaped
  function uriEncode(s) {
    return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  }

  // The query string of a presigned GET /ws for `host` (signed header: host; payload: UNSIGNED-PAYLOAD).
  async function presignedQuery({accessKey, secretKey, region}, host, now = new Date()) {
    const amzDate = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+/, ""); // YYYYMMDDTHHMMSSZ
    const date = amzDate.slice(0, 8);
    const scope = `${date}/${region}/${SERVICE}/aws4_request`;
    const params = {
      "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
      "X-Amz-Credential": `${accessKey}/${scope}`,
      "X-Amz-Date": amzDate,
      "X-Amz-Expires": "60",
      "X-Amz-SignedHeaders": "host",
    };
    const query = Object.keys(params).sort()
      .map((name) => uriEncode(name) + "=" + uriEncode(params[name])).join("&");
    const canonical = ["GET", "/ws", query, `host:${host.toLowerCase()}\n`, "host", "UNSIGNED-PAYLOAD"].join("\n");
    const toSign = ["AWS4-HMAC-SHA256", amzDate, scope, await sha256Hex(canonical)].join("\n");
    let key = encoder.encode("AWS4" + secretKey);
    for (const part of [date, region, SERVICE, "aws4_request"]) key = await hmac(key, part);
    return query + "&X-Amz-Signature=" + hex(await hmac(key, toSign));
  }

  // ---- connection ----

  function setConnection(connected, label) {
    const node = $("#connection");
    node.dataset.connection = connected ? "connected" : "disconnected";
    node.textContent = label || (connected ? "connected" : "disconnected");
    for (const button of document.querySelectorAll(".worker button")) button.disabled = !connected;
  }

  function showError(message) {
    $("#error").textContent = message;
  }

  function showNotice(message) {
    const node = $("#notice");
    node.textContent = message;
    node.hidden = !message;
  }

  async function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (!creds) return;
    if (!window.crypto || !crypto.subtle) {
      showError("this page needs WebCrypto: open it over https, or on 127.0.0.1 / localhost");
      return;
    }
    setConnection(false, everOpened ? "reconnecting…" : "connecting…");
    const query = await presignedQuery(creds, location.host); // re-signed for every attempt
    if (!creds) return; // signed out meanwhile
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
    ws = sock;
    let opened = false;
    sock.onopen = () => {
      opened = everOpened = true;
      retryDelay = 1000;
      setConnection(true);
      showError("");
      $("#login").hidden = true;
      $("#dashboard").hidden = false;
      $("#session-user").textContent = "signed in as " + creds.accessKey;
      request("subscribe", {topics: ["*"]});
      refreshStatus();
      statusTimer = setInterval(refreshStatus, STATUS_EVERY_MS);
    };
    sock.onmessage = (message) => receive(message.data);
    sock.onclose = (close) => {
      if (ws !== sock) return; // signed out, or replaced
      ws = null;
      clearInterval(statusTimer);
      pending.clear();
      setConnection(false);
      if (!opened && !everOpened) {
        refused(); // the upgrade was answered 401/403 (or nobody answered): the browser only sees a close
        return;
      }
      const delay = retryDelay;
      retryDelay = Math.min(retryDelay * 2, 30000);
      showError(`connection lost (code ${close.code}); reconnecting in ${delay / 1000} s`);
      retryTimer = setTimeout(reconnect, delay);
    };
  }

  function reconnect() {
    connect().catch((err) => showError("cannot connect: " + err.message));
  }

  async function refused() {
    creds = null;
    $("#login").hidden = false;
    let up = false;
    try {
      up = (await fetch("/health", {cache: "no-store"})).ok;
    } catch (err) {
      up = false;
    }
    showError(up ? REFUSED : "the node does not answer (is it running?)");
  }

  function signOut() {
    creds = null;
    everOpened = false;
    clearTimeout(retryTimer);
    clearInterval(statusTimer);
    pending.clear();
    const sock = ws;
    ws = null;
    if (sock) sock.close(1000);
    setConnection(false);
    showError("");
    showNotice("");
    $("#dashboard").hidden = true;
    $("#login").hidden = false;
    for (const tbody of document.querySelectorAll("#agents tbody, #nodes tbody")) tbody.replaceChildren();
    agentRows.clear();
    $("#events").replaceChildren();
    for (const values of Object.values(history)) values.length = 0;
  }

  function request(op, args, done) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const id = nextId++;
    pending.set(id, {op, done});
    const message = {id, op};
    if (args !== undefined) message.args = args;
    ws.send(JSON.stringify(message));
  }

  function refreshStatus() {
    for (const {op} of pending.values()) if (op === "status") return; // one at a time
    request("status", undefined, renderStatus);
  }

  function receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch (err) {
      return;
    }
    if (message === null || typeof message !== "object") return;
    if ("event" in message) {
      onEvent(message);
      return;
    }
    const waiting = pending.get(message.id);
    pending.delete(message.id);
    if (!message.ok) {
      const error = message.error || {};
      showError(`${waiting ? waiting.op : "request"} failed: ${text(error.code)}: ${text(error.message)}`);
    } else if (waiting && waiting.done) {
      waiting.done(message.result);
    }
  }

  // ---- status ----

  function renderStatus(status) {
    renderNodes(status.nodes || (status.node ? [status.node] : []));
    renderAgents(status.agents || []);
    for (const worker of WORKERS) if (status.workers && status.workers[worker]) renderWorker(status.workers[worker]);
  }

  function renderNodes(nodes) {
    const tbody = $("#nodes tbody");
    tbody.replaceChildren(...nodes.map((n) => {
      const row = el("tr", {"data-node-id": text(n.id)});
      row.append(el("td", {"data-field": "id"}, text(n.id)), el("td", {"data-field": "endpoint"}, text(n.endpoint)),
        el("td", {"data-field": "version"}, text(n.version)), el("td", {"data-field": "zone"}, text(n.zone)),
        el("td", {"data-field": "self"}, n.self ? "yes" : ""));
      return row;
    }));
  }

  const AGENT_FIELDS = ["id", "address", "zone", "state", "health", "latency", "fill"];

  function renderAgents(agents) {
    const seen = new Set();
    for (const agent of agents) {
      seen.add(agent.id);
      updateAgent(agent);
    }
    for (const [id, row] of agentRows) {
      if (!seen.has(id)) {
        row.remove();
        agentRows.delete(id);
      }
    }
    $("#no-agents").hidden = agentRows.size > 0;
  }

  function agentRow(id) {
    let row = agentRows.get(id);
    if (!row) {
      row = el("tr", {"data-agent-id": id});
      for (const field of AGENT_FIELDS) row.append(el("td", {"data-field": field}));
      const fill = $('[data-field="fill"]', row);
      fill.append(el("meter", {min: "0", max: "1", value: "0"}), el("span", {class: "percent"}));
      $('[data-field="id"]', row).title = id;
      $("#agents tbody").append(row);
      agentRows.set(id, row);
      $("#no-agents").hidden = true;
    }
    return row;
  }

  function setCell(row, field, value) {
    const cell = $(`[data-field="${field}"]`, row);
    cell.textContent = text(value);
    if (field === "state" || field === "health") cell.className = `${field}-${text(value)}`;
  }

  function updateAgent(a) {
    if (typeof a.id !== "string") return;
    const row = agentRow(a.id);
    setCell(row, "id", a.id.slice(0, 8));
    setCell(row, "address", a.address);
    setCell(row, "zone", a.zone);
    setCell(row, "state", a.state);
    setCell(row, "health", a.health);
    setCell(row, "latency", typeof a.latency_ms === "number" ? fmtNum(a.latency_ms, 1) + " ms" : null);
    const fill = $('[data-field="fill"]', row);
    const share = a.capacity > 0 ? Math.min(1, a.used / a.capacity) : 0;
    $("meter", fill).value = share;
    $(".percent", fill).textContent = a.capacity > 0
      ? `${fmtBytes(a.used)} / ${fmtBytes(a.capacity)} (${(share * 100).toFixed(1)} %)` : text(null);
  }

  function agentEvent(id, field, value) {
    const row = agentRows.get(id);
    if (row) setCell(row, field, value);
    else refreshStatus(); // an agent this page has not seen yet
  }

  // ---- workers ----

  const WORKER_FIELDS = [["state", "State"], ["leader", "Leader"], ["done", "Done"], ["left", "Left"],
    ["rate", "Rate"], ["eta", "ETA"], ["passes", "Passes"], ["findings", "Findings"]];

  function buildWorkers() {
    for (const worker of WORKERS) {
      const panel = $(`[data-worker="${worker}"]`);
      const list = el("dl");
      for (const [field, label] of WORKER_FIELDS) list.append(el("dt", {}, label), el("dd", {"data-field": field}, "—"));
      const bar = el("progress", {max: "1", value: "0", "aria-label": `${worker} pass progress`});
      const buttons = el("div", {class: "buttons"});
      for (const op of WORKER_OPS) {
        const button = el("button", {type: "button", "data-op": op}, op);
        button.disabled = true;
        button.addEventListener("click", () => request(`${worker}.${op}`, undefined, renderWorker));
        buttons.append(button);
      }
      panel.append(list, bar, buttons);
    }
  }

  function renderWorker(p) {
    if (!p || !WORKERS.includes(p.worker)) return;
    const panel = $(`[data-worker="${p.worker}"]`);
    const unit = p.unit ? " " + p.unit : "";
    const set = (field, value) => { $(`[data-field="${field}"]`, panel).textContent = text(value); };
    set("state", p.state);
    panel.dataset.state = text(p.state);
    set("leader", p.leader);
    set("done", typeof p.done === "number" ? p.done + unit : null);
    set("left", typeof p.left === "number" ? p.left + unit : null);
    set("rate", typeof p.rate === "number" ? fmtNum(p.rate, 1) + unit + "/s" : null);
    set("eta", p.state === "running" ? fmtSeconds(p.eta_s) : null);
    set("passes", p.passes);
    set("findings", p.findings);
    const bar = $("progress", panel);
    const total = (p.done || 0) + (p.left || 0);
    if (typeof p.left === "number" && total > 0) {
      bar.max = total;
      bar.value = p.done || 0;
    } else if (p.state === "running") {
      bar.removeAttribute("value"); // GC counts no queue: indeterminate while it runs
    } else {
      bar.max = 1;
      bar.value = p.state === "idle" && p.passes ? 1 : 0;
    }
  }

  function setLeader(worker, leader) {
    if (!WORKERS.includes(worker)) return;
    $(`[data-worker="${worker}"] [data-field="leader"]`).textContent = text(leader);
  }

  // ---- traffic ----

  function buildTraffic() {
    const box = $("#traffic");
    for (const [key, label] of TRAFFIC) {
      const figure = el("figure", {class: "metric", "data-metric": key});
      const value = el("span", {class: "value", "data-field": key}, "—");
      const canvas = el("canvas", {width: "160", height: "36", role: "img", "aria-label": `${label}, last minutes`});
      const caption = el("figcaption", {}, label + " ");
      caption.append(value);
      figure.append(caption, canvas);
      box.append(figure);
    }
  }

  function renderStats(stats) {
    for (const [key, , format] of TRAFFIC) {
      const v = Number(stats[key]);
      const value = $(`[data-field="${key}"]`, $("#traffic"));
      value.textContent = format(v);
      value.dataset.value = isFinite(v) ? String(v) : "";
      const values = history[key];
      values.push(isFinite(v) ? v : 0);
      if (values.length > HISTORY) values.shift();
      sparkline($(`[data-metric="${key}"] canvas`), values);
    }
  }

  function sparkline(canvas, values) {
    const ctx = canvas.getContext("2d");
    const {width, height} = canvas;
    ctx.clearRect(0, 0, width, height);
    const top = Math.max(...values, 1e-9);
    const step = width / HISTORY;
    ctx.fillStyle = "#3b7dd8";
    values.forEach((v, i) => {
      const h = Math.max(v > 0 ? 1 : 0, (v / top) * (height - 2));
      ctx.fillRect(width - (values.length - i) * step, height - h, Math.max(1, step - 1), h);
    });
  }

  // ---- events ----

  function onEvent(message) {
    const data = message.data || {};
    switch (message.event) {
      case "agent.draining": agentEvent(data.agent, "state", "draining"); break;
      case "agent.undrained": agentEvent(data.agent, "state", "active"); break;
      case "agent.removed": agentEvent(data.agent, "state", "removed"); break;
      case "agent.unhealthy": agentEvent(data.agent, "health", "unhealthy"); break;
      case "agent.healthy":
        agentEvent(data.agent, "health", "ok");
        if (typeof data.latency_ms === "number") agentEvent(data.agent, "latency", fmtNum(data.latency_ms, 1) + " ms");
        break;
      case "agent.joined": updateAgent(data); break;
      case "agent.left": case "node.joined": case "node.left": refreshStatus(); break;
      case "leader.changed": setLeader(data.worker, data.leader); break;
      case "progress": renderWorker(data); break;
      case "stats": renderStats(data); break;
      case "dropped":
        showNotice(`${text(data.count)} events were dropped (this page read too slowly); the figures are refreshed`);
        refreshStatus();
        break;
    }
    if (!QUIET_EVENTS.has(message.event)) logEvent(message);
  }

  function logEvent(message) {
    let summary = "";
    try {
      summary = JSON.stringify(message.data);
    } catch (err) {
      summary = "";
    }
    if (summary && summary.length > 140) summary = summary.slice(0, 139) + "…";
    const item = el("li", {"data-event": text(message.event)});
    item.append(el("time", {}, fmtTime(message.at)), el("strong", {}, text(message.event)),
      el("code", {}, summary || ""));
    const list = $("#events");
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // ---- start ----

  function start() {
    buildWorkers();
    buildTraffic();
    setConnection(false);
    $("#login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const accessKey = $("#access-key").value.trim();
      const secretKey = $("#secret-key").value;
      const region = $("#region").value.trim() || "us-east-1";
      if (!accessKey || !secretKey) return;
      signOut();
      creds = {accessKey, secretKey, region};
      $("#secret-key").value = ""; // the page keeps it in memory; the form forgets it
      showError("");
      reconnect();
    });
    $("#disconnect").addEventListener("click", signOut);
  }

  start();
})();
