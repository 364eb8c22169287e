// AI Hub Training's web page: jobs, a job's live progress, log and plots, and the model
// registry. Plain JavaScript, no build step; every number comes from the REST API
// (the same paths as the guide), sent with the API key kept in this tab's sessionStorage.
"use strict";

const STEPS = ["data_loading", "preprocessing", "training", "evaluation", "registration"];
const STEP_START = { data_loading: 0, preprocessing: 10, training: 20, evaluation: 80, registration: 90 };
const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const HEADLINE = ["mae", "rmse", "mape", "r2_score", "baseline_mae", "skill", "f1", "precision", "recall", "roc_auc",
  "pr_auc", "threshold", "anomaly_rate", "training_duration_seconds", "validation_rows"];
const HIGHER_IS_BETTER = new Set(["r2_score", "skill", "f1", "precision", "recall", "roc_auc", "pr_auc"]);
const PLOT_POINTS = 2000; // predictions asked for per plot (the API thins the window to about this many)
const EXAMPLE = {
  tenant_id: "acme-corp",
  model_type: "forecast",
  priority: "high",  // as the guide's quick start sends it
  config: {
    model_type: "forecast",
    algorithm: "lgbm",
    hyperparameters: { n_estimators: 100, learning_rate: 0.1, max_depth: 7, num_leaves: 31 },
    training_start: "2024-01-01T00:00:00",
    training_end: "2024-12-31T23:59:59",
    features: ["temperature", "humidity", "day_of_week", "hour_of_day", "load_lag_1", "load_lag_24"],
    target: "load",
    validation_split: 0.2,
    random_seed: 42,
  },
};

// --- small helpers ------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const $ = (sel) => document.querySelector(sel);
const fmt = (v) => (typeof v !== "number" ? String(v) : Math.abs(v) >= 1000 ? v.toFixed(0) : +v.toPrecision(4) + "");
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC") : "");
const short = (id) => (id || "").slice(0, 8);

function badge(status) { return h("span", { class: `badge ${status}`, "data-status": status }, status); }

function bar(progress, status, big) {
  const span = h("span");
  span.style.width = `${Math.max(0, Math.min(100, progress || 0))}%`;
  return h("div", { class: `bar ${status || ""} ${big ? "big" : ""}`, role: "progressbar", "aria-valuemin": 0,
    "aria-valuemax": 100, "aria-valuenow": progress || 0 }, span);
}

// --- the API key and errors ---------------------------------------------------------------------
const session = {
  get key() { return sessionStorage.getItem("aihub.key") || ""; },
  set key(v) { if (v) sessionStorage.setItem("aihub.key", v); else sessionStorage.removeItem("aihub.key"); },
  get tenant() { return sessionStorage.getItem("aihub.tenant") || ""; },
  set tenant(v) { sessionStorage.setItem("aihub.tenant", v || ""); },
};

class ApiError extends Error {
  constructor(status, body) {
    super(plainWords(status, body));
    this.status = status;
    this.body = body;
  }
}

// An API error in plain words: what went wrong, then each field and what is wrong with it.
function plainWords(status, body) {
  if (status === 401) return "This needs an API key. Choose \u201cAPI key\u201d at the top right and paste yours.";
  if (status === 403) return `Your API key may not do this: ${body && body.message ? body.message : "permission denied"}.`;
  if (!body || typeof body !== "object") return `The server answered ${status} without an explanation.`;
  let text = body.message || body.error || `The server answered ${status}.`;
  const d = body.details || {};
  const violations = d.violations || (d.field && d.error ? [{ field: d.field, error: d.error }] : []);
  if (violations.length) text += "\n" + violations.map((v) => `\u2022 ${v.field}: ${v.error}`).join("\n");
  else if (d.reason && d.reason !== body.message) text += ` (${d.reason})`;
  if (d.requested_workers !== undefined) text += ` (asked for ${d.requested_workers} workers, ${d.available_workers} available)`;
  return text;
}

function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  box.hidden = false;
  if (err instanceof ApiError && err.status === 401) openKeyDialog();
}

function headers(json) {
  const out = {};
  if (session.key) out.authorization = `Bearer ${session.key}`;
  if (json) out["content-type"] = "application/json";
  return out;
}

