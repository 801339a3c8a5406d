// lmtune ui: the pages' few actions. No library and nothing from the network: plain fetch and inline SVG.
"use strict";

function $(id) { return document.getElementById(id); }

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// POST JSON; a 4xx/5xx answer is {"error": "lmtune: error: ..."}, shown in the page's error box
async function post(url, body) {
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                              body: JSON.stringify(body || {})});
  const data = await r.json().catch(() => ({error: `lmtune: error: ${r.status} ${r.statusText}`}));
  if (!r.ok) { showError(data.error); throw new Error(data.error); }
  showError("");
  return data;
}

async function get(url) {
  const r = await fetch(url);
  const data = await r.json();
  if (!r.ok) { showError(data.error); throw new Error(data.error); }
  return data;
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ----------------------------------------------------------------- data

async function checkData() {
  const upload = $("data-upload").files[0];
  if (upload) {
    const saved = await post("/api/data/upload", {name: upload.name, text: await upload.text()});
    $("data-path").value = saved.path;
    $("data-upload").value = "";
  }
  $("data-check").disabled = true;
  try {
    const out = await post("/api/data/check", {path: $("data-path").value, format: $("data-format").value,
                                               model: $("data-model").value});
    showDataReport(out);
  } finally { $("data-check").disabled = false; }
}

function showDataReport(out) {
  const counts = $("data-counts");
  counts.replaceChildren();
  for (const src of out.report.sources) {
    const dropped = Object.entries(src.dropped).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ") || "none";
    counts.append(el("div", {class: "count"},
      `${src.path}: shape ${src.format}, ${src.rows_read} rows read, ${src.kept} kept; dropped: ${dropped}`));
  }
  const s = out.report.splits;
  counts.append(el("div", {class: "count", id: "data-rows"}, `train ${s.train} · eval ${s.eval} · test ${s.test}`));
  $("data-summary").textContent = out.summary;
  const hist = (out.report.tokens || {}).histogram || [];
  $("data-hist").replaceChildren(histogram(hist));
  const samples = $("data-samples");
  samples.replaceChildren();
  for (const row of out.samples) {
    const pre = el("pre", {class: "sample"});
    for (const seg of row) pre.append(el("span", seg.trained ? {class: "trained"} : {}, seg.text));
    samples.append(pre);
  }
  $("data-out").hidden = false;
}

function histogram(bins) {
  const w = 520, h = 160, peak = Math.max(1, ...bins.map(b => b.count)), bw = w / Math.max(1, bins.length);
  const svg = svgEl("svg", {width: w, height: h + 30});
  bins.forEach((b, i) => {
    const bh = (h - 10) * b.count / peak;
    svg.append(svgEl("rect", {x: i * bw + 2, y: h - bh, width: bw - 4, height: bh, class: "bar"}));
    svg.append(svgText(i * bw + bw / 2, h + 14, `${b.from}-${b.to}`, "middle"));
    svg.append(svgText(i * bw + bw / 2, h - bh - 3, String(b.count), "middle"));
  });
  return svg;
}

// ----------------------------------------------------------------- config

function formBody() {
  const values = {};
  for (const f of document.querySelectorAll("[data-key]")) if (f.value.trim()) values[f.dataset.key] = f.value;
  return {values, more: $("config-more").value, path: $("config-path").value, replace: $("config-replace").checked};
}

let checkTimer = null;
function checkConfigSoon() { clearTimeout(checkTimer); checkTimer = setTimeout(checkConfig, 250); }

let checksSent = 0;
async function checkConfig() {
  // answers can come back out of order (the first one waits for transformers to import): only the
  // answer to the latest check may change the page, or a stale one overwrites what was typed since
  const mine = ++checksSent;
  const out = await post("/api/config/check", formBody());
  if (mine !== checksSent) return out;
  $("config-yaml").textContent = out.yaml;
  const status = $("config-status");
  status.textContent = out.error || "valid: runs with lmtune train " + $("config-path").value;
  status.className = "status " + (out.error ? "bad" : "good");
  return out;
}

async function loadConfig() {
  const out = await post("/api/config/load", formBody());
  for (const f of document.querySelectorAll("[data-key]")) f.value = out.values[f.dataset.key] || "";
  $("config-more").value = out.more;
  await checkConfig();
}

async function saveConfig() {
  const out = await post("/api/config/save", formBody());
  $("config-command").textContent = `saved ${out.saved}: ${out.command}`;
}

async function startRun() {
  const out = await post("/api/runs/start", formBody());
  location.href = "/train?run=" + encodeURIComponent(out.name);
}

// ----------------------------------------------------------------- train

function watchRun(name) {
  let busy = false;
  async function tick() {
    if (busy) return;
    busy = true;
    try {
      const p = await get("/api/runs/" + encodeURIComponent(name));
      $("live-status").textContent = p.status;
      $("live-status").className = "badge st-" + p.status;
      $("live-step").textContent = `step ${p.step}` + (p.note ? ` · ${p.note}` : "");
      $("run-stop").disabled = p.status !== "running" || p.origin !== "ui";
      $("run-resume").disabled = p.status !== "stopped";
      drawChart($("chart-loss"), [series(p.log, "loss"), series(p.log, "eval_loss")]);
      drawChart($("chart-lr"), [series(p.log, "learning_rate")]);
      $("live-console").textContent = p.console;
      const row = document.querySelector(`tr[data-run="${CSS.escape(name)}"]`);
      if (row) { row.cells[1].textContent = p.status; row.cells[2].textContent = p.step; row.cells[4].textContent = p.note; }
    } catch (e) { /* shown in the error box; keep polling */ }
    busy = false;
  }
  document.addEventListener("DOMContentLoaded", () => { tick(); setInterval(tick, 1000); });
}

async function runAction(action) {
  const name = $("live").dataset.run;
  await post(`/api/runs/${encodeURIComponent(name)}/${action}`);
}

function series(log, key) {
  return log.filter(r => typeof r[key] === "number" && isFinite(r[key])).map(r => [r.step, r[key]]);
}

function drawChart(svg, lines) {
  const w = +svg.getAttribute("width"), h = +svg.getAttribute("height"), pad = 44;
  svg.replaceChildren();
  const pts = lines.flat();
  svg.dataset.points = String(pts.length);
  if (!pts.length) { svg.append(svgText(w / 2, h / 2, "no points yet", "middle")); return; }
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-12);
  const X = x => pad + (w - pad - 10) * (x - x0) / (x1 - x0), Y = y => h - 24 - (h - 34) * (y - y0) / (y1 - y0);
  svg.append(svgEl("line", {x1: pad, y1: h - 24, x2: w - 10, y2: h - 24, class: "axis"}));
  svg.append(svgEl("line", {x1: pad, y1: 10, x2: pad, y2: h - 24, class: "axis"}));
  svg.append(svgText(pad - 4, 14, fmt(y1), "end"), svgText(pad - 4, h - 26, fmt(y0), "end"));
  svg.append(svgText(pad, h - 8, `step ${x0}`, "start"), svgText(w - 10, h - 8, `step ${x1}`, "end"));
  lines.forEach((line, i) => {
    if (!line.length) return;
    svg.append(svgEl("polyline", {points: line.map(p => `${X(p[0])},${Y(p[1])}`).join(" "), class: `l${i + 1}`}));
    for (const p of line) svg.append(svgEl("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, class: `p${i + 1}`}));
  });
}

function fmt(v) { return Math.abs(v) < 0.01 && v !== 0 ? v.toExponential(1) : v.toFixed(3); }

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function svgText(x, y, text, anchor) {
  const t = svgEl("text", {x, y, "text-anchor": anchor, class: "tick"});
  t.textContent = text;
  return t;
}

// ----------------------------------------------------------------- results

async function compareRuns() {
  const runs = [...document.querySelectorAll("#compare-runs input:checked")].map(i => i.value);
  const out = await post("/api/compare", {runs});
  $("compare-table").textContent = out.table;
  $("compare-png").src = out.png;
  $("compare-png").hidden = false;
}

// ----------------------------------------------------------------- chat

async function sendChat() {
  const body = {run: $("chat-run").value, message: $("chat-message").value, max_new_tokens: $("chat-max").value,
                temperature: $("chat-temp").value, top_p: $("chat-top-p").value};
  for (const side of ["base", "finetuned"]) $("answer-" + side).textContent = "";
  $("chat-send").disabled = true;
  $("chat-state").textContent = "answering ...";
  try {
    const r = await fetch("/api/chat", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(body)});
    if (!r.ok) { const e = await r.json(); showError(e.error); $("chat-state").textContent = ""; return; }
    showError("");
    const reader = r.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const item = JSON.parse(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 1);
        if (item.error) showError(item.error);
        if (item.side) $("answer-" + item.side).textContent += item.text;
        if (item.done) $("chat-state").textContent = "done";
      }
    }
  } finally { $("chat-send").disabled = false; }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "config") checkConfig().catch(() => {});
});
