"""The coordinator inbox page (``GET /inbox``) and the rule summary it needs (``GET /api/rules``).

The page is one self-contained HTML document (inline CSS and vanilla JavaScript, nothing loaded
from elsewhere) that works the existing HTTP API: ``/api/tasks`` and its commands,
``/api/episodes/{id}`` for the timeline, ``/api/inbox`` and its server-sent event stream for live
notifications. It shows only what those endpoints return, keeps ids (never PHI) in its URL
(``?staff=C1#task-<id>``), and sends no referrer. docs/inbox.md describes it.
"""

from __future__ import annotations

import secrets
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from followup.service import FollowupContext
from transcare.db.database import Database


class RuleOut(BaseModel):
    """One rule as the inbox needs it: which outcome completing its task asks for."""

    id: str
    task_type: str
    title: str
    outcome: Literal["done", "attempts", "visit"]
    min_attempts: int  # outcome "attempts": logged attempts before it may close unreached
    roles: list[str]  # who may hold the task (delegable roles only where delegation is on)


def inbox_router(db: Database, ctx: FollowupContext) -> APIRouter:
    """``GET /inbox`` and ``GET /api/rules``. ``db`` is unused today: the page reads everything
    through the JSON API, so it sees exactly what the API lets it see."""
    del db
    router = APIRouter()
    rules = [RuleOut(id=r.id, task_type=r.task_type, title=r.title, outcome=r.outcome,
                     min_attempts=r.min_attempts, roles=list(r.allowed_roles(ctx.delegation)))
             for r in ctx.rules]

    @router.get("/api/rules", response_model=list[RuleOut], tags=["tasks"])
    async def list_rules() -> list[RuleOut]:
        """The rule table in short: task type, title, the outcome completing it asks for
        (``attempts``, ``visit`` or ``done``), the minimum attempts, and the roles allowed."""
        return rules

    @router.get("/inbox", response_class=HTMLResponse, include_in_schema=False)
    async def inbox_page() -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        return HTMLResponse(render_inbox(nonce), headers={
            "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                "frame-ancestors 'none'")})

    return router


def render_inbox(nonce: str) -> str:
    """The page, its inline style and script tagged with the response's CSP ``nonce``."""
    return (_PAGE.replace("{nonce}", nonce).replace("{style}", _STYLE)
            .replace("{script}", _SCRIPT))


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>transcare inbox</title><style nonce="{nonce}">{style}</style></head>
<body>
<header class="top">
  <h1>transcare &middot; inbox</h1>
  <form id="who" class="who">
    <label for="staff">Staff id</label>
    <input id="staff" name="staff" autocomplete="off" spellcheck="false" required size="10"
           maxlength="64">
    <button type="submit">Open inbox</button>
  </form>
  <button id="team" type="button" aria-pressed="false">Team view: overdue &amp; escalated</button>
  <a class="bell" href="#notes">Notifications <span id="unread" class="count"
     aria-label="unread notifications">0</span></a>
</header>
<div id="msg" class="msg" role="alert" hidden><span id="msg-text"></span>
  <button id="msg-close" type="button" class="small" aria-label="Dismiss message">Dismiss</button></div>
<p id="status" class="status" role="status" aria-live="polite"></p>
<main class="layout">
  <section class="tasks" aria-labelledby="list-title">
    <div class="head"><h2 id="list-title">My tasks</h2>
      <button id="refresh" type="button" class="small">Refresh</button></div>
    <div id="linked"></div>
    <ul id="tasks" class="cards"></ul>
    <p id="empty" class="none" hidden></p>
  </section>
  <aside class="side">
    <section id="notes" class="panel" aria-labelledby="notes-title">
      <div class="head"><h2 id="notes-title">Notifications</h2>
        <span id="live" class="live off">offline</span>
        <button id="read-all" type="button" class="small">Mark all read</button></div>
      <ul id="notes-list" class="notes"></ul>
    </section>
    <section id="episode" class="panel" aria-labelledby="episode-title" hidden>
      <div class="head"><h2 id="episode-title">Episode timeline</h2>
        <button id="episode-close" type="button" class="small">Close</button></div>
      <div id="episode-body"></div>
    </section>
  </aside>
</main>
<datalist id="staff-ids"></datalist>
<footer><a href="/">ops dashboard</a> &middot; <a href="/docs">API docs</a></footer>
<script nonce="{nonce}">{script}</script>
</body></html>"""

_STYLE = """
*{box-sizing:border-box} body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2733;
background:#f6f8fa} a{color:#0b5cad} h1{font-size:19px;margin:0} h2{font-size:16px;margin:0}
h3{font-size:15px;margin:0} :focus-visible{outline:3px solid #0b5cad;outline-offset:2px}
.top{display:flex;flex-wrap:wrap;gap:12px 20px;align-items:center;padding:12px 20px;
background:#fff;border-bottom:1px solid #d8dee4}
.who{display:flex;gap:6px;align-items:center} .who label{font-weight:600}
input,select,textarea,button{font:inherit} input,select,textarea{padding:5px 7px;
border:1px solid #8c959f;border-radius:6px;background:#fff;color:inherit}
button{padding:5px 12px;border:1px solid #8c959f;border-radius:6px;background:#f3f5f7;
cursor:pointer;min-height:32px} button:hover{background:#e6eaef}
button[disabled]{opacity:.6;cursor:default} button.primary{background:#0b5cad;color:#fff;
border-color:#0b5cad} button.small{min-height:28px;padding:2px 9px;font-size:13px}
button[aria-pressed=true]{background:#1d2733;color:#fff;border-color:#1d2733}
.bell{margin-left:auto;font-weight:600;text-decoration:none}
.count{display:inline-block;min-width:22px;padding:0 6px;border-radius:11px;background:#b42318;
color:#fff;text-align:center} .count.zero{background:#8c959f}
.msg{position:sticky;top:0;z-index:10;margin:12px 20px 0;padding:10px 14px;
border:1px solid #b42318;background:#fdecea;
color:#7a1a10;border-radius:8px;display:flex;gap:12px;align-items:center;justify-content:space-between}
.msg[hidden]{display:none} .status{margin:6px 20px 0;min-height:1.4em;color:#1a7f37}
.layout{display:grid;grid-template-columns:minmax(0,1fr) 400px;gap:20px;padding:0 20px 20px}
.side{position:sticky;top:8px;align-self:start;max-height:calc(100vh - 16px);overflow:auto}
.head button{white-space:nowrap}
.head{display:flex;gap:10px;align-items:center;margin:6px 0 10px} .head h2{margin-right:auto}
.cards,.notes,.timeline,.etasks{list-style:none;margin:0;padding:0}
.task{background:#fff;border:1px solid #d8dee4;border-left:5px solid #8c959f;border-radius:8px;
padding:10px 14px;margin:0 0 10px} .task.late{border-left-color:#b42318;background:#fffafa}
.task.selected{box-shadow:0 0 0 3px #0b5cad55;border-color:#0b5cad}
.row{display:flex;gap:10px;align-items:baseline;justify-content:space-between}
.meta{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center;margin:6px 0}
.due{font-weight:600} .late .due{color:#b42318} .rel{font-weight:400;color:#57606a}
.late .rel{color:#b42318} .sub{color:#57606a;font-size:13px;margin:2px 0 8px;overflow-wrap:anywhere}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;
border:1px solid transparent;white-space:nowrap} .badge.overdue{background:#b42318;color:#fff}
.badge.esc{background:#fff1e5;color:#8a3b00;border-color:#e59a5c}
.prio-urgent{background:#b42318;color:#fff} .prio-high{background:#fde2d6;color:#8a2a0b}
.prio-normal{background:#eef1f4;color:#404a55} .prio-low{background:#f6f8fa;color:#57606a;
border-color:#d8dee4} .st-open{background:#ddf4ff;color:#0a4a7f}
.st-claimed{background:#dafbe1;color:#116329} .st-done,.st-cancelled{background:#eef1f4;color:#57606a}
.actions{display:flex;flex-wrap:wrap;gap:6px}
form.inline{margin-top:10px;padding:10px;border:1px solid #d8dee4;border-radius:8px;background:#f6f8fa}
fieldset{border:1px solid #d8dee4;border-radius:6px;margin:0 0 8px;padding:6px 10px}
legend{font-weight:600} .field{display:flex;flex-direction:column;gap:2px;margin:0 0 8px}
.field label,.attempt label{font-size:13px;font-weight:600} .hint{font-size:13px;color:#57606a;margin:0 0 6px}
.attempts{margin:0 0 6px;padding-left:20px} .attempt{display:flex;flex-wrap:wrap;gap:8px;
align-items:end;margin-bottom:6px} .attempt div{display:flex;flex-direction:column;gap:2px}
.panel{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:8px 14px 12px;
margin-bottom:16px} .panel[hidden]{display:none}
.live{font-size:12px;padding:1px 8px;border-radius:10px;background:#dafbe1;color:#116329}
.live.off{background:#eef1f4;color:#57606a}
.notes{max-height:340px;overflow:auto} .note{padding:7px 0;border-top:1px solid #eef1f4}
.note.unread{font-weight:500} .note.unread strong::before{content:"\\25CF ";color:#b42318}
.note time,.timeline time{color:#57606a;font-size:13px} .note .sub{margin:0}
.facts{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:0 0 10px;font-size:14px}
.facts dt{color:#57606a} .facts dd{margin:0;overflow-wrap:anywhere}
.timeline li{border-left:3px solid #d8dee4;padding:2px 0 8px 10px;font-size:14px}
.ttype{font-family:ui-monospace,monospace;font-size:12px;color:#404a55}
.etasks li{font-size:14px;padding:2px 0} .none{color:#57606a}
.panel h3{margin:12px 0 6px} footer{padding:0 20px 20px;color:#57606a}
@media (max-width:900px){.layout{grid-template-columns:1fr;padding:0 12px 16px}
.side{position:static;max-height:none;overflow:visible}
.top{padding:10px 12px} .bell{margin-left:0} .msg,.status{margin-left:12px;margin-right:12px}}
"""

_SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const KEY = "transcare.inbox.staff", KNOWN = "transcare.inbox.known";
const RESULTS = [["reached", "Reached"], ["no_answer", "No answer"], ["left_message", "Left message"],
  ["wrong_number", "Wrong number"], ["declined", "Declined"]];
const KINDS = {task_assigned: "Assigned to you", task_reassigned: "Reassigned to you",
  task_reminder: "Reminder", task_escalated: "Escalated", task_cancelled: "Cancelled",
  episode_alert: "Episode alert"};
const state = {staff: "", team: false, rules: {}, tasks: [], notes: [], open: {}, selected: "",
  linked: "", episode: "", source: null};
let uid = 0;

function el(tag, attrs, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return node;
}

// --- the API: every error shows the API's own "detail" -------------------------------------
async function api(path, body) {
  const init = {headers: {Accept: "application/json"}};
  if (body !== undefined) Object.assign(init, {method: "POST", body: JSON.stringify(body),
    headers: {Accept: "application/json", "Content-Type": "application/json"}});
  let res;
  try { res = await fetch(path, init); }
  catch (e) { throw new Error("The server cannot be reached (" + e.message + ")"); }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(detailOf(data, res));
  return data;
}
function detailOf(data, res) {
  const d = data && data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => (e.loc || []).slice(1).join(".") + ": " + e.msg).join("; ");
  return "HTTP " + res.status + " " + res.statusText;
}
function showError(err) { $("msg-text").textContent = err.message || String(err); $("msg").hidden = false; }
function clearError() { $("msg").hidden = true; $("msg-text").textContent = ""; }
function say(text) { $("status").textContent = text; }

// --- times: shown in the browser's zone, sent as ISO 8601 with the offset --------------------
const FMT = new Intl.DateTimeFormat(undefined, {weekday: "short", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", timeZoneName: "short"});
function when(iso) { return iso ? FMT.format(new Date(iso)) : "\u2014"; }
function relative(iso) {
  const ms = new Date(iso) - Date.now(), abs = Math.abs(ms);
  const [n, unit] = abs >= 864e5 ? [Math.round(abs / 864e5), "d"]
    : abs >= 36e5 ? [Math.round(abs / 36e5), "h"] : [Math.max(1, Math.round(abs / 6e4)), "min"];
  return ms >= 0 ? "in " + n + " " + unit : n + " " + unit + " overdue";
}
const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, "0");
function localValue(d) {
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" +
    pad(d.getHours()) + ":" + pad(d.getMinutes());
}
function withOffset(value) {
  const d = new Date(value);
  if (!value || isNaN(d)) return value;
  const off = -d.getTimezoneOffset();
  return localValue(d) + ":00" + (off >= 0 ? "+" : "-") + pad(off / 60) + ":" + pad(off % 60);
}

// --- rules: which outcome completing a task type asks for ----------------------------------
async function loadRules() {
  const by = {};
  for (const r of await api("/api/rules")) {
    const o = by[r.task_type];
    by[r.task_type] = !o ? {outcome: r.outcome, min: r.min_attempts}
      : {outcome: o.outcome === r.outcome ? o.outcome : "any", min: Math.max(o.min, r.min_attempts)};
  }
  state.rules = by;
}
const ruleOf = (t) => state.rules[t.type] || {outcome: "done", min: 0};

// --- tasks -----------------------------------------------------------------------------------
async function loadTasks() {
  if (!state.staff) return;
  let found;
  if (state.team) {
    const lists = await Promise.all(["overdue=true", "status=open", "status=claimed"]
      .map((q) => api("/api/tasks?limit=1000&" + q)));
    const byId = new Map();
    for (const t of lists.flat()) if (t.overdue || t.escalation_level > 0) byId.set(t.id, t);
    found = [...byId.values()];
  } else {
    const who = "/api/tasks?limit=1000&assignee=" + enc(state.staff) + "&status=";
    found = (await Promise.all([api(who + "open"), api(who + "claimed")])).flat();
  }
  found.sort((a, b) => new Date(a.due_at) - new Date(b.due_at) || a.id.localeCompare(b.id));
  state.tasks = found;
  remember(found.map((t) => t.assignee));
  renderTasks();
  await refreshLinked();
}

function renderTasks() {
  const old = new Map([...$("tasks").children].map((n) => [n.dataset.task, n]));
  $("tasks").replaceChildren(...state.tasks.map((t) =>
    state.open[t.id] && old.has(t.id) ? old.get(t.id) : card(t)));  // keep a form being filled
  const empty = $("empty");
  empty.hidden = state.tasks.length > 0;
  empty.textContent = state.team ? "No overdue or escalated tasks."
    : "No open tasks for " + state.staff + ".";
  $("list-title").textContent = state.team ? "Team: overdue and escalated tasks (" + state.tasks.length + ")"
    : "My tasks (" + state.tasks.length + ")";
}

function card(t) {
  const mine = t.status === "claimed" && t.assignee === state.staff, open = state.open[t.id];
  const btn = (action, label, fn, extra) => el("button", Object.assign({type: "button",
    "data-action": action, onclick: fn}, extra || {}), label);
  return el("li", {class: "task" + (t.overdue ? " late" : "") + (t.id === state.selected ? " selected" : ""),
      id: "task-" + t.id, "data-task": t.id, "data-status": t.status},
    el("div", {class: "row"}, el("h3", {tabindex: "-1"}, t.title || t.type),
      el("span", {class: "badge st-" + t.status}, t.status)),
    el("div", {class: "meta"},
      el("span", {class: "due"}, "Due ", el("time", {datetime: t.due_at}, when(t.due_at)),
        active(t) ? el("span", {class: "rel"}, " (" + relative(t.due_at) + ")") : null),
      t.overdue ? el("span", {class: "badge overdue"}, "Overdue") : null,
      t.escalation_level > 0 ? el("span", {class: "badge esc"}, "Escalated L" + t.escalation_level) : null,
      el("span", {class: "badge prio-" + t.priority}, t.priority + " priority")),
    el("p", {class: "sub"}, t.type + " \u00b7 episode " + t.episode_id + " \u00b7 assignee " +
      (t.assignee || "none") + (t.assignment_reason ? " (" + t.assignment_reason + ")" : "")),
    el("div", {class: "actions"},
      btn("claim", mine ? "Claimed" : "Claim", () => claim(t), {disabled: mine || !active(t)}),
      btn("complete", "Complete", () => toggle(t, "complete"),
        {"aria-expanded": String(open === "complete"), disabled: !active(t)}),
      btn("reassign", "Reassign", () => toggle(t, "reassign"),
        {"aria-expanded": String(open === "reassign"), disabled: !active(t)}),
      btn("timeline", "Timeline", () => select(t.id))),
    open === "complete" ? completeForm(t) : null, open === "reassign" ? reassignForm(t) : null);
}
const active = (t) => t.status === "open" || t.status === "claimed";

function toggle(t, form) {
  state.open[t.id] = state.open[t.id] === form ? null : form;
  const fresh = card(t);
  document.getElementById("task-" + t.id).replaceWith(fresh);
  const first = fresh.querySelector("form input, form select, form textarea");
  if (first) first.focus();
}

function field(label, input) {
  input.id = input.id || "f" + (++uid);
  return el("div", {class: "field"}, el("label", {for: input.id}, label), input);
}

function attemptRow(list, required) {
  const at = el("input", {type: "datetime-local", id: "f" + (++uid), name: "at", required: true,
    value: localValue(new Date())});
  const result = el("select", {id: "f" + (++uid), name: "result", required},
    el("option", {value: ""}, "choose\u2026"), RESULTS.map(([v, l]) => el("option", {value: v}, l)));
  const row = el("li", {class: "attempt"},
    el("div", {}, el("label", {for: at.id}, "When"), at),
    el("div", {}, el("label", {for: result.id}, "Result"), result),
    el("button", {type: "button", class: "small", onclick: () => row.remove(),
      "aria-label": "Remove this attempt"}, "Remove"));
  list.append(row);
}

function completeForm(t) {
  const rule = ruleOf(t), kind = rule.outcome;
  const form = el("form", {class: "inline", "data-form": "complete", "aria-label": "Complete: " + t.title});
  if (kind === "attempts" || kind === "any") {
    const list = el("ol", {class: "attempts"});
    attemptRow(list, kind === "attempts");
    form.append(el("fieldset", {}, el("legend", {}, "Contact attempts"),
      el("p", {class: "hint"}, "Done when the patient or family was reached, or after " +
        Math.max(1, rule.min) + " logged attempts."), list,
      el("button", {type: "button", class: "small", onclick: () => attemptRow(list, kind === "attempts")},
        "Add attempt")));
  }
  if (kind === "visit" || kind === "any")
    form.append(field("Visit date and time", el("input", {type: "datetime-local", name: "visit_at",
      required: kind === "visit"})));
  form.append(field("Note (optional)", el("textarea", {name: "note", rows: 2, maxlength: 2000})),
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary"}, "Complete task"),
      el("button", {type: "button", onclick: () => toggle(t, "complete")}, "Cancel")));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); complete(t, form); });
  return form;
}

function outcomeOf(form) {
  const out = {};
  const rows = [...form.querySelectorAll(".attempt")].filter((r) => r.querySelector("select").value);
  if (rows.length) out.attempts = rows.map((r) => ({at: withOffset(r.querySelector("input").value),
    result: r.querySelector("select").value}));
  const visit = form.querySelector("[name=visit_at]");
  if (visit && visit.value) out.visit_at = withOffset(visit.value);
  const note = form.querySelector("[name=note]").value.trim();
  if (note) out.note = note;
  return out;
}

function reassignForm(t) {
  const to = el("input", {name: "to", required: true, list: "staff-ids", autocomplete: "off",
    spellcheck: "false", maxlength: 64});
  const form = el("form", {class: "inline", "data-form": "reassign", "aria-label": "Reassign: " + t.title},
    field("To (staff id)", to), field("Reason", el("input", {name: "reason", maxlength: 300})),
    el("div", {class: "actions"}, el("button", {type: "submit", class: "primary"}, "Reassign task"),
      el("button", {type: "button", onclick: () => toggle(t, "reassign")}, "Cancel")));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); reassign(t, form); });
  return form;
}

// --- commands: by = the staff id the page is open as ----------------------------------------
async function act(done, call) {
  clearError();
  try {
    const t = await call();
    say(done(t));
    await loadTasks();
    if (state.episode) await showEpisode(state.episode, true);
    return t;
  } catch (e) { showError(e); return null; }
}
const path = (t, verb) => "/api/tasks/" + enc(t.id) + "/" + verb;
function claim(t) {
  return act(() => "Claimed: " + t.title, () => api(path(t, "claim"), {by: state.staff}));
}
function complete(t, form) {
  return act(() => { state.open[t.id] = null; return "Completed: " + t.title; },
    () => api(path(t, "complete"), {by: state.staff, outcome: outcomeOf(form)}));
}
function reassign(t, form) {
  const to = form.querySelector("[name=to]").value.trim();
  const reason = form.querySelector("[name=reason]").value.trim();
  return act((r) => { state.open[t.id] = null; return "Reassigned to " + r.assignee + ": " + t.title; },
    () => api(path(t, "reassign"), {by: state.staff, to, reason}));
}

// --- selecting a task: #task-<id> (links in e-mails), #episode-<id> ------------------------
function select(id) {
  if (location.hash !== "#task-" + id) location.hash = "task-" + id;
  else openFromHash();
}
async function openFromHash() {
  const h = decodeURIComponent(location.hash.slice(1));
  if (h.startsWith("task-")) await openTask(h.slice(5));
  else if (h.startsWith("episode-")) await showEpisode(h.slice(8));
}
async function openTask(id) {
  state.selected = id;
  let t = state.tasks.find((x) => x.id === id);
  if (!t) {
    try { t = await api("/api/tasks/" + enc(id)); } catch (e) { showError(e); return; }
  }
  state.linked = state.tasks.some((x) => x.id === id) ? "" : id;
  await refreshLinked(t);
  for (const n of document.querySelectorAll(".task.selected")) n.classList.remove("selected");
  const node = document.getElementById("task-" + id);
  if (node) {
    node.classList.add("selected");
    node.scrollIntoView({block: "nearest"});
    node.querySelector("h3").focus({preventScroll: true});
  }
  await showEpisode(t.episode_id);
}
async function refreshLinked(known) {
  const box = $("linked");
  if (!state.linked || state.tasks.some((x) => x.id === state.linked)) {
    state.linked = ""; box.replaceChildren(); return;
  }
  let t = known && known.id === state.linked ? known : null;
  if (!t) { try { t = await api("/api/tasks/" + enc(state.linked)); } catch (e) { showError(e); return; } }
  box.replaceChildren(el("h2", {class: "head"}, "Linked task"), el("ul", {class: "cards"}, card(t)));
}

// --- the episode timeline (side panel) --------------------------------------------------------
function fact(label, value) { return [el("dt", {}, label), el("dd", {}, value)]; }
async function showEpisode(id, quiet) {
  let e;
  try { e = await api("/api/episodes/" + enc(id)); } catch (err) { if (!quiet) showError(err); return; }
  state.episode = id;
  $("episode-title").textContent = "Episode timeline: " + e.kind + " at " + e.facility;
  $("episode-body").replaceChildren(
    el("dl", {class: "facts"}, fact("Episode", e.id), fact("Status", e.status),
      fact("Admitted", when(e.admitted_at)), fact("Discharged", when(e.discharged_at)),
      e.disposition ? fact("Disposition", e.disposition + " (PV1-36)") : null,
      fact("Member", e.patient.program_id), fact("Coordinator", e.coordinator.id || "unassigned"),
      e.flags.length ? fact("Flags", e.flags.join(", ")) : null),
    el("h3", {}, "Timeline"),
    el("ol", {class: "timeline", id: "timeline"}, e.timeline.map((line) => el("li", {},
      el("time", {datetime: line.at || ""}, when(line.at)), " ", el("span", {class: "ttype"}, line.type),
      el("div", {}, line.summary)))),
    el("h3", {}, "Tasks of this episode"),
    el("ul", {class: "etasks"}, e.tasks.map((t) => el("li", {},
      el("a", {href: "#task-" + t.id}, t.title), " \u2014 " + t.status + ", due " + when(t.due_at) +
      (t.assignee ? ", " + t.assignee : "")))));
  const panel = $("episode");
  panel.hidden = false;
  if (!quiet && window.matchMedia("(max-width: 900px)").matches) panel.scrollIntoView({block: "start"});
}

// --- notifications: the inbox, live over server-sent events ----------------------------------
async function loadNotes() {
  state.notes = await api("/api/inbox?limit=100&staff_id=" + enc(state.staff));
  renderNotes();
}
function renderNotes() {
  const unread = state.notes.filter((n) => !n.read_at).length;
  $("unread").textContent = unread;
  $("unread").classList.toggle("zero", unread === 0);
  $("notes-title").replaceChildren("Notifications ", el("span", {class: "count" + (unread ? "" : " zero"),
    title: unread + " unread"}, unread + " new"));
  document.title = (unread ? "(" + unread + ") " : "") + "transcare inbox";
  $("read-all").disabled = unread === 0;
  $("notes-list").replaceChildren(...(state.notes.length ? state.notes.map(noteItem)
    : [el("li", {class: "none"}, "No notifications.")]));
}
function noteItem(n) {
  const label = KINDS[n.kind] + (n.kind === "task_escalated" ? " (level " + n.escalation_level + ")" : "");
  const href = n.task_id ? "#task-" + n.task_id : "#episode-" + n.episode_id;
  return el("li", {class: "note" + (n.read_at ? "" : " unread"), "data-note": n.id, "data-kind": n.kind},
    el("div", {class: "row"}, el("strong", {}, label),
      el("time", {datetime: n.created_at}, when(n.created_at))),
    el("a", {href}, n.title || n.task_type),
    n.due_at ? el("p", {class: "sub"}, "Due " + when(n.due_at)) : null,
    n.read_at ? null : el("button", {type: "button", class: "small", onclick: () => markRead([n.id]),
      "aria-label": "Mark read: " + (n.title || n.task_type)}, "Mark read"));
}
async function markRead(ids) {
  clearError();
  if (!ids.length) return;
  try {
    await api("/api/inbox/read", {staff_id: state.staff, ids});
    const now = new Date().toISOString();
    for (const n of state.notes) if (ids.includes(n.id)) n.read_at = now;
    renderNotes();
  } catch (e) { showError(e); }
}
function live(on) {
  $("live").textContent = on ? "live" : "reconnecting\u2026";
  $("live").classList.toggle("off", !on);
}
function connect() {
  if (state.source) state.source.close();
  const source = new EventSource("/api/inbox/stream?staff_id=" + enc(state.staff));
  state.source = source;
  source.addEventListener("open", () => { live(true); loadNotes().catch(showError); });
  source.addEventListener("error", () => live(false));
  source.addEventListener("notification", (ev) => {
    const note = JSON.parse(ev.data);
    if (!state.notes.some((n) => n.id === note.id)) { state.notes.unshift(note); renderNotes(); }
    loadTasks().catch(showError);
  });
}

// --- who am I --------------------------------------------------------------------------------
function remember(ids) {
  const known = new Set(JSON.parse(localStorage.getItem(KNOWN) || "[]"));
  for (const id of ids) if (id) known.add(id);
  const list = [...known].sort().slice(0, 200);
  localStorage.setItem(KNOWN, JSON.stringify(list));
  $("staff-ids").replaceChildren(...list.map((id) => el("option", {value: id})));
}
async function start(staff) {
  Object.assign(state, {staff, tasks: [], notes: [], open: {}, linked: ""});
  localStorage.setItem(KEY, staff);
  remember([staff]);
  const url = new URL(location.href);
  url.searchParams.set("staff", staff);
  history.replaceState(null, "", url);
  $("staff").value = staff;
  clearError();
  say("");
  try {
    await Promise.all([loadTasks(), loadNotes()]);
    connect();
    await openFromHash();
  } catch (e) { showError(e); }
  document.body.dataset.ready = "1";
}

$("who").addEventListener("submit", (ev) => { ev.preventDefault(); start($("staff").value.trim()); });
$("team").addEventListener("click", () => {
  state.team = !state.team;
  $("team").setAttribute("aria-pressed", String(state.team));
  clearError();
  loadTasks().catch(showError);
});
$("refresh").addEventListener("click", () => { clearError(); loadTasks().catch(showError); });
$("read-all").addEventListener("click",
  () => markRead(state.notes.filter((n) => !n.read_at).map((n) => n.id)));
$("msg-close").addEventListener("click", clearError);
$("episode-close").addEventListener("click", () => { $("episode").hidden = true; state.episode = ""; });
window.addEventListener("hashchange", () => { clearError(); openFromHash(); });
setInterval(() => { if (state.staff) { loadTasks().catch(() => {}); loadNotes().catch(() => {}); } }, 60000);

(async () => {
  try { await loadRules(); } catch (e) { showError(e); }
  const staff = new URLSearchParams(location.search).get("staff") || localStorage.getItem(KEY) || "";
  if (staff) await start(staff);
  else {
    $("staff").focus();
    say("Enter your staff id to open your inbox.");
    document.body.dataset.ready = "1";
  }
})();
"""