async function api(path, { method = "GET", body, signal } = {}) {
  let resp;
  try {
    resp = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error("The service cannot be reached (is it running?).");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

// A newline-delimited JSON stream (/watch, /logs): onItem for each object as it arrives.
async function stream(path, onItem, signal) {
  const resp = await fetch(path, { headers: headers(false), signal });
  if (!resp.ok) {
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    throw new ApiError(resp.status, data);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (line) parseItem(line, onItem);
    }
  }
  if (buffer.trim()) parseItem(buffer.trim(), onItem);
}

function parseItem(line, onItem) {
  let item;
  try { item = JSON.parse(line); } catch { return; }
  if (item && item.error && item.message && !item.job_id && item.sequence === undefined) throw new ApiError(500, item);
  onItem(item.result || item);
}

// --- the key dialog and the header -------------------------------------------------------------
function openKeyDialog() {
  const dialog = $("#key-dialog");
  if (dialog.open) return;
  $("#key-input").value = "";
  dialog.showModal();
}

function setupHeader() {
  $("#key-button").addEventListener("click", openKeyDialog);
  $("#key-dialog").addEventListener("close", () => {
    const choice = $("#key-dialog").returnValue;
    if (choice === "save" && $("#key-input").value.trim()) session.key = $("#key-input").value.trim();
    if (choice === "forget") session.key = "";
    updateKeyButton();
    if (choice === "save" || choice === "forget") route();
  });
  const tenant = $("#tenant");
  tenant.value = session.tenant;
  tenant.addEventListener("change", () => { session.tenant = tenant.value.trim(); route(); });
  updateKeyButton();
}

function updateKeyButton() { $("#key-button").textContent = session.key ? "API key \u2713" : "API key"; }

// --- routing ----------------------------------------------------------------------------------
let cleanup = [];
function onLeave(fn) { cleanup.push(fn); }

function route() {
  for (const fn of cleanup) fn();
  cleanup = [];
  showError(null);
  const hash = location.hash || "#/";
  const view = $("#view");
  view.textContent = "";
  const job = hash.match(/^#\/jobs\/([0-9a-fA-F-]{36})$/);
  const section = job ? "jobs" : hash.startsWith("#/models") ? "models" : hash.startsWith("#/new") ? "new" : "jobs";
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === section);
  if (job) return jobPage(view, job[1]);
  if (section === "models") return modelsPage(view);
  if (section === "new") return newJobPage(view);
  return jobsPage(view);
}

function every(ms, fn) {
  let stopped = false, timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (err) { if (err.name !== "AbortError") showError(err); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  onLeave(() => { stopped = true; clearTimeout(timer); });
}

// --- the job list -----------------------------------------------------------------------------
function jobsPage(view) {
  const status = h("select", { id: "status-filter" }, h("option", { value: "" }, "any status"),
    ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"].map((s) => h("option", { value: s }, s)));
  status.value = sessionStorage.getItem("aihub.status") || "";
  const body = h("tbody");
  const table = h("table", { id: "jobs" },
    h("thead", {}, h("tr", {}, ["job", "tenant", "type", "algorithm", "priority", "status", "progress", "step", "mae", "created"]
      .map((c) => h("th", { class: c === "mae" ? "num" : "" }, c)))), body);
  view.append(h("h1", {}, "Training jobs"),
    h("div", { class: "filters" }, h("label", {}, "Status ", status),
      h("span", { class: "muted" }, session.tenant ? `tenant ${session.tenant}` : "every tenant your key sees"),
      h("span", { class: "muted", id: "jobs-count" })),
    h("div", { class: "card" }, table));
  status.addEventListener("change", () => { sessionStorage.setItem("aihub.status", status.value); refresh(); });
  async function refresh() {
    const q = new URLSearchParams({ page_size: "100" });
    if (session.tenant) q.set("tenant_id", session.tenant);
    if (status.value) q.set("status", status.value);
    const data = await api(`/ai/training/jobs?${q}`);
    const jobs = data.jobs || [];
    body.textContent = "";
    for (const j of jobs) {
      // Only a COMPLETED job has final metrics; a RUNNING one shows its live MAE; a cancelled
      // or failed one's last live value is no result and is not shown.
      const shown = j.status === "COMPLETED" || j.status === "RUNNING";
      const mae = shown && j.metrics && j.metrics.mae !== undefined ? fmt(j.metrics.mae) : "";
      body.append(h("tr", { class: "clickable", "data-job": j.job_id, onclick: () => { location.hash = `#/jobs/${j.job_id}`; } },
        h("td", {}, h("a", { href: `#/jobs/${j.job_id}`, class: "mono" }, short(j.job_id))),
        h("td", {}, j.tenant_id), h("td", {}, j.model_type.toLowerCase()),
        h("td", {}, (j.config && j.config.algorithm) || ""), h("td", {}, j.priority.toLowerCase()),
        h("td", {}, badge(j.status)), h("td", {}, bar(j.progress, j.status)),
        h("td", { class: "muted" }, j.current_step || ""), h("td", { class: "num" }, mae),
        h("td", { class: "muted" }, when(j.created_at))));
    }
    $("#jobs-count").textContent = jobs.length ? `${jobs.length} job${jobs.length > 1 ? "s" : ""}${data.next_page_token ? " (newest 100)" : ""}` : "no jobs";
  }
  every(2000, refresh);
}

// --- one job ----------------------------------------------------------------------------------
function jobPage(view, jobId) {
  const controller = new AbortController();
  onLeave(() => controller.abort());
  const title = h("h1", {}, "Job ", h("span", { class: "mono" }, jobId));
  const head = h("div", { class: "card", id: "job-head" });
  const errorBox = h("div", { id: "job-error" });
  const metricsCard = h("div", { class: "card", id: "metrics" }, h("h2", {}, "Metrics"), h("p", { class: "muted" }, "none yet"));
  const logBox = h("div", { class: "log", id: "log" });
  const plots = h("div", { id: "plots" });
  view.append(title, head, errorBox, h("div", { class: "row" }, metricsCard,
    h("div", { class: "card" }, h("h2", {}, "Log"), logBox)), plots);
  let plotted = false, latest = null;

  function render(job) {
    latest = job;
    head.textContent = "";
    const actions = h("div", { style: "margin-left:auto; display:flex; gap:8px" });
    if (!FINAL.has(job.status)) actions.append(h("button", { class: "danger", id: "cancel", onclick: () => act("DELETE", "") }, "Cancel job"));
    if (job.status === "FAILED" || job.status === "CANCELLED") actions.append(h("button", { id: "retry", onclick: () => act("POST", "/retry") }, "Retry"));
    const cfg = job.config || {};
    head.append(
      h("div", { class: "row", style: "align-items:center" }, badge(job.status),
        h("strong", { id: "progress-text" }, `${job.progress || 0} %`), h("span", { class: "muted" }, job.current_step || ""), actions),
      h("div", { style: "margin:10px 0" }, bar(job.progress, job.status, true)),
      h("div", { class: "steps" }, STEPS.map((s, i) => stepBox(job, s, i))),
      h("dl", { class: "kv", style: "margin-top:12px" },
        ...kv("tenant", job.tenant_id), ...kv("model type", job.model_type.toLowerCase()), ...kv("algorithm", cfg.algorithm),
        ...kv("priority", job.priority.toLowerCase()), ...kv("attempt", job.attempt), ...kv("target", cfg.target),
        ...kv("features", (cfg.features || []).join(", ")),
        ...kv("window", `${cfg.training_start || ""} \u2026 ${cfg.training_end || ""}`),
        ...kv("created", when(job.created_at)), ...(job.finished_at ? kv("finished", when(job.finished_at)) : []),
        ...(job.model_version ? kv("model version", job.model_version) : [])));
    errorBox.textContent = "";
    if (job.status === "FAILED" && job.error) {
      const e = job.error;
      errorBox.append(h("div", { class: "card error", id: "job-failure" }, h("strong", {}, `${e.reason || "Failed"}: `), e.message || "",
        job.next_retry_at ? h("div", {}, `It will be retried by itself at ${when(job.next_retry_at)}.`) : null));
    }
    renderMetrics(metricsCard, job.metrics || {}, job.status === "RUNNING");
    if (job.status === "COMPLETED" && !plotted) {
      plotted = true;
      drawPlots(plots, job).catch(showError);
    }
  }

  async function act(method, suffix) {
    try {
      render(await api(`/ai/training/jobs/${jobId}${suffix}`, { method }));
      if (suffix === "/retry") watch();
    } catch (err) { showError(err); }
  }

  async function watch() {
    try {
      await stream(`/ai/training/jobs/${jobId}/watch`, render, controller.signal);
      if (latest && !FINAL.has(latest.status) && !controller.signal.aborted) setTimeout(watch, 1000); // cut off: follow again
    } catch (err) {
      if (err.name === "AbortError") return;
      showError(err);
    }
  }

  let sequence = 0;
  async function follow() {
    try {
      await stream(`/ai/training/jobs/${jobId}/logs?after_sequence=${sequence}`, (e) => {
        sequence = Math.max(sequence, Number(e.sequence) || 0);
        const stick = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 8;
        logBox.append(h("div", { class: e.level }, `${(e.time || "").slice(11, 19)}  ${(e.level || "").padEnd(7)} ${e.message}`));
        if (stick) logBox.scrollTop = logBox.scrollHeight;
      }, controller.signal);
      if (latest && !FINAL.has(latest.status) && !controller.signal.aborted) setTimeout(follow, 1000);
    } catch (err) {
      if (err.name !== "AbortError") showError(err);
    }
  }
  watch();
  follow();
}

function kv(label, value) { return [h("dt", {}, label), h("dd", {}, value === undefined ? "" : String(value))]; }

function stepBox(job, step, i) {
  const start = STEP_START[step], end = i + 1 < STEPS.length ? STEP_START[STEPS[i + 1]] : 100;
  const current = STEPS.indexOf(job.current_step);
  const done = job.status === "COMPLETED" || (current > i);
  const share = done ? 100 : current === i ? (100 * ((job.progress || 0) - start)) / (end - start) : 0;
  const state = done ? "done" : current === i ? "current" : "";
  return h("div", { class: `step ${state}`, "data-step": step }, step.replace("_", " "), bar(share, done ? "COMPLETED" : ""));
}

function renderMetrics(card, metrics, live) {
  card.textContent = "";
  const round = metrics.live_round !== undefined ? ` at round ${metrics.live_round}` : "";
  card.append(h("h2", {}, live && Object.keys(metrics).length ? `Metrics (live${round}, on the rows being fitted)` : "Metrics"));
  const names = Object.keys(metrics);
  if (!names.length) { card.append(h("p", { class: "muted" }, "none yet")); return; }
  const head = HEADLINE.filter((k) => k in metrics);
  const rest = names.filter((k) => !HEADLINE.includes(k)).sort();
  const rows = (list) => list.map((k) => h("tr", { "data-metric": k }, h("td", {}, k), h("td", { class: "num" }, fmt(metrics[k]))));
  card.append(h("table", {}, h("tbody", {}, rows(head))));
  if (rest.length) card.append(h("details", {}, h("summary", {}, `${rest.length} more`), h("table", {}, h("tbody", {}, rows(rest)))));
}

// --- plots ------------------------------------------------------------------------------------
async function drawPlots(container, job) {
  const pred = await api(`/ai/training/jobs/${job.job_id}/predictions?max_points=${PLOT_POINTS}`);
  let points = pred.points || [];
  const series = [...new Set(points.map((p) => p.series_id).filter(Boolean))];
  const card = (id, title, note) => {
    const body = h("div", { class: "plot", id });
    container.append(h("div", { class: "card" }, h("h2", {}, title), note ? h("p", { class: "muted" }, note) : null, body));
    return body;
  };
  if (series.length > 1) {
    points = points.filter((p) => p.series_id === series[0]);
    container.append(h("p", { class: "notice" }, `${series.length} series; the plots show ${series[0]}.`));
  }
  const at = (p) => Date.parse(p.timestamp);
  const thin = pred.downsampled ? ` (thinned from ${pred.total_points} for the plot: each stretch's lowest and highest value kept)` : "";
  const bounded = pred.validation_rows > pred.total_points ? ` The newest ${pred.total_points} of ${pred.validation_rows} validation rows were kept.` : "";
  const kept = h("p", { class: "muted", id: "points-note", "data-total": pred.total_points, "data-shown": points.length },
    `Validation window: ${points.length} points${thin}.${bounded} Model version ${pred.model_version}.`);
  container.append(kept);
  const end = Math.max(...points.map(at));
  const range = h("div", { class: "filters", id: "range" }, h("span", { class: "muted" }, "Show"));
  container.append(range);
  const forecast = pred.model_type === "FORECAST";
  const main = forecast ? card("plot-forecast", "Forecast vs actual on the validation window") : card("plot-signal", "Signal with flagged points");
  const second = forecast ? card("plot-residuals", "Residuals over time (actual \u2212 forecast)") : card("plot-score", "Anomaly score and threshold");
  const draw = (days) => {
    const shown = points.filter((p) => at(p) > end - days * 86400e3);
    for (const b of range.querySelectorAll("button")) b.classList.toggle("primary", Number(b.dataset.days) === days);
    (forecast ? drawForecast : drawAnomaly)(main, second, shown, pred, job, at);
  };
  for (const [label, days] of [["whole window", Infinity], ["last 30 days", 30], ["last 7 days", 7]]) {
    range.append(h("button", { "data-days": days, onclick: () => draw(days) }, label));
  }
  draw(Infinity);
  const version = await api(`/ai/training/models/${pred.model_id}`);
  const importance = Object.entries(version.feature_importance || {});
  if (importance.length) {
    Plot.bars(card("plot-importance", "Feature importance (share of gain)"), importance, { label: "importance", percent: true });
  }
}

function drawForecast(main, second, points, pred, job, at) {
  const baseline = `seasonal-naive baseline (${pred.baseline || "-"})`;
  const levels = [...new Set(points.flatMap((p) => Object.keys(p.quantiles || {})))].sort((a, b) => a - b);
  const bands = levels.length >= 2 ? [levels[0], levels[levels.length - 1]] : [];
  Plot.line(main, [
    ...bands.map((q) => ({ name: `q${q}`, color: "#93c5fd", dash: "3 3", width: 1, points: points.map((p) => [at(p), (p.quantiles || {})[q] ?? null]) })),
    { name: "baseline", color: "#f79009", dash: "4 3", width: 1, points: points.map((p) => [at(p), p.baseline ?? null]) },
    { name: "actual", color: "#101828", width: 1.8, points: points.map((p) => [at(p), p.actual ?? null]) },
    { name: "forecast", color: "#2563eb", width: 1.2, points: points.map((p) => [at(p), p.predicted ?? null]) },
  ], { yLabel: job.config.target });
  Plot.legend(main, [["actual", "#101828"], ["forecast", "#2563eb"], [baseline, "#f79009"],
    ...(bands.length ? [[`interval q${bands[0]}–q${bands[1]}`, "#93c5fd"]] : [])]);
  const residual = (p) => (p.actual !== undefined && p.predicted !== undefined ? p.actual - p.predicted : null);
  Plot.line(second, [{ name: "residual", color: "#7a5af8", points: points.map((p) => [at(p), residual(p)]) }],
    { yLabel: "residual", hline: { value: 0, name: "zero", color: "#98a2b3" } });
}

function drawAnomaly(main, second, points, pred, job, at) {
  const flagged = points.filter((p) => p.flagged);
  const labelled = points.filter((p) => p.label === true);
  const lines = [{ name: "signal", color: "#344054", points: points.map((p) => [at(p), p.actual ?? null]) },
    { name: "flagged", color: "#d92d20", dots: true, points: flagged.map((p) => [at(p), p.actual ?? null]) }];
  if (labelled.length) lines.push({ name: "labelled", color: "#12b76a", dots: true, radius: 2.5, points: labelled.map((p) => [at(p), p.actual ?? null]) });
  Plot.line(main, lines, { yLabel: job.config.target });
  Plot.legend(main, [["signal", "#344054"], [`flagged (score \u2265 threshold): ${flagged.length}`, "#d92d20"],
    ...(labelled.length ? [[`labelled anomaly: ${labelled.length}`, "#12b76a"]] : [])]);
  Plot.line(second, [{ name: "score", color: "#7a5af8", points: points.map((p) => [at(p), p.score ?? null]) }],
    { yLabel: "score", hline: { value: pred.threshold, name: "threshold", color: "#d92d20" } });
  Plot.legend(second, [["score", "#7a5af8"], [`threshold ${pred.threshold === undefined ? "" : fmt(pred.threshold)}`, "#d92d20"]]);
}

// --- the model registry -----------------------------------------------------------------------
function modelsPage(view) {
  view.append(h("h1", {}, "Models"));
  const body = h("tbody");
  const compareButton = h("button", { class: "primary", id: "compare", disabled: true }, "Compare two versions");
  const compareCard = h("div", { id: "comparison" });
  // No tenant typed: the API key's own tenant (an admin key: every tenant's versions).
  const scope = session.tenant ? `tenant ${session.tenant}` : "the tenant of your API key";
  view.append(h("div", { class: "filters" }, h("span", { class: "muted" }, scope), compareButton),
    h("div", { class: "card" }, h("table", { id: "models" }, h("thead", {}, h("tr", {},
      ["", "version", "type", "algorithm", "aliases", "mae", "rmse", "mape", "skill", "f1", "created", "job", "kept"]
        .map((c) => h("th", { class: ["mae", "rmse", "mape", "skill", "f1"].includes(c) ? "num" : "" }, c)))), body)), compareCard);
  const aliasCard = h("div", { class: "card", id: "aliases" });
  const forecastCard = h("div", { class: "card", id: "production-forecast" });
  view.append(aliasCard, forecastCard);
  const chosen = new Map();
  let versions = [];
  compareButton.addEventListener("click", () => compare(compareCard, ...[...chosen.values()]));
  const query = session.tenant ? `?tenant_id=${encodeURIComponent(session.tenant)}` : "";
  Promise.all([api(`/ai/training/models${query}`), api(`/ai/training/aliases${query}`).catch(() => ({ aliases: [] }))]).then(([data, named]) => {
    versions = data.versions || [];
    const aliases = named.aliases || [];
    aliasControls(aliasCard, versions, aliases);
    const production = aliases.find((a) => a.alias === "production" && a.model_type === "FORECAST") || aliases.find((a) => a.model_type === "FORECAST");
    if (production) drawProductionForecast(forecastCard, production); else forecastCard.remove();
    if (!versions.length) body.append(h("tr", {}, h("td", { colspan: 13, class: "muted" }, "No model versions yet.")));
    for (const v of versions) {
      const m = v.metrics || {};
      const box = h("input", { type: "checkbox", "data-model": v.model_id, onchange: (e) => {
        if (e.target.checked) chosen.set(v.model_id, v); else chosen.delete(v.model_id);
        compareButton.disabled = chosen.size !== 2;
      } });
      body.append(h("tr", { "data-version": v.version },
        h("td", {}, box), h("td", {}, `v${v.version}`), h("td", {}, v.model_type.toLowerCase()), h("td", {}, v.algorithm),
        h("td", { class: "aliases" }, (v.aliases || []).map((a) => h("span", { class: "chip", "data-alias": a }, a))),
        ...["mae", "rmse", "mape", "skill", "f1"].map((k) => h("td", { class: "num" }, k in m ? fmt(m[k]) : "")),
        h("td", { class: "muted" }, when(v.created_at)),
        h("td", {}, h("a", { href: `#/jobs/${v.job_id}`, class: "mono" }, short(v.job_id))), h("td", {}, v.keep ? "kept" : "")));
    }
  }).catch((err) => {
    // Authentication off and no tenant typed: the server cannot tell whose versions to list.
    if (err instanceof ApiError && err.body && err.body.details && err.body.details.field === "tenant_id") {
      body.append(h("tr", {}, h("td", { colspan: 13, class: "muted" }, "Enter a tenant at the top to see its model versions.")));
    } else showError(err);
  });
}

// Aliases: each with its version and its last move; point one at a version (after a confirmation).
function aliasControls(card, versions, aliases) {
  card.textContent = "";
  card.append(h("h2", {}, "Aliases"));
  const rows = aliases.map((a) => {
    const last = (a.moves || [])[0] || {};
    return h("tr", { "data-alias": a.alias }, h("td", {}, a.alias), h("td", {}, a.model_type.toLowerCase()), h("td", {}, `v${a.model_version}`),
      h("td", { class: "muted" }, `${when(last.moved_at)} by ${last.moved_by || "?"}${last.reason ? `: ${last.reason}` : ""}`));
  });
  card.append(aliases.length ? h("table", {}, h("tbody", {}, rows)) : h("p", { class: "muted" }, "No aliases yet."));
  if (!versions.length) return;
  const name = h("input", { id: "alias-name", value: "production", size: 14, "aria-label": "alias" });
  const pick = h("select", { id: "alias-version", "aria-label": "version" },
    versions.filter((v) => !v.deleted_at).map((v) => h("option", { value: v.model_id }, `${v.model_type.toLowerCase()} v${v.version} (${v.algorithm})`)));
  const move = async () => {
    showError(null);
    const target = versions.find((v) => v.model_id === pick.value);
    const alias = name.value.trim();
    const now = aliases.find((a) => a.alias === alias && a.model_type === target.model_type);
    const question = now ? `Move alias ${alias} (${target.model_type.toLowerCase()}) from v${now.model_version} to v${target.version}?`
      : `Make alias ${alias} (${target.model_type.toLowerCase()}) point at v${target.version}?`;
    if (!window.confirm(question)) return;
    try {
      await api(`/ai/training/models/${target.model_id}/aliases/${encodeURIComponent(alias)}`, { method: "PUT", body: { reason: "moved on the web page" } });
      route();
    } catch (err) { showError(err); }
  };
  card.append(h("div", { class: "filters", style: "margin-top:10px" }, h("span", { class: "muted" }, "Point alias"), name,
    h("span", { class: "muted" }, "at"), pick, h("button", { class: "primary", id: "alias-move", onclick: move }, "Move")));
}

// The alias's forecast for its horizon after the last actuals, with the week before it.
async function drawProductionForecast(card, alias) {
  card.append(h("h2", {}, `Forecast of ${alias.alias} (v${alias.model_version}): the next hours after the last actuals`));
  const plot = h("div", { class: "plot", id: "plot-production" });
  card.append(plot);
  try {
    const body = { model_type: "forecast", alias: alias.alias, history_hours: 168 };
    if (session.tenant) body.tenant_id = session.tenant;
    const got = await api("/ai/training/models:forecast", { method: "POST", body });
    const first = (got.points[0] || {}).series_id;
    const mine = (p) => p.series_id === first;
    const points = got.points.filter(mine), history = (got.history || []).filter(mine);
    const at = (p) => Date.parse(p.timestamp);
    const lines = [{ name: "actual", color: "#101828", width: 1.6, points: history.map((p) => [at(p), p.actual]) },
      { name: "forecast", color: "#2563eb", width: 1.8, dots: points.length < 4, radius: 4, points: points.map((p) => [at(p), p.forecast]) }];
    const quantiles = [...new Set(points.flatMap((p) => Object.keys(p.quantiles || {})))].sort();
    for (const q of quantiles) lines.push({ name: `q${q}`, color: "#93c5fd", dash: "4 3", width: 1, points: points.map((p) => [at(p), (p.quantiles || {})[q] ?? null]) });
    Plot.line(plot, lines, { yLabel: "forecast" });
    Plot.legend(plot, [["actual (the week before)", "#101828"], [`forecast from ${when(got.origin)}`, "#2563eb"],
      ...(quantiles.length ? [[`quantiles ${quantiles.join(", ")}`, "#93c5fd"]] : [])]);
    card.append(h("p", { class: "muted", id: "forecast-note", "data-points": points.length },
      `${points.length} ${points.length === 1 ? "hour" : "hours"} ahead${first ? ` of series ${first}` : ""}, version ${got.model_version}.`));
  } catch (err) {
    card.append(h("p", { class: "error", id: "forecast-error" }, err.message));
  }
}

function compare(card, a, b) {
  if (!a || !b) return;
  if (a.version > b.version) [a, b] = [b, a];
  card.textContent = "";
  const names = [...new Set([...Object.keys(a.metrics || {}), ...Object.keys(b.metrics || {})])]
    .sort((x, y) => (HEADLINE.indexOf(x) + 1 || 99) - (HEADLINE.indexOf(y) + 1 || 99) || x.localeCompare(y));
  const rows = names.map((k) => {
    const va = (a.metrics || {})[k], vb = (b.metrics || {})[k];
    let cls = "", delta = "";
    if (typeof va === "number" && typeof vb === "number") {
      delta = fmt(vb - va);
      if (vb !== va && (HEADLINE.includes(k) && k !== "threshold" && k !== "training_duration_seconds" && k !== "validation_rows" && k !== "anomaly_rate")) {
        cls = (vb > va) === HIGHER_IS_BETTER.has(k) ? "better" : "worse";
      }
    }
    return h("tr", { "data-metric": k }, h("td", {}, k), h("td", { class: "num" }, va === undefined ? "" : fmt(va)),
      h("td", { class: "num" }, vb === undefined ? "" : fmt(vb)), h("td", { class: `num ${cls}` }, delta));
  });
  const diff = [];
  const ca = a.config || {}, cb = b.config || {};
  for (const key of new Set([...Object.keys(ca), ...Object.keys(cb)])) {
    const x = JSON.stringify(ca[key]), y = JSON.stringify(cb[key]);
    if (x !== y) diff.push(h("tr", {}, h("td", {}, key), h("td", { class: "mono" }, x ?? ""), h("td", { class: "mono" }, y ?? "")));
  }
  card.append(h("div", { class: "card" }, h("h2", {}, `v${a.version} (${a.algorithm}) vs v${b.version} (${b.algorithm})`),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "metric"), h("th", { class: "num" }, `v${a.version}`),
      h("th", { class: "num" }, `v${b.version}`), h("th", { class: "num" }, `v${b.version} \u2212 v${a.version}`))), h("tbody", {}, rows)),
    h("h2", { style: "margin-top:14px" }, "Configuration differences"),
    diff.length ? h("table", {}, h("tbody", {}, diff)) : h("p", { class: "muted" }, "The same configuration.")));
}

