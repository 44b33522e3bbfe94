// The organelle dashboard: polls <base>/api/<view> and renders each section.
// Every value reaches the page through textContent (never innerHTML), so data
// from modules, errors or config cannot inject markup.
"use strict";
(() => {
  const BASE = document.body.dataset.base || "";
  const REFRESH_MS = Math.max(250, Number(document.body.dataset.refreshMs) || 2000);
  const KEY = "organelle.dashboard.authorization";
  const VIEWS = ["overview", "health", "modules", "rpc", "events", "jobs", "streams", "nodes", "config", "sagas", "scaling"];
  const STATES = new Set([
    "loaded", "starting", "active", "stopping", "stopped", "failed", "healthy", "degraded",
    "unhealthy", "serving", "draining", "alive", "dead", "closed", "open", "half_open",
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
      facts("jobs-summary", [
        ["due, waiting", num(backlog)], ["dead", `${num(j.dead)}${j.dead_capped ? "+" : ""}`],
        ["running here", w ? num(w.in_flight) : "no worker"],
        ["succeeded", w ? num(w.succeeded) : "–"], ["retried", w ? num(w.retried) : "–"],
        ["dead-lettered", w ? num(w.dead) : "–"], ["leases lost", w ? num(w.lost) : "–"],
      ]);
      table("jobs-types", [
        ["job", (t) => t.name], ["due", (t) => num(t.backlog), "num"],
        ["attempts", (t) => num(t.max_attempts), "num"],
        ["timeout", (t) => (t.timeout_s === null ? "–" : `${t.timeout_s} s`), "num"],
        ["concurrency", (t) => num(t.concurrency), "num"], ["rate", (t) => (t.rate === null ? "–" : `${t.rate}/s`), "num"],
        ["cron", (t) => t.cron || ""],
      ], j.types, "no job types registered here");
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
      ], s.sagas, s.enabled ? "no unfinished sagas" : "no sagas declared on this node", (x) => x.state === "stuck");
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
      ], d.items, "no dead jobs");
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
  };

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
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); now_(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) now_(); });
  refresh();
})();
