// The mlqueue web page: system status, models, CSV upload with progress, live job status, the
// caller's recent jobs. Plain JS, no build step; it uses the same public API as every other client
// and finds out which optional routes the gateway has (job listing, live events) by asking them.
"use strict";

const POLL_MS = 400;
const REFRESH_MS = 3000;
const FINISHED = ["succeeded", "failed", "cancelled"];
const $ = (id) => document.getElementById(id);
// What this gateway offers (null: not asked yet), and the jobs this tab submitted.
const gateway = { listing: null, events: null };
const mine = new Map();

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, headers = {}) {
  const response = await fetch(path, { headers: { ...authHeaders(), ...headers } });
  if (response.status === 401) $("key-section").hidden = false;
  return response;
}

// The RFC 9457 problem body (its `detail` names line and column for a bad CSV).
function problem(status, text) {
  try {
    const body = JSON.parse(text);
    return { detail: body.detail || body.title || `HTTP ${status}`, body };
  } catch {
    return { detail: `HTTP ${status}: ${text.slice(0, 200)}`, body: {} };
  }
}

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

function metric(model, name) {
  const value = model.metrics ? model.metrics[name] : undefined;
  return typeof value === "number" ? value.toFixed(3) : "";
}

// --- system and models ---------------------------------------------------------------------

async function loadSystem() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    const checks = body.checks || {};
    $("ready").textContent = body.status || `HTTP ${response.status}`;
    $("queue-depth").textContent = String(checks.queue_depth ?? "?");
    $("workers").textContent = String(checks.workers ?? "?");
  } catch {
    $("ready").textContent = "unreachable";
  }
}

// Aliases: a model's name means its newest version (listed first), "default" the default model.
function aliases(models, defaultName) {
  const seen = new Set();
  const found = new Map();
  for (const m of models) {
    if (seen.has(m.name)) continue;
    seen.add(m.name);
    found.set(`${m.name}:${m.version}`, m.name === defaultName ? [m.name, "default"] : [m.name]);
  }
  return found;
}

async function loadModels() {
  const response = await api("/v1/models");
  if (!response.ok) {
    showError($("models-error"), problem(response.status, await response.text()).detail);
    return;
  }
  showError($("models-error"), "");
  const body = await response.json();
  const named = aliases(body.models, body.default);
  const rows = body.models.map((m) => {
    const tr = document.createElement("tr");
    const id = `${m.name}:${m.version}`;
    tr.dataset.model = id;
    const cells = [m.name, m.version, (named.get(id) || []).join(", "), m.n_features,
      metric(m, "r2"), metric(m, "mae"), (m.created_at || "").slice(0, 10)];
    for (const text of cells) tr.append(cell(String(text)));
    return tr;
  });
  $("models").tBodies[0].replaceChildren(...rows);
  const options = [new Option(`default (${body.default})`, "default")];
  for (const m of body.models) options.push(new Option(`${m.name}:${m.version}`, `${m.name}:${m.version}`));
  $("model").replaceChildren(...options);
  loadJobs();
}

// --- recent jobs ---------------------------------------------------------------------------

function percent(job) {
  if (job.status === "succeeded") return 100;
  const p = job.progress;
  return p && typeof p.percent === "number" ? p.percent : 0;
}

function resultLink(job) {
  if (job.status !== "succeeded") return "";
  const a = document.createElement("a");
  a.href = `/v1/jobs/${encodeURIComponent(job.job_id)}/result`;
  a.textContent = job.kind === "csv" ? "CSV" : "JSON";
  a.className = "result-link";
  a.download = `${job.job_id}.${job.kind === "csv" ? "csv" : "json"}`;
  return a;
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.job_id;
  tr.dataset.status = job.status;
  const bar = Object.assign(document.createElement("progress"), { max: 100, value: percent(job) });
  bar.setAttribute("aria-label", `job ${job.job_id} progress`);
  const progress = document.createElement("span");
  progress.append(bar, ` ${percent(job).toFixed(0)} %`);
  const status = document.createElement("span");
  status.className = `status-${job.status}`;
  status.textContent = job.error ? `${job.status}: ${job.error.message}` : job.status;
  const created = job.created_at ? new Date(job.created_at).toLocaleTimeString() : "";
  const model = job.version ? `${job.model}:${job.version}` : job.model;
  const id = Object.assign(document.createElement("code"), { textContent: job.job_id.slice(0, 8), title: job.job_id });
  for (const content of [id, job.kind, model, status, progress, created, resultLink(job)]) tr.append(cell(content));
  return tr;
}

