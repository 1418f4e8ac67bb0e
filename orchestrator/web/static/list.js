/* The batch list: filter by state, search an id or submitter prefix, newest or oldest first. */
import {
  BATCH_STATES,
  SEARCH_DEBOUNCE_MS,
  api,
  badge,
  debounce,
  done,
  el,
  emptyRow,
  labelRow,
  mayDo,
  pageHead,
  refreshNow,
  report,
  short,
  stackedBar,
  table,
  time,
  words,
} from "./core.js";

const BATCH_PAGE = 50;
// Kept while the tab lives: back from a batch finds the list as it was left.
const filters = { state: "", q: "", order: "newest" };

// `opt` columns give way on a narrow screen; state and progress never do.
const COLUMNS = [
  { label: "Batch" },
  { label: "State" },
  { label: "Progress", class: "wide" },
  { label: "Project", class: "opt" },
  { label: "Region", class: "opt" },
  { label: "Submitted by", class: "opt" },
  { label: "Total", class: "num opt" },
  { label: "Created", class: "opt" },
];

export function listView() {
  let items = [];
  let cursor = null;
  let shown = BATCH_PAGE;
  let drawn = "";
  let sequence = 0; // answers to older requests (other filters) are dropped
  const tbody = el("tbody", { testid: "batch-rows" });
  const count = el("span", { class: "muted", testid: "batch-count" });
  const more = el("button", { type: "button", class: "btn", testid: "batches-more", hidden: true }, "More");

  const stateSelect = el(
    "select",
    { testid: "batch-state-filter", "aria-label": "Filter batches by state" },
    el("option", { value: "" }, "All states"),
    BATCH_STATES.map((s) => el("option", { value: s }, words(s))),
  );
  const search = el("input", {
    type: "search",
    placeholder: "Batch id or submitter…",
    "aria-label": "Search by batch id prefix or submitter",
    testid: "batch-search",
    spellcheck: "false",
    autocomplete: "off",
    maxlength: "64",
  });
  const order = el(
    "select",
    { testid: "batch-order", "aria-label": "Sort" },
    el("option", { value: "newest" }, "Newest first"),
    el("option", { value: "oldest" }, "Oldest first"),
  );
  stateSelect.value = filters.state;
  search.value = filters.q;
  order.value = filters.order;
  stateSelect.addEventListener("change", () => changed({ state: stateSelect.value }));
  order.addEventListener("change", () => changed({ order: order.value }));
  search.addEventListener(
    "input",
    debounce(() => {
      if (search.value.trim() !== filters.q) changed({ q: search.value.trim() });
    }, SEARCH_DEBOUNCE_MS),
  );

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const page = await api("GET", `/batches?${query(BATCH_PAGE, cursor)}`);
      items = items.concat(page.items);
      cursor = page.next_cursor;
      shown = items.length;
      draw();
    } catch (error) {
      report(error);
    } finally {
      more.disabled = false;
    }
  });

  const newBatch = el("a", { href: "#/submit", class: "btn btn-primary", testid: "new-batch-link", hidden: true }, "New batch");
  const root = el(
    "div",
    { class: "page", testid: "batch-list" },
    pageHead("Batches", count, el("span", { class: "spacer" }), el("a", { href: "#/dry-run", class: "btn", testid: "dry-run-link" }, "Pre-flight check"), newBatch),
    el(
      "div",
      { class: "card flush" },
      el("div", { class: "card-head filters" }, search, stateSelect, order),
      table(COLUMNS, tbody, "batch-table"),
    ),
    el("div", { class: "more" }, more),
  );

  function query(limit, after) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (filters.state) q.set("state", filters.state);
    if (filters.q) q.set("q", filters.q);
    if (filters.order !== "newest") q.set("order", filters.order);
    if (after) q.set("cursor", after);
    return q;
  }

  function changed(change) {
    Object.assign(filters, change);
    shown = BATCH_PAGE;
    refreshNow();
  }

  function row(b) {
    const total = b.total || 0;
    return labelRow(
      COLUMNS,
      el(
        "tr",
        { testid: "batch-row", "data-batch-id": b.id, "data-state": b.state },
        el("td", {}, el("a", { href: `#/batches/${b.id}`, class: "mono", title: b.id, testid: "batch-link" }, short(b.id)), b.kind === "rollback" ? el("span", { class: "muted small" }, " rollback") : null),
        el("td", {}, badge(b.state)),
        el("td", {}, el("div", { class: "bar-cell" }, stackedBar(b.counts, total), el("span", { class: "bar-label" }, `${done(b.counts)}/${total}`))),
        el("td", { class: "mono ellipsis", title: b.project_id }, b.project_id),
        el("td", {}, b.region),
        el("td", { testid: "batch-submitter" }, b.submitted_by || ""),
        el("td", {}, total),
        el("td", { class: "nowrap" }, time(b.created_at)),
      ),
    );
  }

  function draw() {
    newBatch.hidden = !mayDo("operator");
    const signature = JSON.stringify([items, cursor]);
    if (signature === drawn) return; // unchanged: leave the DOM (and any selection) alone
    drawn = signature;
    const filtered = filters.state || filters.q;
    tbody.replaceChildren(
      ...(items.length
        ? items.map(row)
        : [emptyRow(COLUMNS.length, filtered ? "No batch matches." : "No batches yet.", "batches-empty")]),
    );
    more.hidden = !cursor;
    count.textContent = `${items.length}${cursor ? "+" : ""} shown`;
  }

  async function refresh() {
    const mine = ++sequence;
    const page = await api("GET", `/batches?${query(Math.min(500, shown))}`);
    if (mine !== sequence) return;
    items = page.items;
    cursor = page.next_cursor;
    draw();
  }

  return { root, title: "Batches", refresh, live: () => true, onIdentity: draw };
}
