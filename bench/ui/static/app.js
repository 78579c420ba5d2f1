// The browser station's page: the project's own script, no library. It renders what the server
// publishes (one EventSource stream, numbered updates) and acts through POSTs of JSON. Every
// string it shows comes from the catalogue of the page's language (/i18n/<lang>.json); what the
// engine and the sequences write (titles, step names, prompt texts, reasons) is shown as written.
"use strict";

const S = {
  lang: "en",
  cat: {},
  missing: [],          // catalogue keys the page asked for and the catalogue lacks (tests read it)
  session: { user: null, role: null, allowed: {} },
  library: [],
  selected: null,
  busy: false,
  run: null,
  prompt: null,
  dismissed: null,      // the run id whose result the operator put away
  seq: 0,
  liveLog: new Map(),   // update number -> the values shown with it (the last few hundred)
  series: {},           // signal -> [[t, v], ...] for the plots
  clock: null,
  historyFor: null,
  shownResult: null,   // the run whose verdict the page last brought into view
};
window.station = S;

const $ = (id) => document.getElementById(id);

// -- the catalogue -------------------------------------------------------------------------
function t(key, args) {
  let text = S.cat[key];
  if (text === undefined) {
    if (!S.missing.includes(key)) S.missing.push(key);
    text = key;
  }
  if (args) {
    for (const [k, v] of Object.entries(args)) text = text.split("{" + k + "}").join(String(v ?? ""));
  }
  return text;
}

// A word of the engine's (a verdict, a phase, a device state) in the page's language when the
// catalogue has it; otherwise as the engine wrote it.
function word(prefix, value) {
  const key = prefix + "." + value;
  return key in S.cat ? S.cat[key] : String(value ?? "");
}

function translatePage() {
  document.documentElement.lang = S.lang;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  $("lang").value = S.lang;
}

async function loadLanguage(lang) {
  const r = await fetch("/i18n/" + encodeURIComponent(lang) + ".json");
  S.cat = await r.json();
  S.lang = lang;
  S.missing = [];
  translatePage();
  renderAll();
}

function pickLanguage() {
  const saved = document.cookie.split("; ").find((c) => c.startsWith("lang="));
  if (saved) return saved.slice(5);
  // No choice made in this browser: the server's pick from Accept-Language, which the browser
  // derives from its own language settings.
  return document.documentElement.lang || "en";
}

// -- talking to the server -----------------------------------------------------------------
async function post(path, data) {
  let r;
  try {
    r = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(data || {}),
    });
  } catch (e) {
    return { ok: false, status: 0, data: { error: "refused.offline", args: {} } };
  }
  let body = {};
  try { body = await r.json(); } catch (e) { body = { error: "refused.internal", args: {} }; }
  return { ok: r.ok, status: r.status, data: body };
}

async function get(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function problemText(data) {
  const args = Object.assign({}, data.args || {});
  if (args.action) args.action = t("action." + args.action);
  let text = t(data.error || "refused.internal", args);
  if (data.detail) text += ": " + data.detail;
  return text;
}

let messageTimer = null;
function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "info";
  m.hidden = false;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => { m.hidden = true; }, 8000);
}

function clearErrors(root) {
  for (const el of root.querySelectorAll("[data-error]")) el.textContent = "";
}

// Field errors next to their fields: the server names the field and gives one line (a catalogue
// key, or the parser's own line for a parameter or a serial).
function showFieldErrors(root, fields) {
  for (const [name, text] of Object.entries(fields || {})) {
    const el = root.querySelector('[data-error="' + CSS.escape(name) + '"]');
    const shown = text in S.cat ? t(text) : text;
    if (el) el.textContent = shown; else say(name + ": " + shown, "error");
  }
}

// -- the session ---------------------------------------------------------------------------
async function loadSession() {
  S.session = await get("/api/session");
  $("station-title").textContent = S.session.station.title;
  $("station-id").textContent = S.session.station.id;
  document.title = t("app.title") + " - " + S.session.station.id;
  renderSession();
}