// --- a new job --------------------------------------------------------------------------------
function newJobPage(view) {
  const example = { ...EXAMPLE, tenant_id: session.tenant || EXAMPLE.tenant_id };
  const text = h("textarea", { id: "job-body", spellcheck: "false" }, JSON.stringify(example, null, 2));
  const result = h("div", { id: "validation" });
  const parse = () => {
    try { return JSON.parse(text.value); } catch (err) { throw new Error(`The body is not valid JSON: ${err.message}`); }
  };
  const validate = async () => {
    showError(null);
    result.textContent = "";
    try {
      const body = parse();
      const answer = await api("/ai/training/validate", { method: "POST", body: { config: body.config || body } });
      result.append(answer.valid ? h("p", { class: "notice" }, "The configuration is valid.")
        : h("div", { class: "error" }, (answer.violations || []).map((v) => `\u2022 ${v.field}: ${v.description}`).join("\n")));
    } catch (err) { showError(err); }
  };
  const submit = async () => {
    showError(null);
    try {
      const made = await api("/ai/training/jobs", { method: "POST", body: parse() });
      if (made.job_id) { location.hash = `#/jobs/${made.job_id}`; return; }
      result.textContent = "";  // a body with "schedule" made a schedule
      result.append(h("p", { class: "notice" }, `Schedule ${made.schedule_id} created; it fires next at ${when(made.next_fire_at)}.`));
    } catch (err) { showError(err); }
  };
  view.append(h("h1", {}, "New training job"),
    h("p", { class: "muted" }, "The body of POST /ai/training/jobs, as in the guide. Add \"schedule\" to create a schedule instead."),
    h("div", { class: "card" }, text, h("div", { class: "filters", style: "margin-top:10px" },
      h("button", { id: "validate", onclick: validate }, "Validate"),
      h("button", { class: "primary", id: "submit", onclick: submit }, "Create job")), result));
}

setupHeader();
window.addEventListener("hashchange", route);
route();
