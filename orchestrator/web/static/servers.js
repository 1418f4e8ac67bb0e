/* A batch's servers (filter by state or code, id-prefix search, paging, CSV export) and one
 * server's timeline with what its batch knows of it (pre-flight facts, health, rollback). */
import {
  ACTIVE_SERVER_STATES,
  SEARCH_DEBOUNCE_MS,
  SERVER_STATES,
  api,
  badge,
  dash,
  debounce,
  download,
  el,
  emptyRow,
  fact,
  labelRow,
  report,
  short,
  showBanner,
  table,
  time,
  words,
} from "./core.js";

const SERVER_PAGE = 100;
const HISTORY_PAGE = 1000;
const SERVER_ID_PREFIX = /^[0-9a-f-]{0,36}$/;

const serverHref = (serverId, batchId) =>
  `#/servers/${encodeURIComponent(serverId)}${batchId ? `?batch=${batchId}` : ""}`;

const SERVER_COLUMNS = [
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

/** A batch's servers. The inputs are built once and never redrawn, so a refresh does not lose
 * what the operator is typing. */
export function serverTable(batchId) {
  let items = [];
  let cursor = null;
  let shown = SERVER_PAGE;
  let stateFilter = "";
  let codeFilter = "";
  let prefix = "";
  let sequence = 0; // answers to older requests (another filter) are dropped
  let drawn = "";
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
  const chip = el("span", { class: "chip", testid: "code-filter", hidden: true });
  const summary = el("span", { class: "muted", testid: "servers-summary" });
  const exportButton = el("button", { type: "button", class: "btn", testid: "export-csv", title: "The servers this filter shows (state and code; the search is not applied)" }, "Export CSV");
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
      report(error);
    } finally {
      more.disabled = false;
    }
  });
  exportButton.addEventListener("click", () => exportCsv(stateFilter, codeFilter));

  const root = el(
    "section",
    { class: "card flush", testid: "servers" },
    el("div", { class: "card-head filters" }, el("h2", {}, "Servers"), summary, chip, el("span", { class: "spacer" }), hint, search, select, exportButton),
    table(SERVER_COLUMNS, tbody, "server-table", { stack: true }),
    el("div", { class: "more" }, more),
  );

  function restart() {
    shown = SERVER_PAGE;
    load(false).catch(report);
  }

  function drawChip() {
    chip.hidden = !codeFilter;
    chip.replaceChildren(
      "code ",
      el("span", { class: "mono" }, codeFilter),
      el(
        "button",
        {
          type: "button",
          class: "chip-clear",
          "aria-label": "Clear the code filter",
          testid: "code-filter-clear",
          onclick: () => {
            codeFilter = "";
            drawChip();
            restart();
          },
        },
        "×",
      ),
    );
  }

  /** A failure group clicked: its servers, and the table brought into view. */
  function showGroup(state, code) {
    stateFilter = state || "";
    select.value = stateFilter;
    codeFilter = code || "";
    drawChip();
    restart();
    root.scrollIntoView({ block: "start" });
  }

  async function exportCsv(state, code) {
    const q = new URLSearchParams();
    if (state) q.set("state", state);
    if (code) q.set("code", code);
    const name = ["batch", batchId, state, code].filter(Boolean).join("-");
    exportButton.disabled = true;
    try {
      await download(`/batches/${batchId}/servers.csv${q.toString() ? `?${q}` : ""}`, `${name}.csv`);
    } catch (error) {
      if (error.status !== 401) showBanner(`Export failed: ${error.message}`);
    } finally {
      exportButton.disabled = false;
    }
  }

  async function load(append) {
    const mine = ++sequence;
    const q = new URLSearchParams();
    if (stateFilter) q.set("state", stateFilter);
    if (codeFilter) q.set("code", codeFilter);
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
    const imageTitle = [s.image_id ? `to ${s.image_id}` : "", s.previous_image ? `from ${s.previous_image}` : ""].filter(Boolean).join(", ");
    return labelRow(
      SERVER_COLUMNS,
      el(
        "tr",
        { testid: "server-row", "data-server-id": s.server_id, "data-state": s.state, "data-code": s.error_code || "" },
        el("td", {}, el("a", { href: serverHref(s.server_id, batchId), class: "mono", testid: "server-link" }, s.server_id)),
        el("td", {}, badge(s.state)),
        el("td", {}, dash(s.wave)),
        el("td", {}, s.attempt),
        el("td", { class: "mono", title: s.job_id || "" }, s.job_id ? short(s.job_id) : dash(null)),
        el("td", {}, dash(s.job_status)),
        el("td", { class: "mono", title: imageTitle, testid: "server-image" }, s.image_id ? short(s.image_id) : dash(null)),
        el("td", { testid: "server-health", title: healthTitle(s) }, dash(healthText(s))),
        el("td", { class: s.error_code ? "mono code" : "mono", testid: "error-code" }, dash(s.error_code)),
        el("td", { class: "ellipsis", title: s.error_message || "", testid: "error-message" }, dash(s.error_message)),
      ),
    );
  }

  function draw() {
    const signature = JSON.stringify([items, cursor]);
    if (signature === drawn) return;
    drawn = signature;
    const filtered = stateFilter || prefix || codeFilter;
    tbody.replaceChildren(
      ...(items.length ? items.map(row) : [emptyRow(SERVER_COLUMNS.length, filtered ? "No server matches." : "No servers.", "servers-empty")]),
    );
    more.hidden = !cursor;
    summary.textContent = `${items.length}${cursor ? "+" : ""} shown`;
  }

  return { root, refresh: () => load(false), showGroup, exportCsv };
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