function can(action) { return !!(S.session.allowed || {})[action]; }

function renderSession() {
  const u = S.session.user;
  $("who-name").textContent = u ? u + " (" + t("role." + S.session.role) + ")" : t("login.watching");
  $("sign-in").hidden = !!u || !S.session.accounts;
  $("sign-out").hidden = !u;
  renderForm();
  renderStatusControls();
  renderRun();
}

function openLogin() {
  clearErrors($("login-form"));
  $("login-password").value = "";
  $("login-dialog").showModal();
  $("login-name").focus();
}

async function submitLogin(ev) {
  ev.preventDefault();
  clearErrors($("login-form"));
  const r = await post("/api/login", { name: $("login-name").value, password: $("login-password").value });
  if (!r.ok) {
    showFieldErrors($("login-form"), r.data.fields || { password: problemText(r.data) });
    return;
  }
  $("login-dialog").close();
  await loadSession();
  say(t("login.welcome", { user: r.data.user }), "info");
}

async function signOut() {
  await post("/api/logout");
  await loadSession();
}

// -- bench status --------------------------------------------------------------------------
async function loadStatus() {
  let st;
  try { st = await get("/api/status"); } catch (e) { return; }
  S.status = st;
  renderStatus();
}

function renderStatus() {
  const st = S.status;
  if (!st) return;
  const il = st.interlock || {};
  $("interlock-state").textContent = il.tripped ? t("interlock.tripped") : t("interlock.armed");
  $("interlock-state").className = il.tripped ? "bad" : "good";
  $("interlock-reason").textContent = il.tripped ? (il.reason || "") : "";
  const badge = $("interlock-badge");
  badge.textContent = il.tripped ? t("interlock.tripped") : t("interlock.armed");
  badge.className = "badge " + (il.tripped ? "bad" : "good");
  const lock = st.lock || {};
  $("lock-state").textContent = lock.held ? t("status.lock_held", { by: lock.by || "?" }) : t("status.lock_free");
  const dev = $("devices").tBodies[0];
  dev.replaceChildren(...(st.devices || []).map((d) => row([d.name, d.driver, d.endpoint, word("device.state", d.state)])));
  const eq = $("equipment").tBodies[0];
  eq.replaceChildren(...(st.equipment || []).map((e) => {
    const tr = row([e.asset_id, e.model, e.due || "-"]);
    tr.className = e.ok ? "" : "bad";
    if (!e.ok && e.text) tr.title = e.text;
    return tr;
  }));
  renderStatusControls();
}

function renderStatusControls() {
  const tripped = !!(S.status && S.status.interlock && S.status.interlock.tripped);
  $("reset-form").hidden = !(tripped && can("reset_interlock"));
}

async function resetInterlock(ev) {
  ev.preventDefault();
  clearErrors($("reset-form"));
  const r = await post("/api/interlock/reset", { reason: $("reset-reason").value });
  if (!r.ok) {
    if (r.data.fields) showFieldErrors($("reset-form"), r.data.fields);
    else say(problemText(r.data), "error");
    return;
  }
  $("reset-reason").value = "";
  say(t("interlock.was_reset"), "info");
  await loadStatus();
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c ?? "";
    tr.appendChild(td);
  }
  return tr;
}

// -- the library and the start form --------------------------------------------------------
async function loadLibrary() {
  const data = await get("/api/library");
  S.library = data.sequences;
  const ul = $("library");
  if (!S.library.length) {
    const li = document.createElement("li");
    li.className = "dim";
    li.dataset.i18n = "library.empty";
    li.textContent = t("library.empty");
    ul.replaceChildren(li);
    return;
  }
  ul.replaceChildren(...S.library.map((e) => {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.sequence = e.id;
    const title = document.createElement("b");
    title.textContent = e.title;
    const meta = document.createElement("span");
    meta.className = "dim";
    meta.textContent = " " + e.id + " v" + e.version + " · " + [e.standard, e.clause].filter(Boolean).join(", ");
    b.append(title, meta);
    if (e.runnable) b.classList.add("not-runnable");
    b.addEventListener("click", () => select(e.id));
    li.appendChild(b);
    return li;
  }));
}

