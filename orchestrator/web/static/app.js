/*
 * reimage operator page: the router, sign-in, and the JSON pre-flight page. Plain JavaScript
 * modules, no build step, no third-party code. Each view lives in its own module:
 *   core.js    DOM, API calls, session, polling, the form dialog (and the security notes)
 *   list.js    the batch list (filter, search, sort)
 *   batch.js   one batch (controls, rate and ETA, failures by code)
 *   servers.js a batch's servers (CSV export) and one server's timeline
 *   submit.js  a new batch: the form, dry run first, then submit
 *   report.js  a dry run's report and an API refusal's details
 */
import { TOKEN_KEY, UUID, api, el, hideBanner, loadMe, pageHead, session, showSignIn, showView, signOut, stopView, $ } from "./core.js";
import { badBatchView, batchView } from "./batch.js";
import { listView } from "./list.js";
import { drawError, drawReport } from "./report.js";
import { serverView } from "./servers.js";
import { submitView } from "./submit.js";

// ---- pre-flight (dry run) of a request given as JSON ---------------------------------

const DRY_RUN_TEMPLATE = {
  project_id: "",
  region: "",
  servers: [],
  os_change: { imageid: "", keyname: "", mode: "withStopServer" },
  policy: { on_incompatible: "reject" },
};

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
      if (error.status === 401) return;
      status.textContent = error.message;
      results.replaceChildren(drawError(error));
    } finally {
      run.disabled = false;
    }
  });
  const root = el(
    "div",
    { class: "page", testid: "dry-run" },
    el("nav", { class: "crumbs" }, el("a", { href: "#/" }, "Batches"), " / pre-flight check"),
    pageHead("Pre-flight check", el("span", { class: "spacer" }), el("a", { href: "#/submit", class: "btn" }, "Use the form instead")),
    el(
      "div",
      { class: "card" },
      el("p", { class: "muted" }, "A batch request as POST /api/v1/batches takes it: every server is judged against the cloud's rules, nothing is sent."),
      input,
      el("div", { class: "actions" }, run, status),
    ),
    results,
  );
  return { root, title: "Pre-flight check", refresh: async () => {}, live: () => false };
}

// ---- routing ---------------------------------------------------------------------------

function parseRoute() {
  const hash = location.hash || "#/";
  let m = hash.match(/^#\/batches\/([^/?#]*)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    return UUID.test(id) ? { name: "batch", id: id.toLowerCase() } : { name: "bad-batch", id };
  }
  if (hash === "#/dry-run") return { name: "dry-run" };
  if (hash === "#/submit") return { name: "submit" };
  m = hash.match(/^#\/servers\/([^/?#]+)(?:\?batch=([0-9a-fA-F-]{36}))?$/);
  if (m) return { name: "server", id: decodeURIComponent(m[1]).toLowerCase(), batch: m[2] ? m[2].toLowerCase() : null };
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
  if (session.me === null) loadMe().catch(() => {});
  const r = parseRoute();
  const views = {
    batch: () => batchView(r.id),
    "bad-batch": () => badBatchView(r.id),
    server: () => serverView(r.id, r.batch),
    "dry-run": () => dryRunView(),
    submit: () => submitView(),
  };
  showView((views[r.name] || listView)());
}

async function signIn(event) {
  event.preventDefault();
  const input = $("token");
  const value = input.value.trim();
  if (!value) return;
  const button = event.target.querySelector("button[type=submit]");
  sessionStorage.setItem(TOKEN_KEY, value);
  button.disabled = true;
  session.signingIn = true;
  try {
    await loadMe(); // proves the token before showing anything
    input.value = "";
    route();
  } catch (error) {
    if (error.status !== 401) signOut(`Could not sign in: ${error.message}`);
  } finally {
    session.signingIn = false;
    button.disabled = false;
  }
}

// Modules run after the document is parsed (like defer): the elements are there.
$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut("Signed out.", "info"));
window.addEventListener("hashchange", route);
route();