const HISTORY_COLUMNS = [
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

/** What the batch knows of this server: its state there, images, pre-flight facts, domains,
 * health probes, backup. */
function drawServerFacts(s) {
  const items = [
    fact("State", badge(s.state, "in-batch-state")),
    fact("Wave", dash(s.wave)),
    fact("Phase", s.phase === "rollback" ? el("span", { class: "badge st-failed", testid: "server-phase" }, "rollback") : el("span", { testid: "server-phase" }, s.phase)),
    fact("Image", el("span", { class: "mono" }, dash(s.image_id)), "server-target-image"),
    fact("Previous image", el("span", { class: "mono" }, dash(s.previous_image)), "server-previous-image"),
  ];
  if (s.error_code) items.push(fact("Error", `${s.error_code}${s.error_message ? `: ${s.error_message}` : ""}`, "server-error"));
  const facts = s.facts || {};
  const shown = ["name", "status", "architecture", "availability_zone", "charging_mode", "system_disk_gb", "current_image_id", "flavor_id", "locked"];
  const factItems = shown.filter((k) => facts[k] !== undefined && facts[k] !== null).map((k) => fact(words(k), String(facts[k])));
  for (const [kind, value] of Object.entries(s.domains || {})) factItems.push(fact(words(kind), value));
  const parts = [el("dl", { class: "meta" }, items)];
  if (factItems.length) parts.push(el("h3", {}, "Pre-flight facts at submission"), el("dl", { class: "meta", testid: "server-facts" }, factItems));
  if (s.health) {
    const h = s.health;
    const log = h.log || {};
    parts.push(
      el("h3", {}, "Health gate"),
      el(
        "dl",
        { class: "meta", testid: "server-health-facts" },
        fact("Probe", `${h.kind || ""} ${h.target || h.target_error || ""}`),
        fact("Probes", log.count || 0),
        fact("Healthy in a row", log.streak || 0),
        fact("Last answer", log.last ? log.last.detail : "—", "server-health-last"),
      ),
    );
  }
  if (s.backup) {
    parts.push(el("h3", {}, "Backup"), el("dl", { class: "meta", testid: "server-backup" }, Object.entries(s.backup).filter(([, v]) => v !== null && typeof v !== "object").map(([k, v]) => fact(words(k), String(v)))));
  }
  return parts;
}

export function serverView(serverId, fromBatch) {
  let items = [];
  let cursor = null;
  let drawn = "";
  let batchId = fromBatch || null;
  let inBatch = null;
  const tbody = el("tbody", { testid: "history-rows" });
  const latest = el("span", { class: "head-badge" });
  const summary = el("span", { class: "muted", testid: "history-summary" });
  const crumbs = el("nav", { class: "crumbs", testid: "crumbs" });
  const factsCard = el("section", { class: "card", testid: "server-in-batch", hidden: true });
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
      report(error);
    } finally {
      more.disabled = false;
    }
  });

  const root = el(
    "div",
    { class: "page", testid: "server-page", "data-server-id": serverId },
    crumbs,
    el("div", { class: "page-head" }, el("h1", {}, "Server ", el("span", { class: "mono break", testid: "server-id" }, serverId)), latest),
    factsCard,
    el(
      "section",
      { class: "card flush" },
      el("div", { class: "card-head" }, el("h2", {}, "Timeline"), summary),
      table(HISTORY_COLUMNS, tbody, "history-table", { stack: true }),
      el("div", { class: "more" }, more),
    ),
  );

  function drawCrumbs() {
    crumbs.replaceChildren(
      el("a", { href: "#/" }, "Batches"),
      " / ",
      batchId ? el("a", { href: `#/batches/${batchId}`, class: "mono", testid: "crumb-batch", title: batchId }, `batch ${short(batchId)}`) : null,
      batchId ? " / " : null,
      "server",
    );
  }
  drawCrumbs();

  /** A history row, and a row under it for its details, opened by its button: full width, so
   * the JSON wraps instead of being cut off at the right of a narrow cell. */
  function rows(h) {
    const error = cloudError(h.details);
    const hasDetails = h.details && typeof h.details === "object" && Object.keys(h.details).length;
    const detailRow = hasDetails
      ? el("tr", { class: "details-row", testid: "history-details", hidden: true }, el("td", { colspan: HISTORY_COLUMNS.length }, el("pre", { class: "json", testid: "history-json" }, JSON.stringify(h.details, null, 2))))
      : null;
    const toggle = hasDetails
      ? el(
          "button",
          {
            type: "button",
            class: "link-button",
            testid: "details-toggle",
            "aria-expanded": "false",
            onclick: (event) => {
              detailRow.hidden = !detailRow.hidden;
              event.currentTarget.setAttribute("aria-expanded", String(!detailRow.hidden));
              event.currentTarget.textContent = detailRow.hidden ? "details" : "hide details";
            },
          },
          "details",
        )
      : null;
    const main = labelRow(
      HISTORY_COLUMNS,
      el(
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
        el("td", {}, h.attempt),
        el("td", { class: "mono", title: h.job_id || "" }, h.job_id ? short(h.job_id) : dash(null)),
        el("td", { class: error.code ? "mono code" : "mono", testid: "cloud-code" }, dash(error.code)),
        el("td", { testid: "cloud-message" }, dash(error.message)),
        el("td", { class: "nowrap" }, toggle),
      ),
    );
    return detailRow ? [main, detailRow] : [main];
  }

  function draw() {
    const signature = JSON.stringify([items, cursor, inBatch]);
    if (signature === drawn) return; // keeps opened details open
    drawn = signature;
    tbody.replaceChildren(
      ...(items.length ? items.flatMap(rows) : [emptyRow(HISTORY_COLUMNS.length, "No history for this server.", "history-empty")]),
    );
    const last = items[items.length - 1];
    latest.replaceChildren(...(last ? [badge(last.to_state, "server-state")] : []));
    more.hidden = !cursor;
    summary.textContent = `${items.length}${cursor ? "+" : ""} changes`;
    factsCard.hidden = !inBatch;
    if (inBatch) factsCard.replaceChildren(el("h2", {}, "In batch ", el("a", { href: `#/batches/${batchId}`, class: "mono" }, short(batchId))), ...drawServerFacts(inBatch));
  }

  async function refresh() {
    const page = await api("GET", `/servers/${encodeURIComponent(serverId)}/history?limit=${HISTORY_PAGE}`);
    if (!cursor || items.length <= page.items.length) {
      items = page.items;
      cursor = page.next_cursor;
    }
    // Came straight here (a link, a reload): the batch of its latest change.
    if (!batchId && items.length) {
      batchId = items[items.length - 1].batch_id;
      drawCrumbs();
    }
    // The server filter takes an id prefix only: another id is not in any batch's table.
    if (batchId && SERVER_ID_PREFIX.test(serverId)) {
      const q = new URLSearchParams({ server: serverId, limit: "1" });
      const found = await api("GET", `/batches/${batchId}/servers?${q}`).catch(() => null);
      inBatch = found && found.items.length && found.items[0].server_id === serverId ? found.items[0] : null;
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
