// The mlqueue web page: list models, upload a CSV with progress, poll the job, download the result.
// Plain JS, no build step; it uses the same public API as every other client.
"use strict";

const POLL_MS = 400;
const $ = (id) => document.getElementById(id);

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (response.status === 401) $("key-section").hidden = false;
  return response;
}

// The `detail` of an RFC 9457 problem body (it names line and column for a bad CSV).
function problemDetail(status, text) {
  try {
    const body = JSON.parse(text);
    return body.detail || body.title || `HTTP ${status}`;
  } catch {
    return `HTTP ${status}: ${text.slice(0, 200)}`;
  }
}

function showError(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function metric(model, name) {
  const value = model.metrics ? model.metrics[name] : undefined;
  return typeof value === "number" ? value.toFixed(3) : "";
}

async function loadModels() {
  const response = await api("/v1/models");
  if (!response.ok) {
    showError($("models-error"), problemDetail(response.status, await response.text()));
    return;
  }
  showError($("models-error"), "");
  const body = await response.json();
  const rows = body.models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.model = `${m.name}:${m.version}`;
    const trained = (m.created_at || "").slice(0, 10);
    for (const text of [m.name, m.version, m.n_features, metric(m, "r2"), metric(m, "mae"), trained]) {
      tr.append(cell(String(text)));
    }
    return tr;
  });
  $("models").tBodies[0].replaceChildren(...rows);
  const select = $("model");
  const options = [new Option(`default (${body.default})`, "default")];
  for (const m of body.models) options.push(new Option(`${m.name}:${m.version}`, `${m.name}:${m.version}`));
  select.replaceChildren(...options);
}

function setBar(name, percent) {
  const value = Math.max(0, Math.min(100, percent));
  $(`${name}-bar`).value = value;
  $(`${name}-pct`).textContent = `${value.toFixed(value < 100 ? 1 : 0)} %`;
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

async function poll(jobId) {
  for (;;) {
    const response = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
    if (!response.ok) throw new Error(problemDetail(response.status, await response.text()));
    const job = await response.json();
    const p = job.progress;
    if (p) {
      $("rows").textContent = `${p.rows_done} of ${p.rows_total ?? "?"} rows`;
      if (typeof p.percent === "number") setBar("score", p.percent);
    }
    if (job.status === "succeeded") {
      setBar("score", 100);
      return;
    }
    if (job.status === "failed" || job.status === "cancelled") {
      throw new Error(job.error ? job.error.message : `the job was ${job.status}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function showDownload(jobId) {
  const link = $("download");
  link.href = `/v1/jobs/${encodeURIComponent(jobId)}/result`;
  link.hidden = false;
}

// A plain link cannot send the API key: with a key, fetch the file and save it from memory.
async function download(event) {
  if (!apiKey()) return;
  event.preventDefault();
  const response = await api(event.currentTarget.href);
  if (!response.ok) {
    showError($("error"), problemDetail(response.status, await response.text()));
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const a = Object.assign(document.createElement("a"), { href: url, download: "predictions.csv" });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function score(event) {
  event.preventDefault();
  const formEl = event.currentTarget;
  // Options first: the gateway reads the upload as a stream and needs them before the file.
  const form = new FormData();
  form.append("model", $("model").value);
  if ($("id-column").value.trim()) form.append("id_column", $("id-column").value.trim());
  form.append("file", $("file").files[0]);
  showError($("error"), "");
  $("job").hidden = false;
  $("download").hidden = true;
  $("job-id").textContent = "";
  $("rows").textContent = "";
  setBar("upload", 0);
  setBar("score", 0);
  setStage("Uploading");
  formEl.querySelector("button").disabled = true;
  try {
    const xhr = await upload(form);
    if (xhr.status === 401) $("key-section").hidden = false;
    if (xhr.status !== 202) throw new Error(problemDetail(xhr.status, xhr.responseText));
    const jobId = JSON.parse(xhr.responseText).job_id;
    setBar("upload", 100);
    $("job-id").textContent = `job ${jobId}`;
    setStage("Scoring");
    await poll(jobId);
    showDownload(jobId);
    setStage("Done");
  } catch (error) {
    setStage("Failed");
    showError($("error"), `Error: ${error.message}`);
  } finally {
    formEl.querySelector("button").disabled = false;
  }
}

function init() {
  const saved = sessionStorage.getItem("mlqueue-api-key");
  if (saved) {
    $("api-key").value = saved;
    $("key-section").hidden = false;
  }
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("mlqueue-api-key", apiKey());
    loadModels();
  });
  $("score-form").addEventListener("submit", score);
  $("download").addEventListener("click", download);
  loadModels();
}

document.addEventListener("DOMContentLoaded", init);
