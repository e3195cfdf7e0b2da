// twinstream inspector: the fleet table and one twin's live chart of measured values, predictions and
// intervals (plain SVG, no library).
// A token comes from the page URL's fragment (#token=...), never from the query, so it stays out of
// server logs; it is sent as a bearer header, and as access_token to EventSource (which cannot set headers).
"use strict";

const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) sessionStorage.setItem("twinstream-token", hash.get("token"));
const token = sessionStorage.getItem("twinstream-token") || "";
const MAX_POINTS = 200;

const state = { twins: [], sortKey: "entity_id", sortDir: 1, filter: "", entity: params.get("entity"), task: null,
                series: {}, measured: {}, source: null };

function $(selector) { return document.querySelector(selector); }
function fmt(x, digits = 1) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

async function getJSON(path) {
  const reply = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!reply.ok) throw new Error(`${path}: ${reply.status} ${(await reply.json().catch(() => ({}))).detail || ""}`);
  return reply.json();
}

function mainPrediction(twin) {
  const keys = Object.keys(twin.predictions || {});
  const key = keys.find((k) => k.startsWith("label:")) || keys.find((k) => k.startsWith("forecast:")) || keys[0];
  return key ? twin.predictions[key] : null;
}

function row(twin) {
  const p = mainPrediction(twin) || {};
  return { entity_id: twin.entity_id, kind: twin.kind || "", value: p.value ?? null,
           interval: p.lower !== null && p.lower !== undefined ? p.upper - p.lower : null,
           lower: p.lower, upper: p.upper, in_domain: p.in_domain ?? null, updates: twin.updates,
           synthetic_share: twin.synthetic_share ?? null };
}

async function loadFleet() {
  const twins = [];
  let cursor = null;
  for (let page = 0; page < 20; page++) {  // at most 4,000 twins in the table
    const query = new URLSearchParams({ size: "200" });
    if (cursor) query.set("cursor", cursor);
    const reply = await getJSON(`twins?${query}`);
    twins.push(...reply.items);
    cursor = reply.next_cursor;
    if (!cursor) break;
  }
  state.twins = twins.map(row);
  renderFleet();
}

function renderFleet() {
  const needle = state.filter.toLowerCase();
  const rows = state.twins.filter((r) => !needle || r.entity_id.toLowerCase().includes(needle)
                                      || r.kind.toLowerCase().includes(needle));
  const key = state.sortKey;
  rows.sort((a, b) => (a[key] === b[key] ? 0 : a[key] === null ? 1 : b[key] === null ? -1
                       : a[key] < b[key] ? -state.sortDir : state.sortDir));
  const body = $("#twins tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.entity = r.entity_id;
    if (r.entity_id === state.entity) tr.classList.add("selected");
    const cells = [r.entity_id, r.kind, fmt(r.value), r.interval === null ? "–" : `${fmt(r.lower)} … ${fmt(r.upper)}`,
                   r.in_domain === null ? "–" : r.in_domain ? "yes" : "no", r.updates, fmt(r.synthetic_share, 2)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 4 && r.in_domain === false) td.className = "no";
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => select(r.entity_id));
    return tr;
  }));
  document.querySelectorAll("#twins th").forEach((th) => {
    th.className = th.dataset.key === state.sortKey ? (state.sortDir > 0 ? "asc" : "desc") : "";
  });
  $("#count").textContent = `${rows.length} of ${state.twins.length} twins`;
}

function taskKey(p) { return `${p.task || "label"}:${p.target}`; }

// A prediction is drawn at the sample it is about (target_seq: seq + horizon for a forecast), a
// measured value at the sample that carried it (its prediction's seq), so a forecast and the
// measurement it predicted line up.
function about(p) { return p.target_seq ?? p.seq; }

function addPoint(p) {
  const key = taskKey(p);
  const series = (state.series[key] = state.series[key] || []);
  if (series.length && series[series.length - 1].seq >= p.seq) return false;
  series.push(p);
  if (series.length > MAX_POINTS) series.shift();
  if (p.measured !== null && p.measured !== undefined) {
    const measured = (state.measured[key] = state.measured[key] || []);
    measured.push({ x: p.seq, y: p.measured });
    if (measured.length > MAX_POINTS) measured.shift();
  }
  if (!state.task) state.task = key;
  return true;
}

function renderTasks() {
  const select = $("#task");
  const keys = Object.keys(state.series).sort();
  if (select.options.length !== keys.length) {
    select.replaceChildren(...keys.map((k) => new Option(k, k, false, k === state.task)));
  }
}

