// The organelle dashboard: polls <base>/api/<view> and renders each section.
// Every value reaches the page through textContent (never innerHTML), so data
// from modules, errors or config cannot inject markup.
"use strict";
(() => {
  const BASE = document.body.dataset.base || "";
  const REFRESH_MS = Math.max(250, Number(document.body.dataset.refreshMs) || 2000);
  const KEY = "organelle.dashboard.authorization";
  const VIEWS = [
    "overview", "health", "modules", "rpc", "events", "jobs", "streams", "nodes", "config", "sagas",
    "flags", "history", "topology", "scaling",
  ];
  const EVENTS_WS = document.body.dataset.eventsWs || "";
  const TAIL_MAX = 100;
  const STATES = new Set([
    "loaded", "starting", "active", "stopping", "stopped", "failed", "healthy", "degraded",
    "unhealthy", "serving", "draining", "alive", "dead", "closed", "open", "half_open",
    "running", "compensating", "stuck",
  ]);
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let running = false;
  let again = false;

  // -- building blocks ------------------------------------------------------------
  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function badge(state) {
    const node = el("span", state, "badge");
    if (STATES.has(state)) node.classList.add(`s-${state}`);
    return node;
  }
  function facts(id, pairs) {
    const dl = $(id);
    dl.replaceChildren(...pairs.map(([label, value]) => {
      const box = el("div");
      const dd = el("dd");
      dd.append(value instanceof Node ? value : document.createTextNode(String(value)));
      box.append(el("dt", label), dd);
      return box;
    }));
  }
  // host: an element or its id; columns: [title, (row) => string | number | Node, "num" | "wrap" | undefined]
  function table(id, columns, rows, empty, isBad) {
    const host = typeof id === "string" ? $(id) : id;
    if (!rows.length) {
      host.replaceChildren(el("p", empty, "empty"));
      return;
    }
    const t = el("table");
    const head = el("tr");
    for (const [title, , cls] of columns) head.append(el("th", title, cls));
    t.append(el("thead"));
    t.tHead.append(head);
    const body = el("tbody");
    for (const row of rows) {
      const tr = el("tr", null, isBad && isBad(row) ? "bad" : "");
      for (const [, cell, cls] of columns) {
        const td = el("td", null, cls);
        const value = cell(row);
        td.append(value instanceof Node ? value : document.createTextNode(value ?? ""));
        tr.append(td);
      }
      body.append(tr);
    }
    t.append(body);
    host.replaceChildren(t);
  }
  function button(label, onClick, cls) {
    const node = el("button", label, cls);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  }
  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
  const ms = (n) => (n === null || n === undefined ? "–" : `${n < 10 ? n.toFixed(2) : n.toFixed(0)} ms`);
  function duration(seconds) {
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return m ? `${m}m ${s}s` : `${s}s`;
  }
  const ago = (t, now) => (t ? `${duration(now - t)} ago` : "–");
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");
  const codes = (map) => Object.entries(map || {}).map(([c, n]) => `${c} ×${n}`).join(", ");
  const total = (items, f) => items.reduce((sum, x) => sum + (f(x) || 0), 0);
  const lagged = (n) => (n === null || n === undefined ? "–" : el("span", num(n), n > 0 ? "lag" : ""));

  // -- streams: one block per stream, its partitions with each group's position, then its groups
  function retention(spec) {
    const limits = [];
    if (spec.max_age_s !== null) limits.push(`max age ${duration(spec.max_age_s)}`);
    if (spec.max_records !== null) limits.push(`max ${num(spec.max_records)} records per partition`);
    return limits.join(", ") || "no retention limit";
  }
  function streamBlock(x) {
    const box = el("div");
    const head = el("h3", x.stream);
    if (x.spec) {
      const n = x.spec.partitions;
      head.append(el("span", ` ${n} partition${n === 1 ? "" : "s"}; ${retention(x.spec)}`, "muted"));
    }
    const parts = el("div");
    const groups = el("div");
    box.append(head);
    if (x.error) box.append(el("p", x.error, "problem"));
    box.append(parts, groups);
    const positions = x.partitions.flatMap((p) => {
      const at = x.groups.flatMap((g) => g.positions
        .filter((q) => q.partition === p.partition).map((q) => ({ ...p, ...q, group: g.group })));
      return at.length ? at : [{ ...p, group: null }];
    });
    table(parts, [
      ["partition", (r) => r.partition, "num"],
      ["retained", (r) => (r.first > r.last ? "none" : `${num(r.first)} – ${num(r.last)}`), "num"],
      ["group", (r) => r.group ?? "–"], ["next offset", (r) => (r.group ? num(r.next_offset) : "–"), "num"],
      ["lag", (r) => (r.group ? lagged(r.lag) : "–"), "num"], ["owner", (r) => r.owner || "", "wrap"],
    ], positions, "partitions not read");
    const lastError = (m) => {
      const err = m && m.last_error;
      if (!err) return "";
      return el("span", `${err.error} (record ${err.partition}/${err.offset}, attempt ${err.attempt})`, "err");
    };
    const dead = (d) => (d ? `${num(d.count)}${d.more ? "+" : ""}` : "–");
    const count = (key) => (r) => (r.m ? num(r.m[key]) : "–");
    const rows = x.groups.flatMap((g) => (g.members.length ? g.members : [null]).map((m) => ({ g, m })));
    table(groups, [
      ["group", (r) => r.g.group], ["member", (r) => (r.m ? `${r.m.module}.${r.m.handler}` : "other nodes")],
      ["lag", (r) => lagged(r.g.lag), "num"], ["done", count("done"), "num"],
      ["failed", count("failed"), "num"], ["dead-lettered", count("dead"), "num"],
      ["leases lost", count("lost"), "num"], ["duplicates", count("duplicates"), "num"],
      ["in flight", count("in_flight"), "num"],
      ["dead letters", (r) => dead(r.g.dead_letters), "num"], ["last error", (r) => lastError(r.m), "wrap"],
    ], rows, "no groups", (r) => (r.g.dead_letters && r.g.dead_letters.count > 0) || (r.m && r.m.failed > 0));
    return box;
  }

  // -- sections --------------------------------------------------------------------
  let now = Date.now() / 1000;
  const RENDER = {
    overview(o) {
      now = o.now;
      $("node").textContent = o.node;
      $("state").replaceWith(Object.assign(badge(o.state), { id: "state" }));
      const active = (o.modules_by_state || {}).active || 0;
      facts("overview-list", [
        ["node", o.node], ["host / pid", `${o.host} / ${o.pid}`], ["state", badge(o.state)],
        ["uptime", o.uptime_s === null ? "starting" : duration(o.uptime_s)], ["modules active", `${active} of ${o.modules}`],
        ["RPC methods", num(o.rpc_methods)], ["subscriptions", num(o.subscriptions)],
        ["transport", o.transport], ["storage", o.storage],
        ["versions", `organelle ${o.organelle}, Python ${o.python}`],
      ]);
    },
    health(h) {
      const status = $("health-status");
      status.replaceChildren(badge(h.status), document.createTextNode(
        h.ready ? " ready" : ` not ready${h.reason ? `: ${h.reason}` : ""}`));
      const rows = Object.entries(h.checks || {}).map(([name, c]) => ({ name, ...c }));
      table("health-checks", [
        ["check", (c) => c.name], ["status", (c) => badge(c.status)],
        ["required", (c) => (c.required ? "yes" : "no")], ["detail", (c) => c.detail, "wrap"],
        ["took", (c) => ms(c.duration_ms), "num"],
      ], rows, "no checks", (c) => c.status !== "healthy");
    },
    modules(m) {
      table("modules-table", [
        ["module", (r) => r.name], ["version", (r) => r.version], ["state", (r) => badge(r.state)],
        ["requires", (r) => [...r.requires, ...r.optional.map((d) => `${d} (optional)`)].join(", ") || "–", "wrap"],
        ["RPC", (r) => r.rpc_methods.length, "num"], ["subscriptions", (r) => r.subscriptions.length, "num"],
        ["error", (r) => el("span", r.error || "", "err"), "wrap"],
        ["", (r) => button("Reload", () => act("modules/reload", { module: r.name },
          `Reload module ${r.name}? A fresh instance starts, then takes over from the running one.`))],
      ], m.modules, "no modules", (r) => r.state === "failed");
    },
    rpc(r) {
      table("rpc-table", [
        ["method", (x) => x.target], ["calls", (x) => num(x.calls), "num"],
        ["errors", (x) => num(x.errors), "num"], ["by code", (x) => codes(x.error_codes), "wrap"],
        ["in flight", (x) => num(x.in_flight), "num"], ["timed", (x) => num(x.timed), "num"],
        ["mean", (x) => ms(x.mean_ms), "num"], ["p50", (x) => ms(x.p50_ms), "num"],
        ["p99", (x) => ms(x.p99_ms), "num"],
      ], r.methods, "no RPC methods served here", (x) => x.errors > 0);
      table("breakers-table", [
        ["breaker", (b) => b.key], ["state", (b) => badge(b.state)],
        ["failures in a row", (b) => num(b.consecutive_failures), "num"],
        ["opened", (b) => num(b.opened), "num"],
        ["half-opens in", (b) => (b.state === "open" ? `${b.retry_after_s.toFixed(1)} s` : "–"), "num"],
      ], r.breakers || [], "no circuit breakers (no call policy has one)", (b) => b.state !== "closed");
    },
    events(e) {
      const lastError = (s) => {
        const err = s.last_error;
        if (!err) return "";
        return el("span", `${err.code}: ${err.message}${err.topic ? ` (on ${err.topic})` : ""}`, "err");
      };
      table("events-table", [
        ["handler", (s) => `${s.module}.${s.handler}`], ["pattern", (s) => s.pattern],
        ["delivery", (s) => s.delivery], ["delivered", (s) => num(s.delivered), "num"],
        ["failed", (s) => num(s.failed), "num"], ["skipped", (s) => num(s.skipped), "num"],
        ["duplicates", (s) => num(s.duplicates), "num"],
        ["last error", lastError, "wrap"],
      ], e.subscriptions, "no subscriptions", (s) => s.failed > 0);
    },
    jobs(j) {
      if (!j.enabled) {
        facts("jobs-summary", [["job queue", j.reason || "none on this node"]]);
        $("jobs-types").replaceChildren();
        $("jobs-dead").replaceChildren(el("p", "no job queue", "empty"));
        return;
      }
      const backlog = Object.values(j.backlog).reduce((a, b) => a + b, 0);
      const w = j.worker;
      // pause / resume only where this node's worker can (a worker says what it paused)
      const canPause = Boolean(w && Array.isArray(w.paused));
      const paused = new Set(canPause ? w.paused : []);
      facts("jobs-summary", [
        ["due, waiting", num(backlog)], ["dead", `${num(j.dead)}${j.dead_capped ? "+" : ""}`],
        ["running here", w ? num(w.in_flight) : "no worker"],
        ["succeeded", w ? num(w.succeeded) : "–"], ["retried", w ? num(w.retried) : "–"],
        ["dead-lettered", w ? num(w.dead) : "–"], ["leases lost", w ? num(w.lost) : "–"],
        ...(paused.size ? [["paused here", [...paused].join(", ")]] : []),
      ]);
      table("jobs-types", [
        ["job", (t) => t.name], ["due", (t) => num(t.backlog), "num"],
        ["attempts", (t) => num(t.max_attempts), "num"],
        ["timeout", (t) => (t.timeout_s === null ? "–" : `${t.timeout_s} s`), "num"],
        ["concurrency", (t) => num(t.concurrency), "num"], ["rate", (t) => (t.rate === null ? "–" : `${t.rate}/s`), "num"],
        ["cron", (t) => t.cron || ""],
        ...(canPause ? [["", (t) => (paused.has(t.name)
          ? button("Resume", () => act("jobs/resume", { names: [t.name] }, `Resume ${t.name} on this node?`))
          : button("Pause", () => act("jobs/pause", { names: [t.name] },
            `Pause ${t.name} on this node? Its jobs wait in the queue until resumed.`), "danger"))]] : []),
      ], j.types, "no job types registered here", (t) => paused.has(t.name));
    },
    streams(s) {
      const list = $("streams-list");
      if (!s.enabled) {
        facts("streams-summary", [["stream log", "none on this node"]]);
        list.replaceChildren(el("p", "no stream log", "empty"));
        return;
      }
      const groups = s.streams.flatMap((x) => x.groups);
      const members = groups.flatMap((g) => g.members);
      const dead = total(groups, (g) => g.dead_letters && g.dead_letters.count);
      const more = groups.some((g) => g.dead_letters && g.dead_letters.more);
      facts("streams-summary", [
        ["streams", num(s.streams.length)], ["groups", num(groups.length)],
        ["lag", lagged(groups.some((g) => g.lag === null) ? null : total(groups, (g) => g.lag))], ["dead letters", `${num(dead)}${more ? "+" : ""}`],
        ["running here", num(total(members, (m) => m.in_flight))],
        ["done", num(total(members, (m) => m.done))], ["failed", num(total(members, (m) => m.failed))],
        ["dead-lettered", num(total(members, (m) => m.dead))], ["leases lost", num(total(members, (m) => m.lost))],
      ]);
      if (!s.streams.length) list.replaceChildren(el("p", "no @consume members on this node", "empty"));
      else list.replaceChildren(...s.streams.map(streamBlock));
    },
    sagas(s) {
      const steps = (x) => x.steps.map((st) => `${st.name}: ${st.state}${st.error ? ` (${st.error})` : ""}`).join(", ");
      table("sagas-table", [
        ["saga", (x) => x.name], ["id", (x) => el("code", x.id)], ["state", (x) => badge(x.state)],
        ["updated", (x) => ago(x.updated_at, now), "num"], ["steps", steps, "wrap"],
        ["error", (x) => el("span", x.error || "", "err"), "wrap"],
        ["", (x) => {
          if (x.state === "stuck") {
            return button("Retry", () => act("sagas/retry", { id: x.id }, `Go on compensating saga ${x.name} (${x.id})?`));
          }
          if (x.state === "running" && !x.aborted) {
            return button("Abort", () => act("sagas/abort", { id: x.id },
              `Abort saga ${x.name} (${x.id})? Its completed steps are compensated.`), "danger");
          }
          return "";
        }],
      ], s.sagas, s.enabled ? "no unfinished sagas" : "no sagas declared on this node", (x) => x.state === "stuck");
      const more = $("sagas-more");
      more.hidden = !s.capped;
      more.textContent = s.capped ? `The ${num(s.sagas.length)} oldest unfinished sagas are shown; there are more (kernel.sagas.list has them all).` : "";
    },
    scaling(s) {
      table("scaling-table", [
        ["target", (d) => d.target], ["when", (d) => ago(d.at, now), "num"],
        ["replicas", (d) => d.changed ? `${d.current} → ${d.desired}` : `${d.current}`, "num"],
        ["reason", (d) => d.reason, "wrap"],
        ["signals", (d) => el("code", JSON.stringify(d.signals)), "wrap"],
      ], s.decisions, s.error || (s.enabled ? "no decision yet" : "no scaling controller in this cluster"));
    },
    dead(d) {
      table("jobs-dead", [
        ["job", (r) => r.name], ["id", (r) => el("code", r.id)],
        ["attempts", (r) => `${r.attempts} / ${r.max_attempts}`, "num"],
        ["failed", (r) => ago(r.updated_at, now), "num"],
        ["error", (r) => el("span", r.error_type ? `${r.error_type}: ${r.error}` : "", "err"), "wrap"],
        ["params", (r) => el("code", JSON.stringify(r.params)), "wrap"],
        ["", (r) => {
          const box = el("span", null, "actions");
          box.append(
            button("Retry", () => act("jobs/retry", { id: r.id }, `Retry job ${r.name} (${r.id}) from attempt 1?`)),
            button("Purge", () => act("jobs/purge", { ids: [r.id] }, `Delete dead job ${r.name} (${r.id}) for good?`), "danger"),
          );
          return box;
        }],
      ], d.items, "no dead jobs");
      $("purge-all").hidden = !d.items.length;
    },
    nodes(n) {
      const problem = $("nodes-error");
      problem.hidden = !n.error;
      problem.textContent = n.error || "";
      table("nodes-table", [
        ["node", (x) => (x.local ? `${x.node} (this node)` : x.node)], ["host", (x) => x.host],
        ["pid", (x) => x.pid, "num"], ["state", (x) => badge(x.alive ? "alive" : "dead")],
        ["started", (x) => ago(x.started, now), "num"], ["last seen", (x) => ago(x.last_seen, now), "num"],
        ["modules", (x) => Object.entries(x.modules).map(([m, e]) => `${m} ${e.version}`).join(", "), "wrap"],
      ], n.nodes, "no nodes", (x) => !x.alive);
    },
    config(c) {
      $("config-dump").textContent = JSON.stringify(c, null, 2);
    },
    flags(f) {
      const rules = (x) => (x.rules.length ? x.rules.map((r) => JSON.stringify(r)).join("\n") : "–");
      table("flags-table", [
        ["flag", (x) => `${x.module}.${x.name}`], ["type", (x) => x.type],
        ["default", (x) => JSON.stringify(x.default)],
        ["value", (x) => el("span", JSON.stringify(x.effective), x.overridden ? "changed" : "")],
        ["rules", (x) => el("code", rules(x)), "wrap"],
        ["changed", (x) => (x.at ? `${ago(x.at, now)} by ${x.by}` : "never"), "wrap"],
        ["", (x) => button("Change…", () => editFlag(x))],
      ], f.flags, "no module here declares flags");
    },
    history(h) {
      const C = window.OrganelleCharts;
      const s = h.samples;
      C.line($("chart-rate"), s, [["rpc_rate", "calls", "a"], ["error_rate", "errors", "b"]], "/s");
      C.line($("chart-latency"), s, [["p50_ms", "p50", "a"], ["p99_ms", "p99", "b"]], " ms");
      C.line($("chart-depth"), s, [["queue_depth", "due", "a"]], "");
      C.line($("chart-lag"), s, [["stream_lag", "lag", "a"]], "");
    },
    topology(t) {
      const problem = $("topology-error");
      problem.hidden = !t.error;
      problem.textContent = t.error || "";
      window.OrganelleCharts.topology($("topology-graph"), t);
      table("topology-nodes", [
        ["node", (x) => (x.local ? `${x.node} (this node)` : x.node)],
        ["state", (x) => badge(x.alive ? "alive" : "dead")],
        ["modules", (x) => x.modules.join(", "), "wrap"],
      ], t.nodes, "no nodes", (x) => !x.alive);
    },
  };

  // -- actions: confirmed in a dialog, then POST <base>/api/actions/<name> ---------------
  function ask(question) {
    return new Promise((resolve) => {
      const dialog = $("confirm");
      $("confirm-text").textContent = question;
      dialog.returnValue = "";
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
    });
  }
  function notice(text, bad) {
    const box = $("notice");
    box.textContent = text;
    box.classList.toggle("problem", bad);
    box.hidden = false;
  }
  async function post(name, body) {
    const headers = { accept: "application/json", "content-type": "application/json" };
    const auth = sessionStorage.getItem(KEY);
    if (auth) headers.authorization = auth;
    const res = await fetch(`${BASE}/api/actions/${name}`, {
      method: "POST", headers, body: JSON.stringify(body), cache: "no-store",
    });
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const e = data && data.error;
      const err = new Error(e ? `${e.code}: ${e.message}` : `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return data.result;
  }
  async function act(name, body, question) {
    if (!(await ask(question))) return;
    try {
      await post(name, body);
      notice(`Done: ${question.split("?")[0]}.`, false);
    } catch (err) {
      if (err.status === 401) notice("Sign in to act: paste an Authorization value above.", true);
      else if (err.status === 403) notice("These credentials lack a role that may act (action_roles).", true);
      else notice(`Refused: ${err.message}`, true);
    }
    now_();
  }
  let editing = null;
  function editFlag(flag) {
    editing = flag;
    $("flag-name").textContent = `${flag.module}.${flag.name}`;
    $("flag-type").textContent = flag.type;
    $("flag-value").value = JSON.stringify(flag.effective);
    $("flag-rules").value = JSON.stringify(flag.rules, null, 1);
    $("flag-error").hidden = true;
    $("flag-edit").returnValue = "";
    $("flag-edit").showModal();
  }
  function parsed(id) {
    try { return { ok: true, value: JSON.parse($(id).value) }; } catch (e) { return { ok: false, error: e }; }
  }
  for (const [id, field] of [["flag-save", "flag-value"], ["flag-save-rules", "flag-rules"]]) {
    $(id).addEventListener("click", (ev) => {
      if (parsed(field).ok) return;
      ev.preventDefault(); // keep the dialog open until the JSON parses
      $("flag-error").textContent = `${field === "flag-value" ? "The value" : "The rules"} must be JSON.`;
      $("flag-error").hidden = false;
    });
  }
  $("flag-edit").addEventListener("close", () => {
    const how = $("flag-edit").returnValue;
    const target = editing && `${editing.module}.${editing.name}`;
    if (!target) return;
    if (how === "set") {
      const value = parsed("flag-value").value;
      act("flags/set", { flag: target, value }, `Set flag ${target} to ${JSON.stringify(value)}?`);
    } else if (how === "rules") {
      const rules = parsed("flag-rules").value;
      act("flags/rules", { flag: target, rules }, `Replace the rules of flag ${target} (${Array.isArray(rules) ? rules.length : "?"} rules)?`);
    } else if (how === "reset") {
      act("flags/reset", { flag: target }, `Reset flag ${target} to its default (value and rules dropped)?`);
    }
  });
  $("purge-all").addEventListener("click", () => act("jobs/purge", {}, "Delete every dead job for good?"));
  $("reload-config").addEventListener("click", () => act("config/reload", {},
    "Reload the config from its source? It applies everywhere here or is rolled back."));

  // -- live events over the gateway's WebSocket ---------------------------------------
  let socket = null;
  let retryMs = 1000;
  function showEvent(msg) {
    if ($("pause").checked) return;
    const item = el("li");
    const payload = JSON.stringify(msg.payload);
    item.append(
      el("span", new Date().toLocaleTimeString(), "muted"), document.createTextNode(" "),
      el("strong", msg.topic), document.createTextNode(" "),
      el("code", payload.length > 300 ? `${payload.slice(0, 300)}…` : payload),
    );
    const list = $("tail-list");
    list.prepend(item);
    while (list.children.length > TAIL_MAX) list.lastChild.remove();
  }
  function tail() {
    if (!EVENTS_WS) {
      $("tail-note").textContent = "No live events: the gateway's event stream is off or open to no "
        + "topic (set [modules.gateway.stream] topics).";
      return;
    }
    const auth = sessionStorage.getItem(KEY) || "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7).trim() : "";
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
    const ws = socket = new WebSocket(`${scheme}://${location.host}${EVENTS_WS}${query}`);
    ws.addEventListener("open", () => {
      retryMs = 1000;
      ws.send(JSON.stringify({ op: "subscribe", topics: [">"] }));
    });
    ws.addEventListener("message", (m) => {
      const msg = JSON.parse(m.data);
      if (msg.op === "event") showEvent(msg);
    });
    ws.addEventListener("close", (ev) => {
      if (socket !== ws) return; // replaced by a new sign-in
      socket = null;
      if (ev.code === 4401 || ev.code === 4403) {
        $("tail-note").textContent = ev.code === 4401
          ? "Live events need a Bearer token (a browser cannot send other credentials on a WebSocket)."
          : "These credentials lack a role that may read the event stream.";
        return;
      }
      setTimeout(tail, retryMs);
      retryMs = Math.min(retryMs * 2, 30000);
    });
  }
  function retail() {
    const old = socket;
    socket = null;
    if (old) old.close();
    tail();
  }

  // -- polling ----------------------------------------------------------------------
  async function get(view) {
    const headers = { accept: "application/json" };
    const auth = sessionStorage.getItem(KEY);
    if (auth) headers.authorization = auth;
    const res = await fetch(`${BASE}/api/${view}`, { headers, cache: "no-store" });
    let data = null;
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const e = data && data.error;
      const err = new Error(e ? `${res.status} ${e.code}: ${e.message}` : `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return data;
  }
  function explain(err) {
    if (err.status === 401) return "Sign in: paste an Authorization value above (Bearer token or ApiKey).";
    if (err.status === 403) return "These credentials lack a role that may read the dashboard.";
    return `Could not refresh: ${err.message}`;
  }
  async function refresh() {
    timer = null;
    if (running) { again = true; return; }
    if ($("pause").checked || document.hidden) { schedule(); return; }
    running = true;
    try { await poll(); } finally { running = false; }
    if (again) { again = false; refresh(); } else schedule();
  }
  async function poll() {
    const results = await Promise.allSettled(VIEWS.map(get));
    let problem = null;
    results.forEach((r, i) => {
      if (r.status === "rejected") problem = problem || r.reason;
      else {
        try { RENDER[VIEWS[i]](r.value); } catch (e) { problem = problem || e; }
      }
    });
    const jobs = results[VIEWS.indexOf("jobs")];
    if (jobs.status === "fulfilled" && jobs.value.enabled) {
      if (jobs.value.dead > 0) {
        try { RENDER.dead(await get("jobs/dead?limit=20")); } catch (e) { problem = problem || e; }
      } else RENDER.dead({ items: [] });
    }
    const box = $("problem");
    box.hidden = !problem;
    box.textContent = problem ? explain(problem) : "";
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }
  function schedule() {
    if (timer === null) timer = setTimeout(refresh, REFRESH_MS);
  }
  function now_() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    refresh();
  }

  $("auth").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
    $("token").value = "";
    now_();
    retail();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); now_(); retail(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) now_(); });
  refresh();
  tail();
})();
