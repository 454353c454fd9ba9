// imagegen studio: the page over /api/v1. Plain JavaScript, no build step, no network beyond this server.
"use strict";

const API = "/api/v1";
const TOKEN = new URLSearchParams(location.search).get("token");
const TERMINAL = new Set(["done", "failed", "cancelled", "interrupted"]);
const TRAINING = new Set(["starting", "running", "stopping"]);
const state = { runs: [], trains: [], trainTimer: null };

// ---- helpers: elements, the API, messages ----

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
}

const $ = (sel) => document.querySelector(sel);

function withToken(url) {
  if (!TOKEN || !url) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(method, path, body) {
  const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    let msg = (data && data.error) || `${r.status} ${r.statusText}`;
    if (r.status === 429) msg = `the queue is full: try again in ${r.headers.get("Retry-After") || "a few"} s (${msg})`;
    throw new Error(msg);
  }
  return data;
}

function say(text, error = false) {
  const m = $("#message");
  m.textContent = text;
  m.className = error ? "error" : "";
  m.hidden = !text;
  clearTimeout(say.timer);
  if (text && !error) say.timer = setTimeout(() => { m.hidden = true; }, 6000);  // errors stay until clicked
}

async function attempt(fn) {
  try {
    return await fn();
  } catch (e) {
    say(e.message, true);
    return undefined;
  }
}

function fmt(v) {
  if (typeof v === "number") return Number.isInteger(v) ? v.toLocaleString("en") : String(Number(v.toPrecision(3)));
  if (Array.isArray(v)) return v.map(fmt).join(", ");
  return v === null || v === undefined ? "" : String(v);
}

function when(t) {
  if (t === null || t === undefined) return "";
  const d = new Date(typeof t === "number" ? t * 1000 : t);
  return isNaN(d) ? String(t) : d.toLocaleTimeString();
}