function select(id) {
  S.selected = S.library.find((e) => e.id === id) || null;
  for (const b of $("library").querySelectorAll("button")) b.classList.toggle("selected", b.dataset.sequence === id);
  const form = $("start-form");
  form.hidden = !S.selected;
  if (!S.selected) return;
  const e = S.selected;
  $("seq-title").textContent = e.title + " (" + e.id + " v" + e.version + ")";
  $("seq-basis").textContent = [e.standard, e.clause].filter(Boolean).join(", ");
  $("seq-not-runnable").hidden = !e.runnable;
  $("seq-not-runnable").textContent = e.runnable ? t("library.not_runnable", { why: e.runnable }) : "";
  const fields = $("param-fields");
  fields.replaceChildren(...e.parameters.map((p) => {
    const div = document.createElement("div");
    div.className = "field param";
    const label = document.createElement("label");
    label.htmlFor = "param-" + p.name;
    label.textContent = p.name;
    const input = document.createElement("input");
    input.id = "param-" + p.name;
    input.dataset.param = p.name;
    input.value = p.default;
    input.autocomplete = "off";
    input.spellcheck = false;
    const hint = document.createElement("div");
    hint.className = "hint";
    const lims = [];
    if (p.minimum) lims.push(">= " + p.minimum);
    if (p.maximum) lims.push("<= " + p.maximum);
    hint.textContent = [p.unit ? t("start.unit", { unit: p.unit }) : "", lims.join(", "), p.doc].filter(Boolean).join(" · ");
    const err = document.createElement("div");
    err.className = "error";
    err.dataset.error = p.name;
    input.addEventListener("change", checkForm);
    div.append(label, input, hint, err);
    return div;
  }));
  clearErrors(form);
  $("start-error").textContent = "";
  renderForm();
  $("serial").focus();
}

function renderForm() {
  const e = S.selected;
  const editable = can("change_parameters");
  for (const input of $("param-fields").querySelectorAll("input")) input.readOnly = !editable;
  $("params-note").textContent = editable ? t("start.params_engineer") : t("start.params_operator");
  const startable = !!e && !e.runnable && can("start") && !S.busy;
  $("start").disabled = !startable;
  $("start").title = !can("start") ? t("start.sign_in_first") : S.busy ? t("start.busy") : "";
  $("lab-send").hidden = !(S.labBenches && S.labBenches.length && can("start") && e && !e.runnable);
}

function formData() {
  const params = {};
  for (const input of $("param-fields").querySelectorAll("input")) params[input.dataset.param] = input.value;
  return { sequence: S.selected.id, serial: $("serial").value, params };
}

async function checkForm() {
  if (!S.selected) return;
  const r = await post("/api/check", formData());
  clearErrors($("start-form"));
  if (r.ok) showFieldErrors($("start-form"), r.data.fields);
}

async function startRun(ev) {
  ev.preventDefault();
  if (!S.selected) return;
  clearErrors($("start-form"));
  $("start-error").textContent = "";
  $("start").disabled = true;
  const r = await post("/api/start", formData());
  if (!r.ok) {
    if (r.data.fields) showFieldErrors($("start-form"), r.data.fields);
    else $("start-error").textContent = problemText(r.data);
    renderForm();
    return;
  }
  $("serial").value = "";
}

async function submitToLab() {
  const r = await post("/api/lab/submit", Object.assign(formData(), { bench: $("lab-bench").value }));
  if (!r.ok) {
    if (r.data.fields) showFieldErrors($("start-form"), r.data.fields);
    else $("start-error").textContent = problemText(r.data);
    return;
  }
  say(t("lab.submitted", { job: r.data.job }), "info");
}

