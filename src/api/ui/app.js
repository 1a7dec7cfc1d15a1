// Hopper's dashboard: every number comes from the JSON API, called with the token
// of the client who logged in here (kept in sessionStorage, so it ends with the
// tab). Everything from the server goes into the page as text, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const $ = (id) => document.getElementById(id);
let selectedQueue = null;
let selectedStream = null;
let timer = null;
let lastScrape = null; // {at, pushed: Map, acked: Map} of the previous /metrics
let rates = new Map(); // queue -> {pushed, acked} per second
let refreshError = null; // what the last refresh showed, cleared by the next good one

function token() {
  return sessionStorage.getItem("hopper.token");
}

/** A failed call: the API's error string (a JSON string body) as the message. */
class ApiFailure extends Error {}

/** Calls the API; answers the parsed JSON body, or throws an ApiFailure. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    // Not JSON (e.g. /metrics): kept as text.
  }
  if (response.status === 401 && path !== "/api/v1/auth/login") {
    logout(typeof data === "string" ? data : "Unauthorized");
    throw new ApiFailure(String(data));
  }
  if (!response.ok) {
    throw new ApiFailure(typeof data === "string" ? data : `${response.status} ${response.statusText}`);
  }
  return data;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

/** Runs an action, showing what went wrong instead of throwing. */
async function guarded(action) {
  try {
    await action();
  } catch (error) {
    if (token() || !(error instanceof ApiFailure)) showError(error.message);
  }
}

// --- Logging in and out ---

function showLogin() {
  clearInterval(timer);
  timer = null;
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
  $("username").focus();
}

function logout(message) {
  sessionStorage.removeItem("hopper.token");
  sessionStorage.removeItem("hopper.user");
  selectedQueue = null;
  selectedStream = null;
  lastScrape = null;
  rates = new Map();
  // Nothing the last client saw stays on the page for the next one.
  for (const id of ["queues", "dead", "streams", "consumers"]) $(id).tBodies[0].replaceChildren();
  for (const id of ["queue-details", "task"]) $(id).replaceChildren();
  $("queue").hidden = true;
  $("stream").hidden = true;
  $("task-id").value = "";
  showError(message || "");
  showLogin();
}

async function login(event) {
  event.preventDefault();
  const username = $("username").value;
  try {
    const answer = await api("POST", "/api/v1/auth/login", {
      username,
      password: $("password").value,
    });
    sessionStorage.setItem("hopper.token", answer.token);
    sessionStorage.setItem("hopper.user", username);
    $("password").value = "";
    showError("");
    start();
  } catch (error) {
    showError(error.message);
  }
}

function start() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  $("whoami").textContent = `as ${sessionStorage.getItem("hopper.user") || "?"}`;
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

// --- Building the page, as text only ---

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.append(c);
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  return tr;
}

function fill(tbody, rows, empty) {
  if (!rows.length) {
    const td = cell(empty);
    td.colSpan = tbody.parentElement.querySelectorAll("th").length;
    td.className = "empty";
    rows = [row([td])];
  }
  tbody.replaceChildren(...rows);
}

function details(dl, pairs) {
  const children = [];
  for (const [name, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = typeof value === "object" && value !== null ? JSON.stringify(value) : String(value ?? "");
    dd.dataset.key = name;
    children.push(dt, dd);
  }
  dl.replaceChildren(...children);
}

function rate(value) {
  return value === undefined ? "" : value.toFixed(1);
}

// --- Refreshing ---

async function refresh() {
  if (!token()) return;
  try {
    await Promise.all([scrapeRates(), refreshQueues(), refreshStreams(), refreshQueue()]);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (refreshError && $("error").textContent === refreshError) showError("");
    refreshError = null;
  } catch (error) {
    if (!token()) return;
    refreshError = error.message;
    showError(error.message);
  }
}

/** Push and ack rates from two successive /metrics scrapes; none if refused. */
async function scrapeRates() {
  let text;
  try {
    text = await api("GET", "/metrics");
  } catch (_) {
    return;
  }
  if (typeof text !== "string") return;
  const now = { at: Date.now(), pushed: new Map(), acked: new Map() };
  const line = /^hopper_queue_(pushed|acked)_total\{queue="((?:[^"\\]|\\.)*)"\} ([0-9.e+]+)$/;
  for (const l of text.split("\n")) {
    const m = line.exec(l);
    if (m) now[m[1]].set(m[2], Number(m[3]));
  }
  if (lastScrape) {
    const seconds = (now.at - lastScrape.at) / 1000;
    const next = new Map();
    for (const [queue, pushed] of now.pushed) {
      const was = (kind, value) => Math.max(0, (value - (lastScrape[kind].get(queue) ?? value)) / seconds);
      next.set(queue, { pushed: was("pushed", pushed), acked: was("acked", now.acked.get(queue) ?? 0) });
    }
    rates = next;
  }
  lastScrape = now;
}

