// The explain page: registered timelines, their workflow trees, a key search, and every
// node's timeline of one key on one time axis. Plain JavaScript + SVG; data from the API.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 900, ROW_H = 46, PAD_L = 8, PAD_R = 8;
const state = { timeline: null, detail: null, keys: [], key: null, timer: null };
const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function fmtTime(ms) {
  if (ms === null || ms === undefined) return "∞";
  if (Math.abs(ms) < 1e11) return `${ms} ms`;  // small numbers: test data, not dates
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

function fmtValue(v) {
  if (v === null || v === undefined) return "unknown";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(3);
  return String(v);
}

// --- timelines and their trees ---------------------------------------------------------------

async function loadTimelines() {
  const list = await getJSON("/timelines");
  const ul = $("timelines");
  ul.replaceChildren();
  for (const spec of list.timelines) {
    const li = el("li", { "data-name": spec.name });
    li.append(el("b", {}, spec.name), el("span", { class: "muted" }, ` ${spec.shards} shards`));
    li.onclick = () => selectTimeline(spec.name);
    if (spec.name === state.timeline) li.classList.add("selected");
    ul.append(li);
  }
  if (!list.timelines.length) ul.append(el("li", { class: "muted" }, "none registered (POST /timelines)"));
  const wanted = new URLSearchParams(location.search).get("timeline");
  if (!state.timeline && wanted) selectTimeline(wanted);
}

function renderTree(detail) {
  const nodes = Object.fromEntries(detail.plan.nodes.map((n) => [n.id, n]));
  const shards = detail.spec.shards;
  $("tree-meta").textContent =
    `${detail.plan.nodes.length} nodes x ${shards} shards = ${detail.workflows.length} workflows; ` +
    `timeline/${detail.spec.name}/<node>/<shard>`;
  const build = (id) => {
    const n = nodes[id];
    const li = el("li", { "data-node": id });
    li.append(el("span", { class: `kind ${n.kind}` }, n.kind),
              el("code", {}, n.id), el("div", { class: "label" }, n.label));
    if (n.children.length) {
      const ul = el("ul");
      n.children.forEach((c) => ul.append(build(c)));
      li.append(ul);
    }
    return li;
  };
  const root = el("ul", { class: "tree" });
  root.append(build(detail.plan.root));
  $("tree").replaceChildren(root);
  $("tree-section").hidden = false;
}

async function selectTimeline(name) {
  state.timeline = name;
  state.key = null;
  history.replaceState(null, "", `?timeline=${encodeURIComponent(name)}`);
  document.querySelectorAll("#timelines li").forEach((li) => li.classList.toggle("selected", li.dataset.name === name));
  $("plots").replaceChildren();
  $("plot-header").replaceChildren();
  $("legend").hidden = true;
  try {
    state.detail = await getJSON(`/timelines/${encodeURIComponent(name)}`);
    renderTree(state.detail);
    $("key-search").disabled = false;
    await loadKeys();
  } catch (e) {
    status(e.message, true);
  }
}

// --- keys --------------------------------------------------------------------------------------

async function loadKeys() {
  if (!state.timeline) return;
  const ans = await getJSON(`/timelines/${encodeURIComponent(state.timeline)}/keys`);
  state.keys = ans.keys;
  renderKeys();
}

function renderKeys() {
  const q = $("key-search").value.trim().toLowerCase();
  const shown = state.keys.filter((k) => k.toLowerCase().includes(q)).slice(0, 60);
  const ul = $("keys");
  ul.replaceChildren();
  for (const k of shown) {
    const li = el("li", { "data-key": k }, k);
    if (k === state.key) li.classList.add("selected");
    li.onclick = () => selectKey(k);
    ul.append(li);
  }
  const more = state.keys.length - shown.length;
  if (more > 0 && !q) ul.append(el("li", { class: "muted" }, `… ${more} more: type to search`));
  if (!state.keys.length) ul.append(el("li", { class: "muted" }, "no keys with results yet"));
}

async function selectKey(key) {
  state.key = key;
  document.querySelectorAll("#keys li").forEach((li) => li.classList.toggle("selected", li.dataset.key === key));
  await loadTree();
}

// --- plots -------------------------------------------------------------------------------------

async function loadTree() {
  if (!state.timeline || !state.key) return;
  const path = `/timelines/${encodeURIComponent(state.timeline)}/keys/${encodeURIComponent(state.key)}/tree`;
  try {
    const tree = await getJSON(path);
    renderPlots(tree);
    status(`updated ${new Date().toLocaleTimeString()}${$("live").checked ? " · live" : ""}`);
  } catch (e) {
    status(e.message, true);
  }
}

function domain(tree) {
  let lo = Infinity, hi = -Infinity;
  for (const n of tree.nodes) {
    for (const s of n.spans) {
      lo = Math.min(lo, s.start);
      hi = Math.max(hi, s.start, s.end ?? s.start);
    }
    if (n.watermark !== null) hi = Math.max(hi, n.watermark);
  }
  if (!isFinite(lo)) return [0, 1];
  if (hi <= lo) hi = lo + 1000;
  return [lo, hi + (hi - lo) * 0.08];  // room to show that the last span is open
}

const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f"];
function colour(kind, value) {
  if (kind === "boolean") return value ? "#2e9d5b" : "#d9dee3";
  let h = 0;
  for (const ch of String(value)) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

function renderPlots(tree) {
  const [t0, t1] = domain(tree);
  const x = (t) => PAD_L + ((Math.min(t, t1) - t0) / (t1 - t0)) * (WIDTH - PAD_L - PAD_R);
  const header = $("plot-header");
  header.replaceChildren(
    el("h2", {}, `${tree.timeline} · ${tree.key}`),
    el("p", { class: "muted" }, `shard ${tree.shard} · ${tree.closed ? "closed (final)" : "live"} · ` +
      `${fmtTime(t0)} … ${fmtTime(t1)}` + (tree.note ? ` · ${tree.note}` : "")));
  const box = $("plots");
  box.replaceChildren(timeAxis(t0, t1, x));
  for (const node of tree.nodes) {
    const row = el("div", { class: "node-row", "data-node": node.node_id, "data-kind": node.kind,
                            "data-spans": String(node.spans.length) });
    const title = el("div", { class: "node-title" });
    title.append(el("span", { class: `kind ${node.kind}` }, node.kind),
                 el("code", {}, node.node_id),
                 el("span", { class: "label" }, node.label));
    if (!node.held) title.append(el("span", { class: "muted" }, " (not held: not reached yet, or released)"));
    const plot = svg("svg", { width: WIDTH, height: ROW_H, viewBox: `0 0 ${WIDTH} ${ROW_H}`, class: "plot" });
    plot.append(hatchDefs());
    if (node.kind === "numeric") drawNumeric(plot, node, x, t1);
    else drawBands(plot, node, x, t1);
    if (node.watermark !== null) {
      const wx = x(node.watermark);
      plot.append(svg("line", { x1: wx, x2: wx, y1: 0, y2: ROW_H, class: "watermark" }));
    }
    row.append(title, plot);
    box.append(row);
  }
  $("legend").hidden = false;
}

function timeAxis(t0, t1, x) {
  const axis = svg("svg", { width: WIDTH, height: 22, viewBox: `0 0 ${WIDTH} 22`, class: "axis" });
  const step = niceStep((t1 - t0) / 8);
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    const tx = x(t);
    axis.append(svg("line", { x1: tx, x2: tx, y1: 16, y2: 22, class: "tick" }));
    const label = svg("text", { x: Math.max(tx, 16), y: 12, class: "axis-label", "text-anchor": "middle" });
    label.textContent = Math.abs(t) < 1e11 ? String(t) : new Date(t).toISOString().slice(11, 19);
    axis.append(label);
  }
  return axis;
}

function niceStep(raw) {
  const mag = Math.pow(10, Math.floor(Math.log10(Math.max(raw, 1))));
  for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

function hatchDefs() {
  const defs = svg("defs");
  const mk = (id, stroke) => {
    const p = svg("pattern", { id, width: 6, height: 6, patternUnits: "userSpaceOnUse",
                               patternTransform: "rotate(45)" });
    p.append(svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke, "stroke-width": 2 }));
    return p;
  };
  defs.append(mk("hatch-unknown", "#9aa3ad"), mk("hatch-provisional", "rgba(255,255,255,0.75)"));
  return defs;
}