async function loadLab() {
  let data;
  try { data = await get("/api/lab"); } catch (e) { return; }
  S.labBenches = data.benches || [];
  $("lab").hidden = !S.labBenches.length;
  $("lab-benches").tBodies[0].replaceChildren(...S.labBenches.map((b) => {
    const tr = row([b.name, word("lab.state", b.state), b.station, b.step ? b.step + " (" + b.steps_done + "/" + b.steps_total + ")" : ""]);
    tr.dataset.bench = b.name;
    return tr;
  }));
  const select = $("lab-bench");
  const chosen = select.value;
  const any = document.createElement("option");
  any.value = "";
  any.textContent = t("lab.any");
  select.replaceChildren(any, ...S.labBenches.filter((b) => b.online).map((b) => {
    const o = document.createElement("option");
    o.value = b.name;
    o.textContent = b.name;
    return o;
  }));
  select.value = chosen;
  if (select.selectedIndex < 0) select.value = "";
  renderForm();
}

// -- the run -------------------------------------------------------------------------------
function hms(s) {
  if (s === null || s === undefined) return "-";
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h + ":" + String(m).padStart(2, "0") + ":" + String(sec).padStart(2, "0");
}

function onRun(data) {
  const before = S.run;
  S.busy = data.busy;
  S.run = data.run;
  if (S.run && (!before || before.run_id !== S.run.run_id)) {
    S.series = {};
    S.clock = null;
    buildValueRows();
  }
  if (!S.busy && $("confirm-dialog").open) $("confirm-dialog").close();  // nothing left to abort
  renderRun();
  renderForm();
}

function buildValueRows() {
  const body = $("values").tBodies[0];
  const plots = $("plots");
  const display = (S.run && S.run.display) || [];
  body.replaceChildren(...display.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.signal = d.name;
    const name = document.createElement("td");
    name.textContent = d.name;
    const value = document.createElement("td");
    value.className = "value";
    value.textContent = "-";
    const lim = document.createElement("td");
    lim.className = "dim";
    lim.textContent = d.limits.join("; ");
    tr.append(name, value, lim);
    return tr;
  }));
  plots.replaceChildren(...display.map((d) => {
    const fig = document.createElement("figure");
    const cap = document.createElement("figcaption");
    cap.textContent = d.name + (d.unit ? " [" + d.unit + "]" : "");
    const c = document.createElement("canvas");
    c.width = 320;
    c.height = 110;
    c.dataset.signal = d.name;
    fig.append(cap, c);
    return fig;
  }));
}

function renderRun() {
  const run = S.run;
  const live = !!run && S.busy;
  const ended = !!run && !S.busy && S.dismissed !== run.run_id && (run.result || run.refused);
  $("run").hidden = !live;
  $("result").hidden = !ended;
  $("setup").hidden = live;
  $("estop").disabled = false;
  if (!run) return;
  $("run-title").textContent = run.sequence.title + " (" + run.sequence.id + ")";
  $("run-owner").textContent = run.owner;
  $("run-phase").textContent = word("phase", run.phase);
  const mine = S.session.user === run.owner || S.session.role === "engineer";
  $("terminate").disabled = !(live && can("stop") && mine);
  $("abort").disabled = !(live && can("stop") && mine);
  const ol = $("steps");
  ol.replaceChildren(...run.steps.map(stepItem));
  followRunning(live);
  if (ended) {
    renderResult(run);
    if (S.shownResult !== run.run_id) { S.shownResult = run.run_id; window.scrollTo(0, 0); }
  }
}

function stepItem(s) {
  const li = document.createElement("li");
  li.className = "step " + s.state.toLowerCase() + (s.phase === "cleanup" ? " cleanup" : "");
  li.dataset.state = s.state;
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = word("step", s.state);
  const name = document.createElement("span");
  name.textContent = (s.phase === "cleanup" ? t("run.cleanup_prefix") + " " : "") + s.name;
  li.append(state, name);
  if (s.message) li.title = s.message;
  return li;
}