async function refreshQueues() {
  const { queues } = await api("GET", "/api/v1/queues");
  if (!token()) return; // logged out meanwhile
  const rows = queues.map((q) => {
    const r = rates.get(q.name) || {};
    const tr = row(
      [
        cell(q.name, "name"),
        cell(q.ready, "n ready"),
        cell(q.leased, "n leased"),
        cell(q.delayed, "n delayed"),
        cell(q.dead, q.dead ? "n dead has-dead" : "n dead"),
        cell(rate(r.pushed), "n pushed"),
        cell(rate(r.acked), "n acked"),
      ],
      { "data-queue": q.name },
    );
    tr.classList.add("link");
    if (q.name === selectedQueue) tr.classList.add("selected");
    tr.addEventListener("click", () => selectQueue(q.name));
    return tr;
  });
  fill($("queues").tBodies[0], rows, "No queues (or none this client holds a grant on)");
}

function selectQueue(name) {
  selectedQueue = name;
  showError("");
  for (const tr of $("queues").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.queue === name);
  }
  guarded(refreshQueue);
}

async function refreshQueue() {
  const name = selectedQueue;
  $("queue").hidden = !name;
  if (!name) return;
  $("queue-name").textContent = name;
  const path = `/api/v1/queues/${encodeURIComponent(name)}`;
  const q = await api("GET", path);
  if (name !== selectedQueue) return;
  const pairs = [
    ["ready", q.ready],
    ["leased", q.leased],
    ["delayed", q.delayed],
    ["dead", q.dead],
  ];
  for (const [status, count] of Object.entries(q.tasks || {})) pairs.push([`tasks ${status}`, count]);
  for (const [setting, value] of Object.entries(q.settings || {})) {
    if (setting !== "delivery") pairs.push([setting, value ?? "none"]);
  }
  if (q.delivery) {
    pairs.push(["delivery in flight", q.delivery.in_flight]);
    pairs.push(["delivered", q.delivery.delivered]);
    pairs.push(["failed attempts", q.delivery.failed_attempts]);
    if (q.delivery.last_error) {
      pairs.push(["last error", `${q.delivery.last_error.at}: ${q.delivery.last_error.error}`]);
    }
    for (const [host, state] of Object.entries(q.delivery.breakers || {})) pairs.push([`breaker ${host}`, state]);
  }
  details($("queue-details"), pairs);
  let dead;
  try {
    dead = await api("GET", `${path}/dead`);
  } catch (error) {
    fill($("dead").tBodies[0], [], error.message);
    return;
  }
  const rows = dead.messages.map((m) => {
    const body = document.createElement("pre");
    body.textContent = JSON.stringify(m.body);
    const td = cell("");
    td.append(body);
    return row([cell(m.id, "n"), cell(m.attempts, "n"), cell(m.enqueued_at), cell(m.last_error), td]);
  });
  fill($("dead").tBodies[0], rows, "No dead letters");
}

async function queueAction(action, question) {
  const name = selectedQueue;
  if (!name || !confirm(question.replace("%", name))) return;
  showError("");
  await guarded(async () => {
    await api("POST", `/api/v1/queues/${encodeURIComponent(name)}/${action}`);
    await Promise.all([refreshQueues(), refreshQueue()]);
  });
}

async function refreshStreams() {
  const { streams } = await api("GET", "/api/v1/streams");
  if (!token()) return;
  const rows = streams.map((s) => {
    const tr = row(
      [cell(s.name, "name"), cell(s.owner, "owner"), cell(s.length, "n length"), cell(s.first_event_id), cell(s.last_event_id)],
      { "data-stream": s.name },
    );
    tr.classList.add("link");
    if (s.name === selectedStream) tr.classList.add("selected");
    tr.addEventListener("click", () => {
      selectedStream = s.name;
      guarded(refreshStream);
    });
    return tr;
  });
  fill($("streams").tBodies[0], rows, "No streams (or none this client holds a grant on)");
  await refreshStream();
}

async function refreshStream() {
  const name = selectedStream;
  $("stream").hidden = !name;
  if (!name) return;
  $("stream-name").textContent = name;
  const s = await api("GET", `/api/v1/streams/${encodeURIComponent(name)}`);
  if (name !== selectedStream) return;
  const rows = (s.consumers || []).map((c) =>
    row([cell(c.consumer), cell(c.event_name), cell(c.offset), cell(c.lag, "n lag")], { "data-consumer": c.consumer }),
  );
  fill($("consumers").tBodies[0], rows, "No consumer has acknowledged an event");
}

async function lookUpTask(event) {
  event.preventDefault();
  const id = $("task-id").value.trim();
  $("task").replaceChildren();
  showError("");
  await guarded(async () => {
    const t = await api("GET", `/api/v1/tasks/${encodeURIComponent(id)}`);
    details($("task"), [
      ["id", t.id],
      ["queue", t.queue],
      ["status", t.status],
      ["attempts", t.attempts],
      ["created", t.created_at],
      ["finished", t.finished_at ?? ""],
      ["result", t.result ?? ""],
      ["error", t.error ?? ""],
    ]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => logout(""));
  $("redrive").addEventListener("click", () => queueAction("dead/redrive", "Make every dead letter of queue % ready again?"));
  $("purge").addEventListener("click", () => queueAction("purge", "Delete every message of queue %, dead letters included?"));
  $("close-queue").addEventListener("click", () => {
    selectedQueue = null;
    selectQueue(null);
  });
  $("task-form").addEventListener("submit", lookUpTask);
  if (token()) start();
  else showLogin();
});
