/*
 * What every view of the operator page shares: building DOM, calling the API, the session, the
 * polling of the current view, and a small form dialog.
 *
 * Security by construction:
 * - The API token is kept in sessionStorage (this tab only) and sent ONLY as an
 *   `Authorization: Bearer` header set by fetch(). It is never a cookie, so the browser never
 *   attaches it on its own: another site cannot make an authenticated request on the operator's
 *   behalf, which makes the page CSRF-safe without CSRF tokens.
 * - Every value from the API enters the page through textContent / createElement (see el()),
 *   never innerHTML, so a hostile server name or cloud message cannot become markup.
 * - No inline script or style anywhere: the Content-Security-Policy forbids both.
 */

export const TOKEN_KEY = "reimage.api-token";
const POLL_MS = 2000;
export const SEARCH_DEBOUNCE_MS = 300;
// orchestrator/domain/states.py, in the order a bar shows them: what is done first.
export const SERVER_STATES = [
  "succeeded",
  "failed",
  "cancelled",
  "skipped",
  "verifying",
  "running",
  "backing_up",
  "submitting",
  "pending",
];
export const BATCH_STATES = ["pending", "running", "paused", "succeeded", "partially_failed", "aborted", "cancelled"];
export const ACTIVE_SERVER_STATES = new Set(["pending", "submitting", "backing_up", "running", "verifying"]);
const FINISHED_SERVER_STATES = ["succeeded", "failed", "cancelled", "skipped"];
export const TERMINAL_BATCH_STATES = new Set(["succeeded", "partially_failed", "aborted", "cancelled"]);
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const $ = (id) => document.getElementById(id);

// ---- DOM -------------------------------------------------------------------------------

/** An element; children are nodes or text (always inserted as text, never parsed). */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const short = (id) => (id ? String(id).slice(0, 8) : "");
export const dash = (value) =>
  value === null || value === undefined || value === "" ? el("span", { class: "muted" }, "—") : value;
export const words = (code) => String(code).replace(/_/g, " ");