// The list scrolls to the running step; the page itself stays where the operator put it.
function followRunning(live) {
  const ol = $("steps");
  const running = ol.querySelector(".running");
  if (running && live) ol.scrollTop = Math.max(0, running.offsetTop - ol.offsetTop - ol.clientHeight / 3);
}

// One step changed (the server sends that step only).
function onStep(d) {
  if (!S.run || S.run.run_id !== d.run_id) return;
  S.run.steps[d.step.i] = d.step;
  S.run.phase = d.phase;
  $("run-phase").textContent = word("phase", d.phase);
  const li = $("steps").children[d.step.i];
  if (li) li.replaceWith(stepItem(d.step));
  followRunning(S.busy);
}

function renderResult(run) {
  const v = $("verdict");
  if (run.refused) {
    v.textContent = t("result.refused");
    v.className = "verdict ERROR";
    delete v.dataset.verdict;
    v.dataset.refused = "1";
    $("verdict-reason").textContent = run.refused;
    $("verdict-estop").hidden = true;
    $("measurements").tBodies[0].replaceChildren();
    $("safe-state").replaceChildren();
    return;
  }
  const r = run.result;
  v.textContent = word("verdict", r.verdict);
  v.dataset.verdict = r.verdict;
  delete v.dataset.refused;
  v.className = "verdict " + r.verdict;
  $("verdict-reason").textContent = r.reason;
  $("verdict-estop").hidden = !run.estop;
  $("verdict-estop").textContent = run.estop ? t("result.estop", { reason: run.estop }) : "";
  $("measurements").tBodies[0].replaceChildren(...r.measurements.map((m) => {
    const lims = [m.low !== null ? ">= " + m.low : "", m.high !== null ? "<= " + m.high : ""].filter(Boolean).join(", ");
    const tr = row([m.name, m.value, lims || t("result.no_limits"), word("outcome", m.outcome)]);
    tr.className = m.outcome;
    tr.dataset.measurement = m.name;
    return tr;
  }));
  $("safe-state").replaceChildren(...r.safe_state.map((s) => {
    const li = document.createElement("li");
    li.dataset.device = s.device;
    li.dataset.safe = String(s.safe);
    li.className = s.safe ? "good" : "bad";
    li.textContent = s.device + ": " + (s.safe ? t("result.safe") : t("result.not_safe")) + " (" + s.detail + ")";
    return li;
  }));
  const base = "/runs/" + encodeURIComponent(run.run_id) + "/";
  $("link-html").href = base + "report.html";
  $("link-pdf").href = base + "report.pdf";
  $("link-folder").href = base;
  $("result-run-id").textContent = run.run_id;
  $("amend-form").hidden = !can("amend_report");
  if (S.historyFor !== run.run_id) {
    S.historyFor = run.run_id;
    $("amended").hidden = true;
    loadHistory(run.run_id);
  }
}

async function loadHistory(runId) {
  const box = $("history");
  let data;
  try { data = await get("/api/history?run_id=" + encodeURIComponent(runId)); } catch (e) {
    box.textContent = t("history.none");
    return;
  }
  renderHistory(data);
}

function renderHistory(data) {
  const box = $("history");
  box.replaceChildren();
  if (data.error) {
    const p = document.createElement("p");
    p.className = "dim";
    p.textContent = t("history.unavailable") + ": " + data.error;
    box.appendChild(p);
    return;
  }
  const runs = data.runs || [];
  if (!runs.length) {
    box.textContent = t("history.none");
    return;
  }
  const table = document.createElement("table");
  const head = row([t("history.started"), t("history.sequence"), t("history.dut"), t("history.verdict")]);
  table.createTHead().appendChild(head);
  const body = table.createTBody();
  for (const r of runs) {
    const tr = row([(r.started_utc || "").replace("T", " ").slice(0, 19), r.sequence_id || r.sequence || "", r.dut_serial || "", word("verdict", r.verdict)]);
    if (r.run_id === S.historyFor) tr.className = "this-run";
    body.appendChild(tr);
  }
  box.appendChild(table);
  if (data.place && data.dut_serial) {
    const p = document.createElement("p");
    p.textContent = t("history.place", Object.assign({ dut: data.dut_serial }, data.place));
    box.prepend(p);
  }
}