function renderChart() {
  const svg = $("#chart");
  const series = state.series[state.task] || [];
  const measured = state.measured[state.task] || [];
  const W = 800, H = 300, L = 48, R = 10, T = 10, B = 24;
  const ns = "http://www.w3.org/2000/svg";
  const make = (name, attrs) => {
    const el = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  };
  const children = [];
  if (series.length) {
    const xs = series.map(about).concat(measured.map((m) => m.x));
    const ys = series.flatMap((p) => [p.value, p.lower ?? p.value, p.upper ?? p.value]).concat(measured.map((m) => m.y));
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 - y0 < 1e-9) { y0 -= 1; y1 += 1; }
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const upper = series.map((p) => `${sx(about(p))},${sy(p.upper ?? p.value)}`);
    const lower = series.map((p) => `${sx(about(p))},${sy(p.lower ?? p.value)}`).reverse();
    children.push(make("polygon", { class: "band", points: upper.concat(lower).join(" ") }));
    children.push(make("polyline", { class: "line", points: series.map((p) => `${sx(about(p))},${sy(p.value)}`).join(" ") }));
    for (const p of series) {
      children.push(make("circle", { class: p.in_domain === false ? "point out" : "point", cx: sx(about(p)),
                                     cy: sy(p.value), r: 2.5, "data-seq": p.seq }));
    }
    for (const m of measured) {  // a small square per measured value
      children.push(make("rect", { class: "measured", x: sx(m.x) - 2.5, y: sy(m.y) - 2.5, width: 5, height: 5,
                                   "data-seq": m.x }));
    }
    children.push(make("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    children.push(make("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    const label = (text, x, y, anchor) => { const t = make("text", { x, y, "text-anchor": anchor }); t.textContent = text; return t; };
    children.push(label(fmt(y1), L - 4, T + 10, "end"), label(fmt(y0), L - 4, H - B, "end"),
                  label(`seq ${x0}`, L, H - 6, "start"), label(`seq ${x1}`, W - R, H - 6, "end"));
  }
  svg.replaceChildren(...children);
  svg.dataset.points = String(series.length);
  svg.dataset.measured = String(measured.length);
  svg.dataset.lastSeq = series.length ? String(series[series.length - 1].seq) : "";
}

function renderFacts(twin) {
  const facts = { kind: twin.kind, "last seq": twin.last_seq, "event time": twin.event_time, updates: twin.updates,
                  labelled: twin.labelled, learner: twin.learner, prior: twin.prior_version,
                  "drift alarms": twin.drift?.alarms, "gaps skipped": twin.gaps?.skipped,
                  "synthetic share": fmt(twin.synthetic_share, 2), "state bytes": twin.state_bytes };
  $("#facts").replaceChildren(...Object.entries(facts).flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v ?? "–";
    return [dt, dd];
  }));
}

async function select(entity) {
  state.entity = entity;
  state.series = {};
  state.measured = {};
  state.task = null;
  if (state.source) state.source.close();
  history.replaceState(null, "", `?entity=${encodeURIComponent(entity)}${location.hash}`);
  $("#detail").hidden = false;
  $("#detail-title").textContent = entity;
  $("#task").replaceChildren();
  renderFleet();
  const [twin, recent] = await Promise.all([getJSON(`twins/${encodeURIComponent(entity)}`),
                                            getJSON(`twins/${encodeURIComponent(entity)}/predictions`)]);
  renderFacts(twin);
  recent.predictions.forEach(addPoint);
  renderTasks();
  renderChart();
  const last = recent.predictions.length ? recent.predictions[recent.predictions.length - 1].seq : null;
  const query = new URLSearchParams();
  if (last !== null) query.set("last_event_id", String(last));
  if (token) query.set("access_token", token);
  const source = new EventSource(`twins/${encodeURIComponent(entity)}/stream?${query}`);
  state.source = source;
  source.onopen = () => { $("#live").textContent = "live"; };
  source.onerror = () => { $("#live").textContent = "reconnecting…"; };
  source.addEventListener("prediction", (event) => {
    if (addPoint(JSON.parse(event.data))) { renderTasks(); renderChart(); }
    $("#live").textContent = `live · seq ${event.lastEventId}`;
  });
}

document.querySelectorAll("#twins th").forEach((th) => th.addEventListener("click", () => {
  state.sortDir = state.sortKey === th.dataset.key ? -state.sortDir : 1;
  state.sortKey = th.dataset.key;
  renderFleet();
}));
$("#filter").addEventListener("input", (e) => { state.filter = e.target.value; renderFleet(); });
$("#task").addEventListener("change", (e) => { state.task = e.target.value; renderChart(); });

async function refresh() {
  try {
    await loadFleet();
    $("#status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("#status").textContent = String(err.message || err);
  }
}
refresh();
setInterval(refresh, 5000);
if (state.entity) select(state.entity).catch((err) => { $("#status").textContent = String(err.message || err); });