function numbers(text, int = false) {
  const parts = String(text || "").split(",").map((s) => s.trim()).filter(Boolean);
  const out = parts.map(Number);
  if (out.some((x) => !isFinite(x) || (int && !Number.isInteger(x)))) throw new Error(`not a list of numbers: ${text}`);
  return out;
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {  // an older browser or a page not in a secure context: the selection route
    const area = el("textarea", {}, text);
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  say("copied: " + text);
}

// ---- runs ----

function runByName(name) {
  return state.runs.find((r) => r.name === name);
}

function evaluationText(ev) {
  if (!ev) return "not evaluated";
  const s = ev.samples || ev, f = ev.floor || {};
  const pick = (k, label) => (s[k] === undefined ? null
    : `${label} ${fmt(s[k])}` + (f[k] !== undefined ? ` (${fmt(f[k])})` : s["floor_" + k] !== undefined ? ` (${fmt(s["floor_" + k])})` : ""));
  const parts = [pick("fid", "FID"), pick("precision", "P"), pick("recall", "R"), pick("class_accuracy", "class acc")];
  return parts.filter(Boolean).join(" · ") || "evaluated";
}

// a grid over training: {images, url} (or a bare URL)
const gridUrl = (g) => (typeof g === "string" ? g : g && g.url);
const gridName = (g) => (g && g.images !== undefined && g.images !== null ? `after ${fmt(g.images)} images`
  : String(gridUrl(g)).split("/").pop());
const latestGrid = (grids) => (grids && grids.length ? gridUrl(grids[grids.length - 1]) : null);

function renderRuns() {
  const body = $("#runs-table tbody");
  body.replaceChildren(...state.runs.map((r) => {
    const grid = latestGrid(r.grids) || r.grid;
    const classes = r.classes || [];
    return el("tr", { "data-run": r.name },
      el("td", {}, el("strong", { text: r.name }), r.kind === "artifact" ? el("span", { class: "muted", text: " artifact" }) : null),
      el("td", { text: r.method || "" }), el("td", { text: r.dataset || "" }),
      el("td", { class: "classes", title: classes.join(", ") }, `${classes.length}: ${classes.slice(0, 6).join(", ")}${classes.length > 6 ? ", ..." : ""}`),
      el("td", { class: "num", text: fmt(r.images_trained) }),
      el("td", { class: "num evaluation", text: evaluationText(r.evaluation) }),
      el("td", {}, grid ? el("img", { class: "thumb", src: withToken(grid), alt: `latest grid of ${r.name}`, loading: "lazy",
        title: "grids over training", onclick: () => openGrids(r) }) : el("span", { class: "muted", text: "none" })),
      el("td", {}, r.report ? el("a", { href: withToken(r.report), target: "_blank", text: "report" }) : null, " ",
        el("button", { type: "button", class: "small", text: "use", onclick: () => useRun(r.name) })));
  }));
  $("#runs-table").hidden = !state.runs.length;
  $("#runs-empty").hidden = !!state.runs.length;
}

function fillRunSelect(select, keep) {
  const current = keep || select.value;
  select.replaceChildren(...state.runs.map((r) => el("option", { value: r.name, text: r.name })));
  if (runByName(current)) select.value = current;
}

function fillClassSelect(select, runName) {
  const current = select.value, run = runByName(runName);
  const opts = ((run && run.classes) || []).map((c, i) => el("option", { value: c, text: `${i}: ${c}` }));
  select.replaceChildren(el("option", { value: "", text: "every class in turn" }), ...opts);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

function renderCompareRuns() {
  const box = $("#cmp-runs"), checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  box.replaceChildren(el("legend", { text: "Runs" }), ...state.runs.map((r, i) => el("label", {},
    el("input", { type: "checkbox", name: "runs", value: r.name, checked: checked.has(r.name) || (!checked.size && i < 2) }),
    r.name)));
}

async function loadRuns() {
  const data = await attempt(() => api("GET", "/runs"));
  if (!data) return;
  state.runs = data.runs || [];
  renderRuns();
  fillRunSelect($("#gen-run"));
  fillRunSelect($("#cmp-run"));
  renderCompareRuns();
  fillClassSelect($("#gen-class"), $("#gen-run").value);
  compareClasses();
}

function useRun(name) {
  $("#gen-run").value = name;
  fillClassSelect($("#gen-class"), name);
  $("#generate").scrollIntoView({ behavior: "smooth" });
}

// ---- jobs: submit, follow by events, render ----

function paramsList(params, extra = {}) {
  const entries = Object.entries({ ...params, ...extra }).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return el("dl", { class: "params" }, ...entries.flatMap(([k, v]) => [el("dt", { text: k.replace(/_/g, " ") }), el("dd", { text: fmt(v) })]));
}

const SETTINGS = ["steps", "sampler", "guidance", "guidance_interval", "autoguidance", "autoguidance_interval"];

function shownParams(job) {
  // a job's parameters as given, the class by name, and the run's own sampler settings where none was given
  const p = { ...(job.params || {}) }, run = runByName(p.run), names = classNames(job);
  if (typeof p.class === "number" && names[p.class] !== undefined) p.class = `${p.class}: ${names[p.class]}`;
  else if (job.kind === "generate" && (p.class === null || p.class === undefined)) p.class = "every class in turn";
  const own = (run && run.sample) || {};
  if (job.kind === "generate") for (const k of SETTINGS) if ((p[k] === null || p[k] === undefined) && own[k] !== undefined) p[k] = `${fmt(own[k])} (run's)`;
  delete p.rows;  // a comparison's settings are its grid's row labels
  return p;
}

function commandLine(job) {
  if (!job.command) return null;
  return el("div", { class: "command" }, el("code", { text: job.command }),
    el("button", { type: "button", class: "small copy-command", text: "copy as command", onclick: () => copy(job.command) }));
}

function classNames(job) {
  const run = runByName((job.params || {}).run);
  return job.classes || (run && run.classes) || [];
}

function labelOf(job, i) {
  if (job.labels) return job.labels[i];
  const names = classNames(job), c = (job.params || {}).class;
  if (c === null || c === undefined || c === "") return names.length ? i % names.length : null;
  return typeof c === "number" ? c : names.indexOf(c);
}

function className(job, i) {
  const names = classNames(job), label = labelOf(job, i);
  return label === null || label < 0 ? "" : names[label] !== undefined ? names[label] : `class ${label}`;
}

class JobView {
  // One job's progress and results inside `box`; follow() keeps it current until a terminal state.
  constructor(box) {
    this.box = box;
    this.job = null;
    this.source = null;
  }

  show(job) {
    this.job = job;
    this.box.hidden = false;
    const p = job.progress || 0;
    const head = el("div", { class: "jobhead" },
      el("span", {}, `${job.kind || "job"} `, el("code", { text: job.id })),
      el("span", { class: `state ${job.state}`, "data-state": job.state, text: job.state }),
      el("progress", { max: "1", value: String(job.state === "done" ? 1 : p) }),
      el("span", { class: "pct", text: `${Math.round(100 * (job.state === "done" ? 1 : p))}%` }),
      TERMINAL.has(job.state) ? null : el("button", { type: "button", class: "danger cancel", text: "Cancel", onclick: () => this.cancel() }));
    const parts = [head];
    if (job.error) parts.push(el("p", { class: "error", text: job.error }));
    if (job.state === "done") parts.push(...this.results(job));
    this.box.replaceChildren(...parts);
  }

  results(job) {
    const f = job.files || {};
    const links = el("p", { class: "links" },
      f.grid ? el("a", { href: withToken(f.grid), download: "", text: "download grid.png" }) : null,
      f.npz ? el("a", { href: withToken(f.npz), download: "", text: "download samples.npz" }) : null);
    const out = [commandLine(job), links].filter(Boolean);
    if (job.kind === "generate" || (f.images && job.kind !== "explain" && job.kind !== "compare")) {
      out.push(el("div", { class: "result" }, this.gallery(job), paramsList(shownParams(job))));
      if (f.grid) out.push(el("details", {}, el("summary", { text: "grid.png" }), el("img", { class: "grid", src: withToken(f.grid), alt: "grid" })));
    } else if (job.kind === "compare") {
      out.push(el("div", { class: "result" }, f.grid ? el("img", { class: "grid compare-grid", src: withToken(f.grid),
        alt: "comparison grid: rows are settings, columns are seeds" }) : null, paramsList(shownParams(job))));
    } else {
      out.push(el("div", { class: "explain-figs" }, ...figureFiles(f)), paramsList(shownParams(job)));
    }
    return out;
  }

  gallery(job) {
    const images = (job.files || {}).images || [];
    const order = images.map((url, i) => ({ url, i, label: labelOf(job, i) }));
    const perClass = new Map();
    order.forEach((o) => perClass.set(o.label, (perClass.get(o.label) || 0) + 1));
    const rows = images.length > 10 && perClass.size > 1 && (job.params || {}).class == null;
    if (rows) order.sort((a, b) => a.label - b.label || a.i - b.i);  // one row per class, as the CLI's grid.png
    const g = el("div", { class: "gallery" + (rows ? " rows" : "") },
      ...order.map((o) => el("figure", { "data-index": o.i, title: `#${o.i} ${className(job, o.i)}` },
        el("img", { src: withToken(o.url), alt: className(job, o.i) || `image ${o.i}`, onclick: () => openDetail(job, o.i) }),
        el("figcaption", {}, el("span", { class: "cls", text: className(job, o.i) }), `#${o.i} · seed ${fmt((job.params || {}).seed ?? 0)}`))));
    if (rows) g.style.setProperty("--cols", String(Math.max(...perClass.values())));
    return g;
  }

  follow(job) {
    this.close();
    this.show(job);
    if (TERMINAL.has(job.state)) return;
    const source = new EventSource(withToken(`${API}/jobs/${job.id}/events`));
    this.source = source;
    const onEvent = (e) => {
      let data;
      try { data = JSON.parse(e.data); } catch { return; }
      if (!data || data.id !== job.id) return;
      this.show(data);
      if (TERMINAL.has(data.state)) { this.close(); jobFinished(data); }
    };
    for (const name of ["message", "state", "progress", "job", "done"]) source.addEventListener(name, onEvent);
    source.onerror = () => {  // EventSource retries by itself while open; once closed, poll instead
      if (source.readyState === EventSource.CLOSED && this.source === source) this.poll(job.id);
    };
  }

  async poll(id, tries = 7200) {
    this.close();
    for (let k = 0; k < tries && this.job && this.job.id === id; k++) {
      const data = await attempt(() => api("GET", `/jobs/${id}`));
      if (data) {
        this.show(data);
        if (TERMINAL.has(data.state)) { jobFinished(data); return; }
      }
      await new Promise((ok) => setTimeout(ok, 500));
    }
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }

  async cancel() {
    const data = await attempt(() => api("DELETE", `/jobs/${this.job.id}`));
    if (data) { this.show(data); if (TERMINAL.has(data.state)) { this.close(); jobFinished(data); } }
  }
}

function figureFiles(files) {
  const named = [];
  for (const [k, v] of Object.entries(files)) {
    if (k === "npz") continue;
    for (const url of Array.isArray(v) ? v : [v]) {
      if (typeof url === "string" && /\.png(\?|$)/.test(url)) named.push([k === "images" ? url.split("/").pop().replace(/\.png.*/, "") : k, url]);
    }
  }
  return named.map(([name, url]) => el("figure", { "data-name": name },
    el("img", { src: withToken(url), alt: name, onclick: () => openImage(withToken(url), name) }),
    el("figcaption", {}, el("span", { class: "cls", text: name }), el("a", { href: withToken(url), download: "", text: "download" }))));
}

const views = {};

async function submit(path, body, view, section) {
  say("");
  const job = await attempt(() => api("POST", path, body));
  if (!job) return null;
  const full = (await attempt(() => api("GET", `/jobs/${job.id}`))) || job;
  view.follow(full);
  if (section) section.hidden = false;
  loadJobs();
  return full;
}

function jobFinished(job) {
  loadJobs();
  if (job.state === "failed" || job.state === "interrupted") say(`job ${job.id} ${job.state}: ${job.error || ""}`, true);
}

// ---- generate ----

function generateBody(overrides = {}) {
  const f = new FormData($("#gen-form"));
  const body = { run: f.get("run"), n: Number(f.get("n")), class: f.get("class") || null, seed: Number(f.get("seed") || 0),
    backend: f.get("backend") || "auto" };
  if (f.get("steps")) body.steps = Number(f.get("steps"));
  if (f.get("sampler")) body.sampler = f.get("sampler");
  if (f.get("guidance") !== "") body.guidance = Number(f.get("guidance"));
  if (f.get("autoguidance") !== "" && f.get("autoguidance") !== null) body.autoguidance = Number(f.get("autoguidance"));
  for (const k of ["guidance_interval", "autoguidance_interval"]) if (f.get(k)) body[k] = f.get(k).replace(/\s/g, "");  // "LO,HI"
  return { ...body, ...overrides };
}

function classGrid() {
  const run = runByName($("#gen-run").value);
  const k = (run && run.classes && run.classes.length) || 10;
  return attempt(() => submit("/jobs", generateBody({ n: 10 * k, class: null }), views.gen));
}

// ---- the image viewer and explain ----

function openImage(src, caption) {
  $("#viewer-body").replaceChildren(el("figure", {}, el("img", { class: "big", src, alt: caption }), el("figcaption", { text: caption })));
  $("#viewer").showModal();
}

function openGrids(run) {
  const grids = run.grids && run.grids.length ? run.grids : [{ url: run.grid, images: run.images_trained }];
  $("#viewer-body").replaceChildren(el("h3", { text: `${run.name}: grids over training` }),
    el("div", { class: "explain-figs" }, ...grids.slice(-12).map((g) => el("figure", {},
      el("img", { class: "grid", src: withToken(gridUrl(g)), alt: gridName(g), loading: "lazy" }),
      el("figcaption", { text: gridName(g) })))));
  $("#viewer").showModal();
}

function openDetail(job, i) {
  const url = job.files.images[i];
  $("#viewer-body").replaceChildren(el("h3", { text: `${className(job, i)} · image #${i} of job ${job.id}` }),
    el("div", { class: "result" }, el("img", { class: "big", src: withToken(url), alt: className(job, i) }),
      paramsList(shownParams(job), { image: i, class: className(job, i) })),
    commandLine(job),
    el("div", { class: "buttons" }, el("a", { href: withToken(url), download: `${job.id}-${i}.png`, text: "download PNG" }),
      el("button", { type: "button", class: "explain-button", text: "Explain this image", onclick: () => explain(job, i) })));
  $("#viewer").showModal();
}

async function explain(job, index) {
  $("#viewer").close();
  const section = $("#explain");
  section.hidden = false;
  await submit("/explain", { job: job.id, index }, views.exp, section);
  section.scrollIntoView({ behavior: "smooth" });
}

// ---- compare ----

function compareClasses() {
  const mode = $("#cmp-mode").value;
  const first = mode === "runs" ? ($("#cmp-runs input:checked") || {}).value : $("#cmp-run").value;
  fillClassSelect($("#cmp-class"), first);
}

function compareMode() {
  const mode = $("#cmp-mode").value;
  $("#cmp-runs").hidden = mode !== "runs";
  $("#cmp-run-label").hidden = $("#cmp-values-label").hidden = mode === "runs";
  $("#cmp-values-name").textContent = mode === "steps" ? "Step counts" : "Guidance scales";
  $("#cmp-values").placeholder = mode === "steps" ? "1,2,4,8" : "1,1.5,2,3";
  compareClasses();
}

function compareBody() {
  const f = new FormData($("#cmp-form")), mode = f.get("mode");
  const body = { seeds: numbers(f.get("seeds"), true), class: f.get("class") || null };
  if (mode === "runs") body.runs = f.getAll("runs");
  else {
    body.run = f.get("run");
    body[mode] = numbers(f.get("values"), mode === "steps");
  }
  return body;
}

// ---- training ----

function lossChart(points, w = 280, h = 120) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "loss");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(svg.namespaceURI, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text) n.textContent = text;
    svg.append(n);
  };
  if (!points || points.length < 1) { add("text", { x: 8, y: h / 2 }, "no loss logged yet"); return svg; }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const px = (x) => 30 + ((x - x0) / (x1 - x0)) * (w - 38), py = (y) => h - 16 - ((y - y0) / (y1 - y0)) * (h - 28);
  add("polyline", { points: points.map((p) => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ") });
  const last = points[points.length - 1];
  add("circle", { cx: px(last[0]).toFixed(1), cy: py(last[1]).toFixed(1), r: 2.5 });
  add("text", { x: 2, y: 12 }, fmt(y1));
  add("text", { x: 2, y: h - 18 }, fmt(y0));
  add("text", { x: 30, y: h - 3 }, `loss over ${fmt(x1)} images`);
  return svg;
}

function renderTrain() {
  $("#train-list").replaceChildren(...state.trains.map((t) => {
    const grid = latestGrid(t.grids) || t.grid, budget = t.budget || {};
    const ips = t.images_per_second ? ` · ${fmt(Math.round(t.images_per_second))} img/s` : "";
    const canResume = ["stopped", "failed", "interrupted"].includes(t.state) && t.resumable !== false;
    const canDelete = ["stopped", "failed", "interrupted"].includes(t.state) && t.resumable === false;
    return el("div", { class: "train-card", "data-train": t.id },
      el("div", { class: "info" }, el("h3", { text: t.run || t.name || t.id }),
        el("p", { class: "muted", text: `${t.method || ""} on ${t.dataset || ""} · budget ${Object.entries(budget).map(([k, v]) => `${fmt(v)} ${k}`).join("")}` }),
        el("p", {}, el("span", { class: `state ${t.state}`, "data-state": t.state, text: t.state }),
          el("span", { class: "images", text: ` · ${fmt(t.images || 0)} images${ips}` })),
        t.progress !== undefined ? el("progress", { max: "1", value: String(t.progress || 0), title: "share of the budget" }) : null,
        t.error ? el("p", { class: "error", text: t.error }) : null,
        el("div", { class: "buttons" },
          t.state === "running" ? el("button", { type: "button", class: "danger stop", text: "Stop", onclick: () => trainAction(t, "stop") }) : null,
          canResume ? el("button", { type: "button", class: "secondary resume", text: "Resume", onclick: () => trainAction(t, "resume") }) : null,
          canDelete ? el("button", { type: "button", class: "danger delete", text: "Delete", title: "no checkpoint to keep: forget it and free its name", onclick: () => trainDelete(t) }) : null,
          runByName(t.run) && !TRAINING.has(t.state) ? el("button", { type: "button", class: "small", text: "use", onclick: () => useRun(t.run) }) : null)),
      lossChart(t.loss),
      grid ? el("img", { class: "grid", src: withToken(grid), alt: `latest grid of ${t.run}`,
        onclick: () => openImage(withToken(grid), `${t.run}: latest grid`) }) : el("p", { class: "muted", text: "no grid yet" }));
  }));
}

async function loadTrain() {
  const data = await attempt(() => api("GET", "/train"));
  if (!data) return;
  const before = new Map(state.trains.map((t) => [t.id, t.state]));
  state.trains = Array.isArray(data) ? data : data.trainings || data.train || [];
  renderTrain();
  if (state.trains.some((t) => before.has(t.id) && before.get(t.id) !== t.state && !TRAINING.has(t.state))) loadRuns();
  scheduleTrain();
}

function scheduleTrain() {
  clearTimeout(state.trainTimer);
  if (state.trains.some((t) => TRAINING.has(t.state))) state.trainTimer = setTimeout(loadTrain, 1000);
}

async function trainAction(t, action) {
  const data = await attempt(() => api("POST", `/train/${t.id}/${action}`));
  if (data) loadTrain();
}

async function trainDelete(t) {
  const data = await attempt(() => api("DELETE", `/train/${t.id}`));
  if (data) loadTrain();
}

function trainBody() {
  const f = new FormData($("#train-form"));
  const body = { name: f.get("name"), dataset: f.get("dataset"), method: f.get("method") };
  body[f.get("unit")] = Number(f.get("budget"));
  if (f.get("size")) body.size = Number(f.get("size"));
  return body;
}

// ---- the jobs list ----

async function loadJobs() {
  const data = await attempt(() => api("GET", "/jobs"));
  if (!data) return;
  $("#jobs-table tbody").replaceChildren(...(data.jobs || []).slice(0, 50).map((j) => {
    const p = j.params || {};
    return el("tr", { "data-job": j.id },
      el("td", {}, el("code", { text: j.id })), el("td", { text: j.kind }),
      el("td", { text: p.run || (p.rows || []).map((r) => r.label).join(" | ") || (p.job ? `job ${p.job}` : "") }),
      el("td", { class: "num", text: j.kind === "generate" ? fmt(p.n) : j.kind === "compare" ? fmt((p.rows || []).length * (p.seeds || []).length) : "" }),
      el("td", {}, el("span", { class: `state ${j.state}`, title: j.error || "", text: j.state })), el("td", { text: when(j.created) }),
      el("td", {}, el("button", { type: "button", class: "small", text: "view", onclick: () => viewJob(j) }), " ",
        TERMINAL.has(j.state) ? null : el("button", { type: "button", class: "small danger", text: "cancel",
          onclick: async () => { await attempt(() => api("DELETE", `/jobs/${j.id}`)); loadJobs(); } })));
  }));
}

function viewJob(job) {
  const [view, section] = job.kind === "compare" ? [views.cmp, $("#compare")] : job.kind === "explain"
    ? [views.exp, $("#explain")] : [views.gen, $("#generate")];
  section.hidden = false;
  view.follow(job);
  section.scrollIntoView({ behavior: "smooth" });
}

// ---- wiring ----

function start() {
  views.gen = new JobView($("#gen-job"));
  views.cmp = new JobView($("#cmp-job"));
  views.exp = new JobView($("#exp-job"));
  if (TOKEN) $("#docs-link").href = withToken("/docs");
  $("#message").onclick = () => { $("#message").hidden = true; };
  $("#runs-refresh").onclick = loadRuns;
  $("#jobs-refresh").onclick = loadJobs;
  $("#gen-run").onchange = () => fillClassSelect($("#gen-class"), $("#gen-run").value);
  $("#gen-form").onsubmit = (e) => { e.preventDefault(); attempt(() => submit("/jobs", generateBody(), views.gen)); };
  $("#gen-grid").onclick = classGrid;
  $("#cmp-mode").onchange = compareMode;
  $("#cmp-run").onchange = compareClasses;
  $("#cmp-runs").onchange = compareClasses;
  $("#cmp-form").onsubmit = (e) => { e.preventDefault(); attempt(() => submit("/compare", compareBody(), views.cmp)); };
  $("#train-form").onsubmit = async (e) => {
    e.preventDefault();
    const t = await attempt(() => api("POST", "/train", trainBody()));
    if (t) { say(`training ${t.run || t.name || t.id} started`); loadTrain(); }
  };
  compareMode();
  loadRuns();
  loadJobs();
  loadTrain();
}

document.addEventListener("DOMContentLoaded", start);