function tooltip(node, s) {
  const t = svg("title");
  t.textContent = `[${fmtTime(s.start)}, ${fmtTime(s.end)}) → ${fmtValue(s.value)}` +
    (s.slope ? ` (slope ${s.slope}/ms)` : "") + (s.provisional ? " · provisional" : "");
  return t;
}

function drawBands(plot, node, x, t1) {
  for (const s of node.spans) {
    const x0 = x(s.start), x1 = x(s.end ?? t1), w = Math.max(1, x1 - x0);
    const unknown = s.value === null;
    const rect = svg("rect", { x: x0, y: 6, width: w, height: ROW_H - 12, class: "band" + (unknown ? " unknown" : ""),
                               fill: unknown ? "url(#hatch-unknown)" : colour(node.kind, s.value),
                               "data-start": s.start, "data-end": s.end ?? "", "data-value": JSON.stringify(s.value),
                               "data-provisional": String(s.provisional) });
    rect.append(tooltip(node, s));
    plot.append(rect);
    if (s.provisional) {
      plot.append(svg("rect", { x: x0, y: 6, width: w, height: ROW_H - 12, class: "provisional",
                                fill: "url(#hatch-provisional)" }));
    }
    if (w > 40) {
      const label = svg("text", { x: x0 + 4, y: ROW_H / 2 + 4, class: "band-label" });
      label.textContent = fmtValue(s.value);
      plot.append(label);
    }
  }
}