function renderJobs(jobs) {
  $("jobs").tBodies[0].replaceChildren(...jobs.map(jobRow));
  $("jobs-empty").hidden = jobs.length > 0;
}

// The gateway's listing of this key's jobs when it has one (GET /v1/jobs); otherwise the jobs
// submitted from this tab, kept in sessionStorage and refreshed one by one.
async function loadJobs() {
  if (gateway.listing !== false) {
    const response = await api("/v1/jobs?limit=20");
    if (response.ok) {
      gateway.listing = true;
      $("jobs-note").hidden = true;
      renderJobs((await response.json()).jobs);
      return;
    }
    if (response.status !== 404 && response.status !== 405) return; // 401: wait for the key
    gateway.listing = false;
    showNote("This gateway does not list jobs (GET /v1/jobs); showing the jobs submitted from this page.");
  }
  await Promise.all([...mine.values()].filter((j) => !FINISHED.includes(j.status)).map(refreshMine));
  renderJobs([...mine.values()].reverse());
}

function showNote(text) {
  $("jobs-note").textContent = text;
  $("jobs-note").hidden = false;
}

async function refreshMine(job) {
  const response = await api(`/v1/jobs/${encodeURIComponent(job.job_id)}`);
  if (response.ok) remember(await response.json());
}

function remember(job) {
  mine.set(job.job_id, job);
  sessionStorage.setItem("mlqueue-jobs", JSON.stringify([...mine.values()]));
}

function showJob(job) {
  if (!gateway.listing) remember(job);
  const row = document.querySelector(`#jobs tr[data-job="${CSS.escape(job.job_id)}"]`);
  if (row) row.replaceWith(jobRow(job));
  else if (!gateway.listing) renderJobs([...mine.values()].reverse());
}

// --- following one job ---------------------------------------------------------------------

// Live events (GET /v1/jobs/{id}/events, read with fetch so the API key can be sent) when the
// gateway has them; else polling. Resolves with the finished job.
async function follow(jobId, onJob) {
  if (gateway.events !== false) {
    const last = await followEvents(jobId, onJob);
    if (last && FINISHED.includes(last.status)) return last;
  }
  for (;;) {
    const response = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (!response.ok) throw new Error(problem(response.status, await response.text()).detail);
    const job = await response.json();
    onJob(job);
    if (FINISHED.includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function followEvents(jobId, onJob) {
  let response;
  try {
    response = await api(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { Accept: "text/event-stream" });
  } catch {
    return null;
  }
  const type = response.headers.get("content-type") || "";
  if (!response.ok || !type.startsWith("text/event-stream")) {
    if (response.status === 404 || response.status === 405) gateway.events = false;
    return null;
  }
  gateway.events = true;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
      if (!data.length || /^event:\s*(?!status)/m.test(frame)) continue;
      last = JSON.parse(data.join("\n"));
      onJob(last);
      if (FINISHED.includes(last.status)) {
        reader.cancel();
        return last;
      }
    }
  }
}

// --- scoring a CSV -------------------------------------------------------------------------

function setBar(name, value) {
  const clamped = Math.max(0, Math.min(100, value));
  $(`${name}-bar`).value = clamped;
  $(`${name}-pct`).textContent = `${clamped.toFixed(clamped < 100 ? 1 : 0)} %`;
}

function setStage(text) {
  $("stage").textContent = text;
  document.body.dataset.stage = text.toLowerCase();
}

function upload(form) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/jobs/csv");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) setBar("upload", (100 * e.loaded) / e.total);
    };
    xhr.onload = () => resolve(xhr);
    xhr.onerror = () => reject(new Error("the upload failed (network error)"));
    xhr.send(form);
  });
}

function showProgress(job) {
  const p = job.progress;
  if (p) {
    $("rows").textContent = `${p.rows_done} of ${p.rows_total ?? "?"} rows`;
    if (typeof p.percent === "number") setBar("score", p.percent);
  }
  if (job.status === "succeeded") setBar("score", 100);
  showJob(job);
}