function onValues(data) {
  S.seq = data.seq;
  $("live-seq").textContent = data.seq;
  const shown = {};
  for (const [name, v] of Object.entries(data.values)) {
    shown[name] = v.text;
    const tr = $("values").querySelector('tr[data-signal="' + CSS.escape(name) + '"]');
    if (tr) tr.querySelector(".value").textContent = v.text;
    if (typeof v.v === "number" && data.clock) {
      const s = (S.series[name] = S.series[name] || []);
      s.push([data.clock.elapsed, v.v]);
      if (s.length > 600) s.shift();
    }
  }
  S.liveLog.set(data.seq, shown);
  if (S.liveLog.size > 500) S.liveLog.delete(S.liveLog.keys().next().value);
  onClock(data);
  schedulePlots();
}

function onClock(data) {
  const c = data.clock;
  if (!c) return;
  S.clock = c;
  $("run-elapsed").textContent = hms(c.elapsed);
  if (c.step_limit) {
    const left = Math.max(0, c.step_limit - (c.step_elapsed || 0));
    $("run-remaining").textContent = hms(left) + (c.step_kind === "wait_until" ? " " + t("run.at_most") : "");
  } else {
    $("run-remaining").textContent = "-";
  }
}

// -- plots: our own, on canvas -------------------------------------------------------------
let plotPending = false;
function schedulePlots() {
  if (plotPending) return;
  plotPending = true;
  requestAnimationFrame(() => { plotPending = false; drawPlots(); });
}

function drawPlots() {
  for (const c of $("plots").querySelectorAll("canvas")) drawPlot(c, S.series[c.dataset.signal] || []);
}

function drawPlot(canvas, pts) {
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 46, pad = 6;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#c9d1d9";
  g.strokeRect(left, pad, w - left - pad, h - 2 * pad);
  if (!pts.length) return;
  let t0 = pts[0][0], t1 = pts[pts.length - 1][0];
  let lo = Infinity, hi = -Infinity;
  for (const [, v] of pts) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  if (hi === lo) { hi += 1; lo -= 1; }
  if (t1 === t0) t1 = t0 + 1;
  const x = (tt) => left + ((tt - t0) / (t1 - t0)) * (w - left - 2 * pad);
  const y = (v) => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  g.fillStyle = "#57606a";
  g.font = "10px sans-serif";
  g.fillText(fmt(hi), 2, pad + 8);
  g.fillText(fmt(lo), 2, h - pad);
  g.strokeStyle = "#0969da";
  g.lineWidth = 1.5;
  g.beginPath();
  pts.forEach(([tt, v], i) => (i ? g.lineTo(x(tt), y(v)) : g.moveTo(x(tt), y(v))));
  g.stroke();
}

function fmt(v) { return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(2) : String(+v.toPrecision(4)); }

// -- stops ---------------------------------------------------------------------------------
async function stop(level) {
  const r = await post("/api/stop", { level });
  if (!r.ok) say(problemText(r.data), "error");
}

function estop() {
  // No confirmation: the safe state of every device at once.
  stop("estop");
}

function askAbort() {
  $("confirm-dialog").showModal();
  $("confirm-no").focus();
}