function drawNumeric(plot, node, x, t1) {
  const pts = [];
  for (const s of node.spans) {
    if (s.value === null) continue;
    const end = s.end ?? t1;
    pts.push(s.value, s.value + (s.slope || 0) * (end - s.start));
  }
  let lo = Math.min(0, ...pts), hi = Math.max(...pts, lo + 1);
  const y = (v) => ROW_H - 4 - ((v - lo) / (hi - lo)) * (ROW_H - 10);
  for (const s of node.spans) {
    const end = s.end ?? t1, x0 = x(s.start), x1 = x(end);
    if (s.value === null) {
      plot.append(svg("rect", { x: x0, y: 2, width: Math.max(1, x1 - x0), height: ROW_H - 4, class: "band unknown",
                                fill: "url(#hatch-unknown)", "data-start": s.start, "data-end": s.end ?? "",
                                "data-value": "null" }));
      continue;
    }
    const v1 = s.value + (s.slope || 0) * (end - s.start);
    const seg = svg("line", { x1: x0, y1: y(s.value), x2: x1, y2: y(v1),
                              class: "line" + (s.provisional ? " provisional-line" : ""),
                              "data-start": s.start, "data-end": s.end ?? "", "data-value": JSON.stringify(s.value),
                              "data-slope": String(s.slope), "data-provisional": String(s.provisional) });
    seg.append(tooltip(node, s));
    plot.append(seg);
  }
  const axis = svg("text", { x: WIDTH - PAD_R - 2, y: 11, class: "axis-label", "text-anchor": "end" });
  axis.textContent = `max ${fmtValue(hi)}`;
  plot.append(axis);
}

// --- live updates --------------------------------------------------------------------------------

async function refresh() {
  try {
    await loadTimelines();
    if (state.timeline) await loadKeys();
    if (state.key) await loadTree();
  } catch (e) {
    status(e.message, true);
  }
}

function schedule() {
  clearInterval(state.timer);
  if ($("live").checked) state.timer = setInterval(refresh, POLL_MS);
}

$("key-search").addEventListener("input", renderKeys);
$("key-search").addEventListener("keydown", (e) => {
  if (e.key === "Enter") {
    const q = $("key-search").value.trim();
    const exact = state.keys.find((k) => k === q) || state.keys.find((k) => k.toLowerCase().includes(q.toLowerCase()));
    if (exact) selectKey(exact);
  }
});
$("live").addEventListener("change", () => { schedule(); status($("live").checked ? "live" : "paused"); });
loadTimelines().catch((e) => status(e.message, true));
schedule();