export function time(iso) {
  if (!iso) return el("span", { class: "muted" }, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return el("span", {}, iso);
  const p = (n) => String(n).padStart(2, "0");
  const text =
    `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())} ` +
    `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
  return el("time", { datetime: iso, title: iso }, text);
}

export function badge(state, testid) {
  return el("span", { class: `badge st-${state}`, testid: testid || "state-badge" }, words(state));
}

/** One bar, a segment per server state, widths in proportion to `total`. */
export function stackedBar(counts, total, testid) {
  const parts = SERVER_STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
  const bar = el("div", {
    class: "bar",
    role: "img",
    "aria-label": parts.join(", ") || "no servers",
    title: parts.join(", ") || "no servers",
    testid: testid || "progress-bar",
  });
  for (const state of SERVER_STATES) {
    const n = counts[state] || 0;
    if (!n || !total) continue;
    const segment = el("span", { class: `seg st-${state}`, "data-state": state });
    // CSSOM, not a style attribute: the CSP (style-src 'self') allows this one.
    segment.style.width = `${(100 * n) / total}%`;
    bar.append(segment);
  }
  return bar;
}

export const done = (counts) => FINISHED_SERVER_STATES.reduce((n, s) => n + (counts[s] || 0), 0);

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export function pageHead(title, ...rest) {
  return el("div", { class: "page-head" }, el("h1", {}, title), ...rest);
}

/** A table; `stack` makes its rows cards on a narrow screen (each cell shows its column's
 * name, from the data-label that labelRow() sets). */
export function table(columns, tbody, testid, options = {}) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: options.stack ? "table stack" : "table", testid },
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.class }, c.label)))),
      tbody,
    ),
  );
}

/** Gives each cell of a row its column's label (shown before it when rows are stacked) and its
 * column's class. */
export function labelRow(columns, tr) {
  [...tr.children].forEach((td, i) => {
    const column = columns[i];
    if (!column) return;
    if (column.label) td.dataset.label = column.label;
    if (column.class) td.classList.add(...column.class.split(" "));
  });
  return tr;
}

export function emptyRow(columns, text, testid) {
  return el("tr", { class: "empty" }, el("td", { colspan: columns, testid }, text));
}

export function fact(term, value, testid) {
  return el("div", { class: "fact" }, el("dt", {}, term), el("dd", { testid }, value));
}

// ---- a form dialog (instead of window.prompt: it can say more, and it can be tested) ----

/**
 * A modal dialog holding `body` (nodes) and buttons. Resolves with the name of the button
 * pressed, or null when closed with Escape or Cancel. `onButton(name)` may return false to keep
 * the dialog open (e.g. a dry run whose answer shows inside it).
 */
export function openDialog({ title, body, buttons, testid, onButton }) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { class: "dialog", testid: testid || "dialog", "aria-label": title });
    const row = el("div", { class: "dialog-buttons" });
    const cancel = el("button", { type: "button", class: "btn", testid: "dialog-cancel" }, "Cancel");
    const finish = (answer) => {
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(answer);
    };
    cancel.addEventListener("click", () => finish(null));
    for (const b of buttons) {
      const button = el("button", { type: "button", class: b.kind || "btn btn-primary", testid: b.testid }, b.label);
      b.node = button;
      button.addEventListener("click", async () => {
        if (onButton) {
          for (const other of buttons) other.node.disabled = true;
          let keep = false;
          try {
            keep = (await onButton(b.name, buttons)) === false;
          } finally {
            for (const other of buttons) other.node.disabled = Boolean(other.disabledWhen && other.disabledWhen());
          }
          if (keep) return;
        }
        finish(b.name);
      });
      row.append(button);
    }
    row.append(cancel);
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      finish(null);
    });
    dialog.append(el("h2", { class: "dialog-title" }, title), ...body.filter(Boolean), row);
    document.body.append(dialog);
    for (const b of buttons) b.node.disabled = Boolean(b.disabledWhen && b.disabledWhen());
    dialog.showModal();
    const first = dialog.querySelector("input, textarea, select");
    if (first) first.focus();
  });
}

/** Asks for one line of text (a reason, a comment): resolves with it ("" allowed unless
 * `required`), or null when cancelled. */
export async function askText({ title, label, confirm, required, maxLength, testid, kind }) {
  const input = el("input", { type: "text", maxlength: String(maxLength || 500), testid: `${testid}-input`, "aria-label": label });
  const hint = el("p", { class: "hint", testid: `${testid}-hint`, hidden: true }, "Required.");
  const count = el("span", { class: "muted small" }, `0/${maxLength || 500}`);
  input.addEventListener("input", () => {
    count.textContent = `${input.value.length}/${maxLength || 500}`;
    hint.hidden = true;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      input.closest("dialog").querySelector(`[data-testid=${testid}-confirm]`).click();
    }
  });
  const answer = await openDialog({
    title,
    testid,
    body: [el("label", { class: "field" }, el("span", {}, label), input), el("div", { class: "dialog-foot" }, hint, el("span", { class: "spacer" }), count)],
    buttons: [{ name: "ok", label: confirm, kind: kind || "btn btn-primary", testid: `${testid}-confirm` }],
    onButton: () => {
      if (required && !input.value.trim()) {
        hint.hidden = false;
        return false;
      }
      return true;
    },
  });
  return answer === "ok" ? input.value.trim() : null;
}

// ---- API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    this.status = status;
    this.code = code;
    // The API's whole error object: fields (400), conflicts (409), servers and codes (422).
    this.detail = detail || {};
  }
}

// The signed-in token as the API describes it (GET /whoami): its name, role and projects.
export const session = { me: null, signingIn: false };

const ROLE_RANK = { viewer: 0, operator: 1, approver: 2, admin: 3 };

/** Whether the signed-in token may do what needs `role` (operator unless said): a viewer's
 * clicks would only get 403s, so their controls are hidden. */
export function mayDo(role) {
  const me = session.me;
  return me !== null && (ROLE_RANK[me.role] || 0) >= ROLE_RANK[role || "operator"];
}

export async function loadMe() {
  const me = await api("GET", "/whoami");
  session.me = me;
  const who = $("whoami");
  const scope = me.projects ? ` · ${me.projects.length} project(s)` : "";
  who.textContent = `${me.name} · ${me.role}${scope}`;
  who.title = who.textContent;
  who.hidden = false;
  if (current && current.view.onIdentity) current.view.onIdentity();
}

/** The fetch every API call makes: the token as a header, nothing ambient. */
async function send(method, path, body, extraHeaders, accept) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) {
    showSignIn("Sign in to continue.", "info");
    throw new ApiError(401, "unauthorized", "not signed in");
  }
  const headers = { Authorization: `Bearer ${token}`, Accept: accept, ...(extraHeaders || {}) };
  // credentials: "omit": nothing ambient goes with the call, only the header above.
  const init = { method, headers, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(`/api/v1${path}`, init);
  } catch (error) {
    throw new ApiError(0, "network", `The API could not be reached (${error.message}).`);
  }
}

async function failure(response) {
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (response.status === 401) {
    signOut(
      session.signingIn
        ? "That token was not accepted. Check it and try again."
        : "The API no longer accepts your token (401). Sign in again.",
    );
    return new ApiError(401, "unauthorized", "unauthorized");
  }
  const error = (data && data.error) || {};
  let message = error.message || `HTTP ${response.status} ${response.statusText}`;
  if (error.fields && typeof error.fields === "object") {
    const fields = Object.entries(error.fields).map(([k, v]) => `${k}: ${v}`);
    if (fields.length) message += ` (${fields.join("; ")})`;
  }
  return new ApiError(response.status, error.code || `http_${response.status}`, message, error);
}

export async function api(method, path, body, extraHeaders) {
  const response = await send(method, path, body, extraHeaders, "application/json");
  if (!response.ok) throw await failure(response);
  try {
    return await response.json();
  } catch (_) {
    return null;
  }
}

/** A file the API makes (CSV): fetched with the token (a bare link could not carry it), then
 * saved from a Blob under the name the API gives. */
export async function download(path, fallbackName) {
  const response = await send("GET", path, undefined, undefined, "text/csv");
  if (!response.ok) throw await failure(response);
  const blob = await response.blob();
  const disposition = response.headers.get("Content-Disposition") || "";
  const named = disposition.match(/filename="([^"]+)"/);
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: named ? named[1] : fallbackName, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return blob.size;
}

// ---- session ---------------------------------------------------------------------------

export function showSignIn(message, tone = "error") {
  stopView();
  $("view").replaceChildren();
  hideBanner();
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  const notice = $("sign-in-message");
  notice.textContent = message || "";
  notice.className = tone === "info" ? "notice" : "notice error";
  notice.hidden = !message;
  $("token").focus();
}

export function signOut(message, tone) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.me = null;
  $("whoami").hidden = true;
  showSignIn(message, tone);
}

export function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = false;
}

export function hideBanner() {
  $("banner").hidden = true;
}

/** For the catch of a click handler: a 401 already signed out, anything else is said. */
export function report(error) {
  if (error.status !== 401) showBanner(error.message);
}

// ---- the current view and its polling ----------------------------------------------------

let current = null; // { view, timer, busy, again }

export function stopView() {
  if (current) clearTimeout(current.timer);
  current = null;
  $("live-indicator").hidden = true;
}

/** Shows `view` ({root, title, refresh, live, onIdentity}) and starts following it. */
export function showView(view) {
  current = { view, timer: null, busy: false, again: false };
  document.title = `${view.title} · reimage`;
  $("view").replaceChildren(view.root);
  window.scrollTo(0, 0);
  refreshNow();
}

/** Refresh the current view now (after an action too); one refresh at a time. */
export async function refreshNow() {
  const entry = current;
  if (!entry) return;
  if (entry.busy) {
    entry.again = true;
    return;
  }
  entry.busy = true;
  clearTimeout(entry.timer);
  try {
    await entry.view.refresh();
    if (current === entry) hideBanner();
  } catch (error) {
    if (current === entry && error.status !== 401) showBanner(error.message);
  } finally {
    entry.busy = false;
  }
  if (current !== entry) return;
  if (entry.again) {
    entry.again = false;
    refreshNow();
    return;
  }
  schedule(entry);
}

function schedule(entry) {
  clearTimeout(entry.timer);
  // Polls only while someone can see it and something can still change.
  const live = !document.hidden && entry.view.live();
  $("live-indicator").hidden = !live;
  if (live) entry.timer = setTimeout(refreshNow, POLL_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!current) return;
  if (document.hidden) {
    clearTimeout(current.timer);
    $("live-indicator").hidden = true;
  } else {
    refreshNow();
  }
});