// -- prompts -------------------------------------------------------------------------------
function onPrompt(p) {
  const d = $("prompt-dialog");
  const before = S.prompt;
  S.prompt = p;
  if (!p) {
    if (d.open) d.close();
    return;
  }
  const mine = S.run && (S.session.user === S.run.owner || S.session.role === "engineer") && can("start");
  $("prompt-step").textContent = p.step;
  $("prompt-text").textContent = p.text;
  const img = $("prompt-picture");
  if (p.picture) { img.src = "/api/prompt/" + p.id + "/picture"; img.hidden = false; } else { img.hidden = true; img.removeAttribute("src"); }
  const confirm = p.answer === "confirm";
  $("prompt-value").hidden = confirm;
  $("prompt-yes").hidden = !confirm;
  $("prompt-no").hidden = !confirm;
  $("prompt-ok").hidden = confirm;
  for (const b of ["prompt-yes", "prompt-no", "prompt-ok"]) $(b).disabled = !mine;
  $("prompt-answer").disabled = !mine;
  $("prompt-watch").hidden = mine;
  $("prompt-label").textContent = p.answer === "value" && p.unit ? t("prompt.value_in", { unit: p.unit }) : t("prompt.answer");
  const range = [];
  if (p.low !== null && p.low !== undefined) range.push(">= " + p.low + (p.unit ? " " + p.unit : ""));
  if (p.high !== null && p.high !== undefined) range.push("<= " + p.high + (p.unit ? " " + p.unit : ""));
  $("prompt-range").textContent = range.length ? t("prompt.passing", { range: range.join(", ") }) : "";
  clearErrors($("prompt-form"));
  // The problem the engine found with the previous answer, next to the field.
  if (p.problem) $("prompt-form").querySelector('[data-error="answer"]').textContent = t("prompt.not_taken", { problem: p.problem });
  if (!before || before.id !== p.id) {
    if (!p.problem) $("prompt-answer").value = "";
  }
  // Modal for the one who answers; the others keep their page (and its emergency stop) usable.
  if (d.open && d.dataset.modal !== String(mine)) d.close();
  if (!d.open) {
    d.dataset.modal = String(mine);
    if (mine) d.showModal(); else d.show();
  }
  if (mine) (confirm ? $("prompt-yes") : $("prompt-answer")).focus();
}

// What the page can tell before the server does: empty, not a number, a text off its pattern.
// The unit and the range are the engine's to judge (it parses units as the command line does).
function localProblem(p, text) {
  if (!text.trim()) return t("prompt.empty");
  if (p.answer === "value" && !/^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*\S*.*$/.test(text)) return t("prompt.not_number");
  if (p.answer === "text" && p.pattern) {
    try { if (!new RegExp("^(?:" + p.pattern + ")$").test(text.trim())) return t("prompt.pattern", { pattern: p.pattern }); } catch (e) { /* the engine checks it */ }
  }
  return null;
}

async function answer(text) {
  const p = S.prompt;
  if (!p) return;
  const err = $("prompt-form").querySelector('[data-error="answer"]');
  const problem = p.answer === "confirm" ? null : localProblem(p, text);
  if (problem) { err.textContent = problem; return; }
  err.textContent = "";
  const r = await post("/api/prompt", { id: p.id, answer: text });
  if (!r.ok) err.textContent = problemText(r.data);
}

// -- amending the report of the run shown (engineers) -------------------------------------------
async function amendReport(ev) {
  ev.preventDefault();
  clearErrors($("amend-form"));
  const r = await post("/api/amend", { run_id: S.run.run_id, reason: $("amend-reason").value });
  if (!r.ok) {
    if (r.data.fields) showFieldErrors($("amend-form"), r.data.fields);
    else say(problemText(r.data), "error");
    return;
  }
  const a = $("amended");
  a.href = "/runs/" + encodeURIComponent(r.data.folder) + "/report.html";
  a.textContent = t("amend.done", { id: r.data.report_id });
  a.hidden = false;
  $("amend-reason").value = "";
}

