// Plain SVG drawings for the dashboard: line charts over the sample ring and the
// module topology. No library, no markup strings: every node is built with
// createElementNS and every text goes in through textContent.
"use strict";
window.OrganelleCharts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  const fmt = (n) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));

  // host: an element; samples: [{t, ...}]; lines: [[key, label, cls]]; unit: shown after values
  function line(host, samples, lines, unit) {
    const W = 320, H = 90, PAD = 4;
    const values = samples.flatMap((s) => lines.map(([k]) => s[k]).filter((v) => v !== null && v !== undefined));
    const top = Math.max(1e-9, ...values);
    const t0 = samples.length ? samples[0].t : 0;
    const t1 = samples.length ? samples[samples.length - 1].t : 1;
    const x = (t) => PAD + ((t - t0) / Math.max(t1 - t0, 1e-9)) * (W - 2 * PAD);
    const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", class: "chart" });
    chart.append(svg("line", { x1: 0, y1: H - PAD, x2: W, y2: H - PAD, class: "axis" }));
    for (const [key, , cls] of lines) {
      // a gap (null) ends a segment: the chart does not draw through what was not measured
      let points = [];
      const flush = () => {
        if (points.length > 1) chart.append(svg("polyline", { points: points.join(" "), class: `series ${cls}` }));
        points = [];
      };
      for (const s of samples) {
        const v = s[key];
        if (v === null || v === undefined) flush();
        else points.push(`${x(s.t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      flush();
    }
    const last = samples.length ? samples[samples.length - 1] : {};
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const [key, label, cls] of lines) {
      const item = document.createElement("span");
      item.className = `key ${cls}`;
      const v = last[key];
      item.textContent = `${label} ${v === null || v === undefined ? "–" : fmt(v)}${unit}`;
      legend.append(item);
    }
    const scale = document.createElement("span");
    scale.className = "muted";
    scale.textContent = values.length ? `max ${fmt(top)}${unit}` : "no data yet";
    legend.append(scale);
    host.replaceChildren(chart, legend);
  }

  // Modules in columns by dependency depth (what needs nothing on the left), edges as lines.
  function topology(host, topo) {
    const depth = {};
    const needs = {};
    for (const e of topo.edges) (needs[e.from] = needs[e.from] || []).push(e.to);
    const level = (name, seen) => {
      if (depth[name] !== undefined) return depth[name];
      if (seen.has(name)) return 0; // a cycle cannot start, but never loop on one
      seen.add(name);
      const deps = needs[name] || [];
      depth[name] = deps.length ? 1 + Math.max(...deps.map((d) => level(d, seen))) : 0;
      return depth[name];
    };
    const names = new Set([...topo.modules.map((m) => m.name), ...topo.edges.map((e) => e.to)]);
    for (const n of names) level(n, new Set());
    const columns = [];
    for (const n of [...names].sort()) (columns[depth[n]] = columns[depth[n]] || []).push(n);
    const BW = 130, BH = 34, GX = 60, GY = 14;
    const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
    const W = columns.length * (BW + GX) + GX / 2, H = rows * (BH + GY) + GY;
    const at = {};
    columns.forEach((col, i) => (col || []).forEach((n, j) => { at[n] = { x: GX / 4 + i * (BW + GX), y: GY + j * (BH + GY) }; }));
    const byName = Object.fromEntries(topo.modules.map((m) => [m.name, m]));
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", class: "topology" });
    for (const e of topo.edges) {
      const a = at[e.from], b = at[e.to];
      if (!a || !b) continue;
      chart.append(svg("line", {
        x1: a.x, y1: a.y + BH / 2, x2: b.x + BW, y2: b.y + BH / 2,
        class: e.optional ? "edge optional" : "edge",
      }));
    }
    for (const n of names) {
      const m = byName[n] || { name: n, state: "missing", nodes: [] };
      const g = svg("g", { class: `mod s-${m.state}`, "data-module": n });
      g.append(svg("rect", { x: at[n].x, y: at[n].y, width: BW, height: BH, rx: 5 }));
      g.append(svg("text", { x: at[n].x + 6, y: at[n].y + 14 }, n));
      g.append(svg("text", { x: at[n].x + 6, y: at[n].y + 28, class: "sub" },
        `${m.state}${m.nodes && m.nodes.length ? ` · ${m.nodes.length} node${m.nodes.length === 1 ? "" : "s"}` : ""}`));
      chart.append(g);
    }
    host.replaceChildren(chart);
  }

  return { line, topology };
})();