// Bad lines by line and column: from a refused upload's problem body, or GET /v1/jobs/{id}/errors.
function showLineErrors(errors, heading) {
  const items = errors.filter((e) => e.line).map((e) => {
    const li = document.createElement("li");
    const column = e.column ? `, column ${e.column}${e.name ? ` (${e.name})` : ""}` : "";
    li.textContent = `line ${e.line}${column}: ${e.msg}`;
    return li;
  });
  $("line-errors").replaceChildren(...items);
  $("line-errors-heading").textContent = heading;
  $("line-errors-box").hidden = items.length === 0;
}

async function loadLineErrors(jobId, heading) {
  const response = await api(`/v1/jobs/${encodeURIComponent(jobId)}/errors`);
  if (response.ok) showLineErrors((await response.json()).errors, heading);
}

async function score(event) {
  event.preventDefault();
  const formEl = event.currentTarget;
  // Options first: the gateway reads the upload as a stream and needs them before the file.
  const form = new FormData();
  form.append("model", $("model").value);
  if ($("id-column").value.trim()) form.append("id_column", $("id-column").value.trim());
  form.append("on_error", $("on-error").value);
  form.append("file", $("file").files[0]);
  showError($("error"), "");
  showLineErrors([], "");
  $("job").hidden = false;
  $("download").hidden = true;
  $("job-id").textContent = "";
  $("rows").textContent = "";
  setBar("upload", 0);
  setBar("score", 0);
  setStage("Uploading");
  formEl.querySelector("button").disabled = true;
  let jobId = null;
  try {
    const xhr = await upload(form);
    if (xhr.status === 401) $("key-section").hidden = false;
    if (xhr.status !== 202) {
      const refused = problem(xhr.status, xhr.responseText);
      const listed = refused.body.errors && refused.body.errors.length ? refused.body.errors : [refused.body];
      const msg = refused.detail.replace(/^line \d+(, column \d+( \([^)]*\))?)?: /, "");
      showLineErrors(listed.map((e) => ({ msg, ...e })), "Refused");
      throw new Error(refused.detail);
    }
    const accepted = JSON.parse(xhr.responseText);
    jobId = accepted.job_id;
    setBar("upload", 100);
    $("job-id").textContent = `job ${jobId}`;
    setStage("Scoring");
    showJob({ ...accepted, kind: "csv", progress: null });
    const job = await follow(jobId, showProgress);
    if (job.status !== "succeeded") throw new Error(job.error ? job.error.message : `the job was ${job.status}`);
    if (job.progress && job.progress.rows_skipped) await loadLineErrors(jobId, `Skipped lines (${job.progress.rows_skipped})`);
    showDownload(jobId);
    setStage("Done");
  } catch (error) {
    setStage("Failed");
    showError($("error"), `Error: ${error.message}`);
    if (jobId) await loadLineErrors(jobId, "Bad lines");
  } finally {
    formEl.querySelector("button").disabled = false;
  }
}

function showDownload(jobId) {
  const link = $("download");
  link.href = `/v1/jobs/${encodeURIComponent(jobId)}/result`;
  link.hidden = false;
}

// A plain link cannot send the API key: with a key, fetch the file and save it from memory.
async function download(event) {
  const link = event.target.closest("#download, a.result-link");
  if (!link || !apiKey()) return;
  event.preventDefault();
  const response = await api(link.href);
  if (!response.ok) {
    showError($("error"), problem(response.status, await response.text()).detail);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: link.download || "predictions.csv" });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function init() {
  const saved = sessionStorage.getItem("mlqueue-api-key");
  if (saved) {
    $("api-key").value = saved;
    $("key-section").hidden = false;
  }
  for (const job of JSON.parse(sessionStorage.getItem("mlqueue-jobs") || "[]")) mine.set(job.job_id, job);
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("mlqueue-api-key", apiKey());
    loadModels();
  });
  $("score-form").addEventListener("submit", score);
  document.addEventListener("click", download);
  loadSystem();
  loadModels();
  setInterval(loadSystem, REFRESH_MS);
  setInterval(loadJobs, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", init);