// -- the stream ----------------------------------------------------------------------------
let source = null;
function connect() {
  source = new EventSource("/api/events");
  source.addEventListener("open", () => { $("conn").textContent = t("conn.live"); $("conn").className = "badge good"; });
  source.addEventListener("error", () => { $("conn").textContent = t("conn.lost"); $("conn").className = "badge bad"; });
  source.addEventListener("snapshot", (ev) => {
    const d = JSON.parse(ev.data);
    S.seq = d.seq;
    onRun(d);
    onPrompt(d.prompt);
  });
  source.addEventListener("run", (ev) => {
    const d = JSON.parse(ev.data);
    S.seq = d.seq;
    const wasBusy = S.busy;
    onRun(d);
    if (wasBusy && !d.busy) { loadStatus(); }
  });
  source.addEventListener("step", (ev) => { const d = JSON.parse(ev.data); S.seq = d.seq; onStep(d); });
  source.addEventListener("values", (ev) => onValues(JSON.parse(ev.data)));
  source.addEventListener("clock", (ev) => { const d = JSON.parse(ev.data); S.seq = d.seq; onClock(d); });
  source.addEventListener("prompt", (ev) => { const d = JSON.parse(ev.data); S.seq = d.seq; onPrompt(d.prompt); });
  source.addEventListener("station", () => loadStatus());
  source.addEventListener("ping", (ev) => { $("ping").textContent = JSON.parse(ev.data).n; });
}

function renderAll() {
  if (S.session && S.session.station) renderSession();
  renderStatus();
  if (S.selected) select(S.selected.id);
  if (S.run) { buildValueRows(); renderRun(); }
  if (S.prompt) onPrompt(S.prompt);
}

// -- wiring --------------------------------------------------------------------------------
function wire() {
  $("lang").addEventListener("change", async (ev) => {
    const lang = ev.target.value;
    document.cookie = "lang=" + lang + "; path=/; SameSite=Strict; max-age=31536000";
    await loadLanguage(lang);
  });
  $("sign-in").addEventListener("click", openLogin);
  $("sign-out").addEventListener("click", signOut);
  $("login-form").addEventListener("submit", submitLogin);
  $("login-cancel").addEventListener("click", () => $("login-dialog").close());
  $("estop").addEventListener("click", estop);
  $("prompt-estop").addEventListener("click", estop);
  $("terminate").addEventListener("click", () => stop("terminate"));
  $("abort").addEventListener("click", askAbort);
  $("confirm-yes").addEventListener("click", () => { $("confirm-dialog").close(); stop("abort"); });
  $("confirm-no").addEventListener("click", () => $("confirm-dialog").close());
  $("start-form").addEventListener("submit", startRun);
  $("serial").addEventListener("change", checkForm);
  // A barcode scanner types the serial and Enter: that checks the serial and moves to START; it
  // never starts a run by itself.
  $("serial").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); checkForm(); $("start").focus(); }
  });
  $("lab-submit").addEventListener("click", submitToLab);
  $("reset-form").addEventListener("submit", resetInterlock);
  $("amend-form").addEventListener("submit", amendReport);
  $("dismiss").addEventListener("click", () => { S.dismissed = S.run && S.run.run_id; renderRun(); });
  $("prompt-form").addEventListener("submit", (ev) => { ev.preventDefault(); answer($("prompt-answer").value); });
  $("prompt-yes").addEventListener("click", () => answer("yes"));
  $("prompt-no").addEventListener("click", () => answer("no"));
  // The keyboard's emergency stop: Escape, anywhere on the page, also inside a dialog (whose own
  // Escape would only close it). A dialog stays open: the engine withdraws its question.
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { ev.preventDefault(); estop(); }
  }, true);
  for (const d of document.querySelectorAll("dialog")) d.addEventListener("cancel", (ev) => ev.preventDefault());
}

async function main() {
  wire();
  await loadLanguage(pickLanguage());
  await loadSession();
  connect();
  await Promise.all([loadStatus(), loadLibrary(), loadLab()]);
  // The lab's benches change on their own (jobs of other stations): read again every 5 s.
  setInterval(() => { if (S.labBenches && S.labBenches.length) loadLab(); }, 5000);
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", main);
