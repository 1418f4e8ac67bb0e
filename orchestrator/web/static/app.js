/*
 * reimage operator page: batches, one batch with its waves and servers, one server's timeline.
 * Plain JavaScript, no build step, no third-party code.
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
(() => {
  "use strict";

  const TOKEN_KEY = "reimage.api-token";
  const POLL_MS = 2000;
  const SEARCH_DEBOUNCE_MS = 300;
  const BATCH_PAGE = 50;
  const SERVER_PAGE = 100;
  const HISTORY_PAGE = 1000;
  // orchestrator/domain/states.py, in the order a bar shows them: what is done first.
  const SERVER_STATES = [
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
  const ACTIVE_SERVER_STATES = new Set(["pending", "submitting", "backing_up", "running", "verifying"]);
  const TERMINAL_BATCH_STATES = new Set(["succeeded", "partially_failed", "aborted", "cancelled"]);
  const SERVER_ID_PREFIX = /^[0-9a-f-]{0,36}$/;

  const $ = (id) => document.getElementById(id);

  // ---- DOM -------------------------------------------------------------------------------

  /** An element; children are nodes or text (always inserted as text, never parsed). */
  function el(tag, attrs, ...children) {
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

  const short = (id) => (id ? String(id).slice(0, 8) : "");
  const dash = (value) =>
    value === null || value === undefined || value === "" ? el("span", { class: "muted" }, "—") : value;
  const words = (code) => String(code).replace(/_/g, " ");

  function time(iso) {
    if (!iso) return el("span", { class: "muted" }, "—");
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return el("span", {}, iso);
    const p = (n) => String(n).padStart(2, "0");
    const text =
      `${date.getFullYear()}-${p(date.getMonth() + 1)}-${p(date.getDate())} ` +
      `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
    return el("time", { datetime: iso, title: iso }, text);
  }

  function badge(state, testid) {
    return el("span", { class: `badge st-${state}`, testid: testid || "state-badge" }, words(state));
  }

  /** One bar, a segment per server state, widths in proportion to `total`. */
  function stackedBar(counts, total, testid) {
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

  const done = (counts) =>
    (counts.succeeded || 0) + (counts.failed || 0) + (counts.cancelled || 0) + (counts.skipped || 0);

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
  }

  // ---- API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  let signingIn = false;
  // The signed-in token as the API describes it (GET /whoami): its name, role and projects.
  let me = null;

  const ROLE_RANK = { viewer: 0, operator: 1, approver: 2, admin: 3 };

  /** Whether the controls are worth showing: a viewer's clicks would only get 403s. */
  function canOperate() {
    return me !== null && me.role !== "viewer";
  }

  /** Whether the signed-in token may do what needs `role` (operator unless said). */
  function mayDo(role) {
    return me !== null && (ROLE_RANK[me.role] || 0) >= ROLE_RANK[role || "operator"];
  }

  async function loadMe() {
    me = await api("GET", "/whoami");
    const who = $("whoami");
    const scope = me.projects ? ` · ${me.projects.length} project(s)` : "";
    who.textContent = `${me.name} · ${me.role}${scope}`;
    who.hidden = false;
    if (current && current.view.onIdentity) current.view.onIdentity();
  }

  async function api(method, path, body) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      showSignIn("Sign in to continue.", "info");
      throw new ApiError(401, "unauthorized", "not signed in");
    }
    const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
    // credentials: "omit": nothing ambient goes with the call, only the header above.
    const init = { method, headers, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(`/api/v1${path}`, init);
    } catch (error) {
      throw new ApiError(0, "network", `The API could not be reached (${error.message}).`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401) {
      signOut(
        signingIn
          ? "That token was not accepted. Check it and try again."
          : "The API no longer accepts your token (401). Sign in again.",
      );
      throw new ApiError(401, "unauthorized", "unauthorized");
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      let message = error.message || `HTTP ${response.status} ${response.statusText}`;
      if (error.fields && typeof error.fields === "object") {
        const fields = Object.entries(error.fields).map(([k, v]) => `${k}: ${v}`);
        if (fields.length) message += ` (${fields.join("; ")})`;
      }
      throw new ApiError(response.status, error.code || `http_${response.status}`, message);
    }
    return data;
  }

  // ---- session ---------------------------------------------------------------------------

  function showSignIn(message, tone = "error") {
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

  function signOut(message, tone) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    $("whoami").hidden = true;
    showSignIn(message, tone);
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("token");
    const value = input.value.trim();
    if (!value) return;
    const button = event.target.querySelector("button[type=submit]");
    sessionStorage.setItem(TOKEN_KEY, value);
    button.disabled = true;
    signingIn = true;
    try {
      await loadMe(); // proves the token before showing anything
      input.value = "";
      route();
    } catch (error) {
      if (error.status !== 401) signOut(`Could not sign in: ${error.message}`);
    } finally {
      signingIn = false;
      button.disabled = false;
    }
  }

  function showBanner(message) {
    const banner = $("banner");
    banner.textContent = message;
    banner.hidden = false;
  }

  function hideBanner() {
    $("banner").hidden = true;
  }

  // ---- views and polling -----------------------------------------------------------------

  let current = null; // { view, timer, busy, again }

  function stopView() {
    if (current) clearTimeout(current.timer);
    current = null;
    $("live-indicator").hidden = true;
  }

  function parseRoute() {
    const hash = location.hash || "#/";
    let m = hash.match(/^#\/batches\/([0-9a-fA-F-]{36})$/);
    if (m) return { name: "batch", id: m[1].toLowerCase() };
    if (hash === "#/dry-run") return { name: "dry-run" };
    m = hash.match(/^#\/servers\/([^/?#]+)$/);
    if (m) return { name: "server", id: decodeURIComponent(m[1]).toLowerCase() };
    return { name: "batches" };
  }

  function route() {
    stopView();
    if (!sessionStorage.getItem(TOKEN_KEY)) {
      showSignIn();
      return;
    }
    $("sign-in").hidden = true;
    $("sign-out").hidden = false;
    hideBanner();
    // After a reload the token is still in this tab, but who it belongs to must be asked again.
    if (me === null) loadMe().catch(() => {});
    const r = parseRoute();
    const views = {
      batch: () => batchView(r.id),
      server: () => serverView(r.id),
      "dry-run": () => dryRunView(),
    };
    const view = (views[r.name] || listView)();
    current = { view, timer: null, busy: false, again: false };
    document.title = `${view.title} · reimage`;
    $("view").replaceChildren(view.root);
    window.scrollTo(0, 0);
    refreshNow();
  }

  /** Refresh the current view now (after an action too); one refresh at a time. */
  async function refreshNow() {
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

  function pageHead(title, ...rest) {
    return el("div", { class: "page-head" }, el("h1", {}, title), ...rest);
  }

  function table(columns, tbody, testid) {
    return el(
      "div",
      { class: "table-wrap" },
      el(
        "table",
        { class: "table", testid },
        el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.class }, c.label)))),
        tbody,
      ),
    );
  }

  function emptyRow(columns, text, testid) {
    return el("tr", { class: "empty" }, el("td", { colspan: columns, testid }, text));
  }

  // ---- batch list ------------------------------------------------------------------------

  function listView() {
    let items = [];
    let cursor = null;
    let shown = BATCH_PAGE;
    let drawn = "";
    const columns = [
      { label: "Batch" },
      { label: "Project" },
      { label: "Region" },
      { label: "State" },
      { label: "Progress", class: "wide" },
      { label: "Total", class: "num" },
      { label: "Created" },
    ];
    const tbody = el("tbody", { testid: "batch-rows" });
    const count = el("span", { class: "muted", testid: "batch-count" });
    const more = el("button", { type: "button", class: "btn", testid: "batches-more", hidden: true }, "More");
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        const q = new URLSearchParams({ limit: String(BATCH_PAGE), cursor });
        const page = await api("GET", `/batches?${q}`);
        items = items.concat(page.items);
        cursor = page.next_cursor;
        shown = items.length;
        draw();
      } catch (error) {
        if (error.status !== 401) showBanner(error.message);
      } finally {
        more.disabled = false;
      }
    });
    const root = el(
      "div",
      { class: "page", testid: "batch-list" },
      pageHead("Batches", count, el("a", { href: "#/dry-run", class: "btn", testid: "dry-run-link" }, "Pre-flight check")),
      el("div", { class: "card flush" }, table(columns, tbody, "batch-table")),
      el("div", { class: "more" }, more),
    );

    function row(b) {
      const total = b.total || 0;
      return el(
        "tr",
        { testid: "batch-row", "data-batch-id": b.id },
        el("td", {}, el("a", { href: `#/batches/${b.id}`, class: "mono", title: b.id, testid: "batch-link" }, short(b.id))),
        el("td", { class: "mono ellipsis", title: b.project_id }, b.project_id),
        el("td", {}, b.region),
        el("td", {}, badge(b.state)),
        el(
          "td",
          { class: "wide" },
          el("div", { class: "bar-cell" }, stackedBar(b.counts, total), el("span", { class: "bar-label" }, `${done(b.counts)}/${total}`)),
        ),
        el("td", { class: "num" }, total),
        el("td", { class: "nowrap" }, time(b.created_at)),
      );
    }

    function draw() {
      const signature = JSON.stringify([items, cursor]);
      if (signature === drawn) return; // unchanged: leave the DOM (and any selection) alone
      drawn = signature;
      tbody.replaceChildren(
        ...(items.length ? items.map(row) : [emptyRow(columns.length, "No batches yet.", "batches-empty")]),
      );
      more.hidden = !cursor;
      count.textContent = `${items.length}${cursor ? "+" : ""} shown`;
    }

    async function refresh() {
      const page = await api("GET", `/batches?limit=${Math.min(500, shown)}`);
      items = page.items;
      cursor = page.next_cursor;
      draw();
    }

    return { root, title: "Batches", refresh, live: () => true };
  }

  // ---- pre-flight (dry run) ---------------------------------------------------------------

  const DRY_RUN_TEMPLATE = {
    project_id: "",
    region: "",
    servers: [],
    os_change: { imageid: "", keyname: "", mode: "withStopServer" },
    policy: { on_incompatible: "reject" },
  };
  const FIRST_OF_EACH_CODE = 5;

  function dryRunView() {
    const input = el("textarea", {
      class: "mono request",
      rows: "14",
      spellcheck: "false",
      "aria-label": "Batch request (JSON)",
      testid: "dry-run-request",
    });
    input.value = JSON.stringify(DRY_RUN_TEMPLATE, null, 2);
    const run = el("button", { type: "button", class: "btn btn-primary", testid: "dry-run-submit" }, "Run pre-flight");
    const status = el("span", { class: "muted", testid: "dry-run-status" });
    const results = el("div", { testid: "dry-run-results" });
    run.addEventListener("click", async () => {
      let body;
      try {
        body = JSON.parse(input.value);
      } catch (error) {
        status.textContent = `Not valid JSON: ${error.message}`;
        return;
      }
      run.disabled = true;
      status.textContent = "Reading the fleet…";
      try {
        const report = await api("POST", "/batches?dry_run=true", body);
        status.textContent = `${report.total} servers checked with ${report.cloud_calls.total} cloud calls; nothing stored, nothing sent.`;
        results.replaceChildren(...drawReport(report));
      } catch (error) {
        if (error.status !== 401) status.textContent = error.message;
      } finally {
        run.disabled = false;
      }
    });
    const root = el(
      "div",
      { class: "page", testid: "dry-run" },
      pageHead("Pre-flight check"),
      el(
        "div",
        { class: "card" },
        el("p", { class: "muted" }, "A batch request as POST /api/v1/batches takes it: every server is judged against the cloud's rules, nothing is sent."),
        input,
        el("div", { class: "actions" }, run, status),
      ),
      results,
    );

    function countTable(title, counts, testid) {
      const rows = Object.entries(counts).sort((a, b) => b[1] - a[1]);
      return table(
        [{ label: title }, { label: "Servers", class: "num" }],
        el("tbody", {}, rows.map(([k, v]) => el("tr", { testid: `${testid}-row`, "data-key": k }, el("td", { class: "mono" }, k), el("td", { class: "num" }, v)))),
        testid,
      );
    }

    function drawReport(report) {
      const byCode = new Map();
      for (const server of report.servers) {
        for (const reason of server.reasons || []) {
          if (!byCode.has(reason.code)) byCode.set(reason.code, []);
          byCode.get(reason.code).push({ server, reason });
        }
      }
      const codeRows = [...byCode.entries()].map(([code, items]) =>
        el(
          "tr",
          { testid: "dry-run-code-row", "data-code": code },
          el("td", { class: "mono code" }, code),
          el("td", { class: "num" }, items.length),
          el("td", {}, items[0].reason.blocking ? "blocks" : "warning"),
          el("td", { class: "mono" }, items.slice(0, FIRST_OF_EACH_CODE).map((i) => el("div", {}, i.server.server_id))),
          el("td", { class: "wide" }, items[0].reason.message),
        ),
      );
      return [
        el("div", { class: "card flush" }, countTable("Verdict", report.verdicts, "dry-run-verdicts")),
        el(
          "div",
          { class: "card flush" },
          table(
            [{ label: "Code" }, { label: "Servers", class: "num" }, { label: "Kind" }, { label: "First servers" }, { label: "Why", class: "wide" }],
            el("tbody", {}, codeRows.length ? codeRows : [emptyRow(5, "No reason to report: every server can take this change.", "dry-run-no-codes")]),
            "dry-run-codes",
          ),
        ),
      ];
    }

    return { root, title: "Pre-flight check", refresh: async () => {}, live: () => false };
  }

  // ---- one batch -------------------------------------------------------------------------

  const ACTIONS = [
    {
      name: "pause",
      label: "Pause",
      kind: "btn",
      shows: (b) => ["pending", "running"].includes(b.state) && !b.cancel_requested,
    },
    {
      name: "resume",
      label: "Resume",
      kind: "btn btn-primary",
      // An approval gate opens with approvals, never with a resume.
      shows: (b) => b.state === "paused" && !b.cancel_requested && (b.approval_gate === null || b.approval_gate === undefined),
    },
    {
      name: "cancel",
      label: "Cancel",
      kind: "btn btn-danger",
      shows: (b) => !TERMINAL_BATCH_STATES.has(b.state) && !b.cancel_requested,
      confirm: (b) =>
        `Cancel batch ${short(b.id)}? Servers not yet sent are cancelled; ` +
        "jobs already running are followed to their end.",
    },
    {
      name: "retry",
      label: "Retry",
      kind: "btn btn-primary",
      shows: (b) =>
        TERMINAL_BATCH_STATES.has(b.state) && (b.counts.failed || 0) + (b.counts.cancelled || 0) > 0,
      confirm: (b) =>
        `Start a new batch with the ${(b.counts.failed || 0) + (b.counts.cancelled || 0)} ` +
        "failed and cancelled servers of this one?",
      body: { states: ["failed", "cancelled"] },
    },
    {
      name: "approve",
      label: "Approve",
      kind: "btn btn-primary",
      role: "approver",
      shows: (b) => b.approval_gate !== null && b.approval_gate !== undefined && me !== null && me.name !== b.submitted_by,
      prompt: "Approve: a comment for the record (optional)",
    },
    {
      name: "reject",
      label: "Reject",
      kind: "btn btn-danger",
      role: "approver",
      shows: (b) => b.approval_gate !== null && b.approval_gate !== undefined,
      prompt: "Reject (the batch is cancelled): why?",
    },
    {
      name: "rollback",
      label: "Roll back failed",
      kind: "btn btn-danger",
      // Failed servers that were sent a change have an image to go back to.
      shows: (b) => TERMINAL_BATCH_STATES.has(b.state) && b.kind !== "rollback" && (b.counts.failed || 0) > 0,
      confirm: (b) =>
        `Start a rollback batch: each of the ${b.counts.failed || 0} failed servers of this one ` +
        "that was sent a change goes back to the image it ran before (its backup image when one was made)?",
      body: { states: ["failed"] },
    },
  ];

  function batchView(batchId) {
    let batch = null;
    const pending = new Set(); // actions sent, not yet answered
    const state = el("span", { class: "head-badge" });
    const meta = el("dl", { class: "meta", testid: "batch-meta" });
    const notes = el("div", { class: "notes", testid: "batch-notes" });
    const actionError = el("p", { class: "notice error", role: "alert", testid: "action-error", hidden: true });
    const buttons = {};
    for (const action of ACTIONS) {
      const button = el("button", { type: "button", class: action.kind, testid: `action-${action.name}`, hidden: true }, action.label);
      button.addEventListener("click", () => act(action));
      buttons[action.name] = button;
    }
    const progress = el("div", { class: "stat-body" });
    const legend = el("ul", { class: "legend", testid: "batch-counts" });
    const budget = el("div", { class: "stat-body", testid: "error-budget" });
    const flight = el("div", { class: "stat-body", testid: "in-flight" });
    const wave = el("div", { class: "stat-body", testid: "wave-summary" });
    const waves = el("div", { class: "waves", testid: "waves" });
    const servers = serverTable(batchId);

    const root = el(
      "div",
      { class: "page", testid: "batch-page", "data-batch-id": batchId },
      el("nav", { class: "crumbs" }, el("a", { href: "#/", testid: "back-to-batches" }, "Batches"), " / ", el("span", { class: "mono" }, short(batchId))),
      el(
        "div",
        { class: "page-head" },
        el("h1", {}, "Batch ", el("span", { class: "mono", title: batchId }, short(batchId))),
        state,
        el("span", { class: "spacer" }),
        el("div", { class: "actions", testid: "batch-actions" }, Object.values(buttons)),
      ),
      meta,
      actionError,
      notes,
      el(
        "div",
        { class: "stats" },
        el("section", { class: "card stat stat-wide" }, el("h2", {}, "Progress"), progress, legend),
        el("section", { class: "card stat" }, el("h2", {}, "Error budget"), budget),
        el("section", { class: "card stat" }, el("h2", {}, "In flight"), flight),
        el("section", { class: "card stat" }, el("h2", {}, "Current wave"), wave),
      ),
      el("section", { class: "card" }, el("h2", {}, "Waves"), waves),
      servers.root,
    );

    async function act(action) {
      if (!batch || pending.size) return;
      if (action.confirm && !window.confirm(action.confirm(batch))) return;
      let body = action.body || {};
      if (action.prompt) {
        const comment = window.prompt(action.prompt, "");
        if (comment === null) return;
        body = comment ? { comment } : {};
      }
      pending.add(action.name);
      actionError.hidden = true;
      drawButtons();
      try {
        const answer = await api("POST", `/batches/${batchId}/${action.name}`, body);
        if (action.name === "retry" || action.name === "rollback") {
          location.hash = `#/batches/${answer.id}`;
          return;
        }
      } catch (error) {
        if (error.status === 401) return;
        actionError.textContent = `${action.label} failed: ${error.message}`;
        actionError.hidden = false;
      } finally {
        pending.delete(action.name);
      }
      drawButtons();
      refreshNow();
    }

    function drawButtons() {
      for (const action of ACTIONS) {
        const button = buttons[action.name];
        button.hidden = !batch || !mayDo(action.role) || !action.shows(batch);
        button.disabled = pending.size > 0;
        button.classList.toggle("working", pending.has(action.name));
      }
    }

    function fact(term, value, testid) {
      return el("div", { class: "fact" }, el("dt", {}, term), el("dd", { testid }, value));
    }

    function drawMeta(b) {
      const items = [
        fact("ID", el("span", { class: "mono" }, b.id), "batch-id"),
        fact("Project", el("span", { class: "mono" }, b.project_id)),
        fact("Region", b.region),
        fact("Image", el("span", { class: "mono" }, dash(b.os_change && b.os_change.imageid))),
        fact("Created", time(b.created_at)),
        fact("Updated", time(b.updated_at)),
      ];
      if (b.finished_at) items.push(fact("Finished", time(b.finished_at)));
      const spread = (b.policy && b.policy.spread) || [];
      if (spread.length) items.push(fact("Spread", spread.map((r) => `${r.by} ≤ ${r.max_in_flight}`).join(", "), "spread"));
      if (b.policy && b.policy.waves_by) items.push(fact("Waves by", b.policy.waves_by.by, "waves-by"));
      if (b.kind === "rollback") items.push(fact("Kind", el("span", { class: "badge st-failed", testid: "batch-kind" }, "rollback")));
      if (b.parent_id) {
        items.push(fact(b.kind === "rollback" ? "Rolls back" : "Retry of", el("a", { href: `#/batches/${b.parent_id}`, class: "mono", testid: "parent-link" }, short(b.parent_id))));
      }
      meta.replaceChildren(...items);
    }

    function drawNotes(b) {
      const list = [];
      if (b.state === "paused") {
        const reason = b.pause_reason || "no reason given";
        const who = b.paused_by && !reason.includes(b.paused_by) ? ` (by ${b.paused_by})` : "";
        const next = b.approval_gate === null || b.approval_gate === undefined ? "Resume to continue." : "An approver must approve (or reject) it.";
        list.push(el("p", { class: "notice warn", testid: "pause-reason" }, `Paused: ${reason}${who}. ${next}`));
      }
      if (b.abort_reason) {
        list.push(el("p", { class: "notice error", testid: "abort-reason" }, `Aborted: ${words(b.abort_reason)}`));
      }
      if (b.cancel_requested && !TERMINAL_BATCH_STATES.has(b.state)) {
        list.push(el("p", { class: "notice warn", testid: "cancel-requested" }, "Cancel requested: servers not yet sent are cancelled; running jobs are followed to their end."));
      }
      if (b.broken) {
        list.push(el("p", { class: "notice error", testid: "broken" }, `${b.broken} server(s) were left in ERROR by their job.`));
      }
      if (b.waiting_for_window) {
        list.push(el("p", { class: "notice warn", testid: "waiting-for-window" }, `Waiting for its maintenance window: nothing new is sent before ${time(b.window_opens_at)}.`));
      }
      const decisions = (b.approvals && b.approvals.decisions) || [];
      if (decisions.length) {
        list.push(
          el(
            "ul",
            { class: "notice", testid: "approvals" },
            decisions.map((d) =>
              el("li", {}, `${d.decision} ${d.gate === 0 ? "before the start" : `after wave ${d.gate}`} by `, el("strong", {}, d.principal), ` at ${time(d.at)}`, d.comment ? ` — ${d.comment}` : ""),
            ),
          ),
        );
      }
      if (b.rolling_back) {
        list.push(el("p", { class: "notice warn", testid: "rolling-back" }, `${b.rolling_back} server(s) failed their health gate and are being changed back to their previous image.`));
      }
      notes.replaceChildren(...list);
    }

    function drawStats(b) {
      const total = b.total || 0;
      const finished = done(b.counts);
      const pct = total ? Math.round((100 * finished) / total) : 0;
      progress.replaceChildren(
        el("div", { class: "big" }, el("span", { testid: "done-count" }, `${finished} of ${total}`), el("span", { class: "muted" }, ` done · ${pct}%`)),
        stackedBar(b.counts, total, "batch-progress"),
      );
      legend.replaceChildren(
        ...SERVER_STATES.map((s) =>
          el("li", { class: (b.counts[s] || 0) === 0 ? "zero" : "" }, el("span", { class: `swatch st-${s}` }), el("span", { class: "legend-name" }, s), el("strong", { testid: `count-${s}` }, b.counts[s] || 0)),
        ),
      );
      const eb = b.error_budget || {};
      const allowed = eb.allowed === null || eb.allowed === undefined ? null : eb.allowed;
      budget.replaceChildren(
        el("div", { class: "big" }, el("span", { testid: "budget-used" }, eb.used || 0), el("span", { class: "muted" }, " failed")),
        el(
          "dl",
          { class: "mini" },
          fact("Allowed", allowed === null ? "no limit" : allowed, "budget-allowed"),
          fact("Left", allowed === null ? "—" : eb.left, "budget-left"),
        ),
      );
      const inFlight = ["submitting", "backing_up", "running", "verifying"].reduce((n, s) => n + (b.counts[s] || 0), 0);
      flight.replaceChildren(
        el("div", { class: "big" }, el("span", { testid: "in-flight-now" }, inFlight), el("span", { class: "muted" }, ` of ${b.max_in_flight} max`)),
        el("dl", { class: "mini" }, fact("Max in flight", b.max_in_flight, "max-in-flight"), fact("Pending", b.counts.pending || 0)),
      );
      wave.replaceChildren(
        el("div", { class: "big" }, el("span", { testid: "current-wave" }, b.current_wave), el("span", { class: "muted" }, ` of ${b.waves_total}`)),
        el("dl", { class: "mini" }, fact("Current wave", b.current_wave), fact("Waves", b.waves_total, "waves-total")),
      );
    }

    function drawWaves(b) {
      const list = b.waves || [];
      waves.replaceChildren(
        ...list.map((w) =>
          el(
            "div",
            { class: `wave${w.wave === b.current_wave && !TERMINAL_BATCH_STATES.has(b.state) ? " current" : ""}`, testid: "wave-row", "data-wave": w.wave },
            el("span", { class: "wave-name" }, `Wave ${w.wave}`),
            stackedBar(w.counts, w.size, "wave-bar"),
            el("span", { class: "bar-label" }, `${done(w.counts)}/${w.size}`),
          ),
        ),
      );
    }

    async function refresh() {
      const answer = await api("GET", `/batches/${batchId}`);
      batch = answer;
      state.replaceChildren(badge(answer.state, "batch-state"));
      drawMeta(answer);
      drawNotes(answer);
      drawStats(answer);
      drawWaves(answer);
      drawButtons();
      await servers.refresh();
    }

    return {
      root,
      title: `Batch ${short(batchId)}`,
      refresh,
      onIdentity: drawButtons,
      live: () => batch === null || !TERMINAL_BATCH_STATES.has(batch.state) || pending.size > 0,
    };
  }

  /** A batch's servers: state filter, id-prefix search, paging. The inputs are built once and
   * never redrawn, so a refresh does not lose what the operator is typing. */
  function serverTable(batchId) {
    let items = [];
    let cursor = null;
    let shown = SERVER_PAGE;
    let stateFilter = "";
    let prefix = "";
    let sequence = 0; // answers to older requests (another filter) are dropped
    let drawn = "";
    const columns = [
      { label: "Server" },
      { label: "State" },
      { label: "Wave", class: "num" },
      { label: "Attempt", class: "num" },
      { label: "Job" },
      { label: "Job status" },
      { label: "Image" },
      { label: "Health" },
      { label: "Error code" },
      { label: "Error message", class: "wide" },
    ];
    const select = el(
      "select",
      { testid: "state-filter", "aria-label": "Filter by state" },
      el("option", { value: "" }, "All states"),
      SERVER_STATES.map((s) => el("option", { value: s }, s)),
    );
    const search = el("input", {
      type: "search",
      placeholder: "Server id prefix…",
      "aria-label": "Search by server id prefix",
      testid: "server-search",
      spellcheck: "false",
      autocomplete: "off",
      maxlength: "36",
    });
    const hint = el("span", { class: "hint", testid: "search-hint", hidden: true }, "A server id has only 0-9, a-f and -");
    const summary = el("span", { class: "muted", testid: "servers-summary" });
    const tbody = el("tbody", { testid: "server-rows" });
    const more = el("button", { type: "button", class: "btn", testid: "servers-more", hidden: true }, "More");

    select.addEventListener("change", () => {
      stateFilter = select.value;
      restart();
    });
    search.addEventListener(
      "input",
      debounce(() => {
        const value = search.value.trim().toLowerCase();
        const valid = SERVER_ID_PREFIX.test(value);
        hint.hidden = valid;
        if (!valid || value === prefix) return;
        prefix = value;
        restart();
      }, SEARCH_DEBOUNCE_MS),
    );
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        await load(true);
      } catch (error) {
        if (error.status !== 401) showBanner(error.message);
      } finally {
        more.disabled = false;
      }
    });

    const root = el(
      "section",
      { class: "card flush", testid: "servers" },
      el("div", { class: "card-head" }, el("h2", {}, "Servers"), summary, el("span", { class: "spacer" }), hint, search, select),
      table(columns, tbody, "server-table"),
      el("div", { class: "more" }, more),
    );

    function restart() {
      shown = SERVER_PAGE;
      load(false).catch((error) => {
        if (error.status !== 401) showBanner(error.message);
      });
    }

    async function load(append) {
      const mine = ++sequence;
      const q = new URLSearchParams();
      if (stateFilter) q.set("state", stateFilter);
      if (prefix) q.set("server", prefix);
      q.set("limit", String(append ? SERVER_PAGE : Math.min(1000, shown)));
      if (append && cursor) q.set("cursor", cursor);
      const page = await api("GET", `/batches/${batchId}/servers?${q}`);
      if (mine !== sequence) return;
      items = append ? items.concat(page.items) : page.items;
      cursor = page.next_cursor;
      shown = Math.max(SERVER_PAGE, items.length);
      draw();
    }

    function row(s) {
      return el(
        "tr",
        { testid: "server-row", "data-server-id": s.server_id, "data-state": s.state },
        el("td", {}, el("a", { href: `#/servers/${encodeURIComponent(s.server_id)}`, class: "mono", testid: "server-link" }, s.server_id)),
        el("td", {}, badge(s.state)),
        el("td", { class: "num" }, s.wave),
        el("td", { class: "num" }, s.attempt),
        el("td", { class: "mono", title: s.job_id || "" }, s.job_id ? short(s.job_id) : dash(null)),
        el("td", {}, dash(s.job_status)),
        el("td", { class: "mono", title: s.image_id || "", testid: "server-image" }, s.image_id ? short(s.image_id) : dash(null)),
        el("td", { testid: "server-health", title: healthTitle(s) }, dash(healthText(s))),
        el("td", { class: s.error_code ? "mono code" : "mono", testid: "error-code" }, dash(s.error_code)),
        el("td", { class: "wide ellipsis", title: s.error_message || "", testid: "error-message" }, dash(s.error_message)),
      );
    }

    function draw() {
      const signature = JSON.stringify([items, cursor]);
      if (signature === drawn) return;
      drawn = signature;
      const filtered = stateFilter || prefix;
      tbody.replaceChildren(
        ...(items.length
          ? items.map(row)
          : [emptyRow(columns.length, filtered ? "No server matches." : "No servers.", "servers-empty")]),
      );
      more.hidden = !cursor;
      summary.textContent = `${items.length}${cursor ? "+" : ""} shown`;
    }

    return { root, refresh: () => load(false) };
  }

  /** The health gate in a few words: probes so far, healthy in a row, the last answer; and a
   * backup or a rollback under way. */
  function healthText(s) {
    const parts = [];
    if (s.phase === "rollback") parts.push("rolling back");
    if (s.backup && s.backup.status) parts.push(`backup ${s.backup.status}`);
    const h = s.health;
    if (h) {
      const log = h.log || {};
      if (h.target_error) parts.push(`cannot probe: ${h.target_error}`);
      else if (!log.count) parts.push("warming up");
      else parts.push(`${log.count} probe${log.count === 1 ? "" : "s"}, last ${log.last ? log.last.detail : "—"}`);
    }
    return parts.join(" · ");
  }

  function healthTitle(s) {
    const h = s.health;
    if (!h) return "";
    const log = h.log || {};
    return `${h.kind || ""} ${h.target || ""} · ${log.streak || 0} healthy in a row`;
  }

  // ---- one server's timeline -------------------------------------------------------------

  /** The cloud's error in a history row's details: an API error (submission), a failed job's
   * code and reason (polling), or the error that made a job vanish. */
  function cloudError(details) {
    if (!details || typeof details !== "object") return {};
    if (details.code || details.message) return { code: details.code, message: details.message };
    const job = details.job;
    if (job && typeof job === "object" && (job.error_code || job.fail_reason)) {
      return { code: job.error_code, message: job.fail_reason };
    }
    const gone = details.job_gone;
    if (gone && typeof gone === "object") return { code: gone.code, message: gone.message };
    return {};
  }

  function serverView(serverId) {
    let items = [];
    let cursor = null;
    let drawn = "";
    const columns = [
      { label: "Time" },
      { label: "Batch" },
      { label: "Change" },
      { label: "Reason" },
      { label: "Attempt", class: "num" },
      { label: "Job" },
      { label: "Cloud code" },
      { label: "Cloud message", class: "wide" },
      { label: "" },
    ];
    const tbody = el("tbody", { testid: "history-rows" });
    const latest = el("span", { class: "head-badge" });
    const summary = el("span", { class: "muted", testid: "history-summary" });
    const more = el("button", { type: "button", class: "btn", testid: "history-more", hidden: true }, "More");
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        const q = new URLSearchParams({ limit: String(HISTORY_PAGE), cursor });
        const page = await api("GET", `/servers/${encodeURIComponent(serverId)}/history?${q}`);
        items = items.concat(page.items);
        cursor = page.next_cursor;
        draw();
      } catch (error) {
        if (error.status !== 401) showBanner(error.message);
      } finally {
        more.disabled = false;
      }
    });

    const root = el(
      "div",
      { class: "page", testid: "server-page", "data-server-id": serverId },
      el("nav", { class: "crumbs" }, el("a", { href: "#/" }, "Batches"), " / server"),
      el("div", { class: "page-head" }, el("h1", {}, "Server ", el("span", { class: "mono", testid: "server-id" }, serverId)), latest),
      el(
        "section",
        { class: "card flush" },
        el("div", { class: "card-head" }, el("h2", {}, "Timeline"), summary),
        table(columns, tbody, "history-table"),
        el("div", { class: "more" }, more),
      ),
    );

    function row(h) {
      const error = cloudError(h.details);
      const hasDetails = h.details && typeof h.details === "object" && Object.keys(h.details).length;
      return el(
        "tr",
        { testid: "history-row", "data-to-state": h.to_state, "data-reason": h.reason },
        el("td", { class: "nowrap" }, time(h.at)),
        el("td", {}, el("a", { href: `#/batches/${h.batch_id}`, class: "mono", title: h.batch_id, testid: "history-batch" }, short(h.batch_id))),
        el(
          "td",
          { class: "nowrap" },
          h.from_state ? badge(h.from_state, "from-state") : el("span", { class: "muted" }, "new"),
          el("span", { class: "arrow", "aria-label": "to" }, "→"),
          badge(h.to_state, "to-state"),
        ),
        el("td", { class: "nowrap", testid: "history-reason" }, words(h.reason)),
        el("td", { class: "num" }, h.attempt),
        el("td", { class: "mono", title: h.job_id || "" }, h.job_id ? short(h.job_id) : dash(null)),
        el("td", { class: error.code ? "mono code" : "mono", testid: "cloud-code" }, dash(error.code)),
        el("td", { class: "wide", testid: "cloud-message" }, dash(error.message)),
        el(
          "td",
          { class: "nowrap" },
          hasDetails
            ? el("details", {}, el("summary", {}, "details"), el("pre", { class: "json" }, JSON.stringify(h.details, null, 2)))
            : null,
        ),
      );
    }

    function draw() {
      const signature = JSON.stringify([items, cursor]);
      if (signature === drawn) return; // keeps an opened "details" open
      drawn = signature;
      tbody.replaceChildren(
        ...(items.length ? items.map(row) : [emptyRow(columns.length, "No history for this server.", "history-empty")]),
      );
      const last = items[items.length - 1];
      latest.replaceChildren(...(last ? [badge(last.to_state, "server-state")] : []));
      more.hidden = !cursor;
      summary.textContent = `${items.length}${cursor ? "+" : ""} changes`;
    }

    async function refresh() {
      const page = await api("GET", `/servers/${encodeURIComponent(serverId)}/history?limit=${HISTORY_PAGE}`);
      if (!cursor || items.length <= page.items.length) {
        items = page.items;
        cursor = page.next_cursor;
      }
      draw();
    }

    return {
      root,
      title: `Server ${short(serverId)}`,
      refresh,
      // Followed while its latest row says it is pending or in flight.
      live: () => items.length === 0 || ACTIVE_SERVER_STATES.has(items[items.length - 1].to_state),
    };
  }

  // ---- start -----------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("Signed out.", "info"));
    window.addEventListener("hashchange", route);
    route();
  });
})();
