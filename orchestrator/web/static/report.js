/*
 * What the API says about a request before and instead of taking it: a dry run's report
 * (verdicts, reasons by code, the plan) and a refusal's details (400 fields, 409 conflicts,
 * 422 incompatible servers). Shared by the submit form, the retry dialog and the JSON
 * pre-flight page.
 */
import { el, emptyRow, table, words } from "./core.js";

const FIRST_OF_EACH_CODE = 5;

function countTable(title, counts, testid) {
  const rows = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
  return table(
    [{ label: title }, { label: "Servers", class: "num" }],
    el(
      "tbody",
      {},
      rows.map(([k, v]) => el("tr", { testid: `${testid}-row`, "data-key": k }, el("td", { class: "mono" }, k), el("td", { class: "num" }, v))),
    ),
    testid,
  );
}

/** Reasons grouped by code, each with how many servers, whether it blocks, the first servers. */
function codeTable(report) {
  const byCode = new Map();
  for (const server of report.servers || []) {
    for (const reason of server.reasons || []) {
      if (!byCode.has(reason.code)) byCode.set(reason.code, []);
      byCode.get(reason.code).push({ server, reason });
    }
  }
  const codeRows = [...byCode.entries()]
    .sort((a, b) => b[1].length - a[1].length)
    .map(([code, items]) =>
      el(
        "tr",
        { testid: "dry-run-code-row", "data-code": code },
        el("td", { class: "mono code", "data-label": "Code" }, code),
        el("td", { class: "num", "data-label": "Servers" }, items.length),
        el("td", { "data-label": "Kind" }, items[0].reason.blocking ? "blocks" : "warning"),
        el(
          "td",
          { class: "mono", "data-label": "First servers" },
          items.slice(0, FIRST_OF_EACH_CODE).map((i) => el("div", {}, i.server.server_id)),
          items.length > FIRST_OF_EACH_CODE ? el("div", { class: "muted" }, `… and ${items.length - FIRST_OF_EACH_CODE} more`) : null,
        ),
        el("td", { class: "wide", "data-label": "Why" }, items[0].reason.message),
      ),
    );
  return table(
    [{ label: "Code" }, { label: "Servers", class: "num" }, { label: "Kind" }, { label: "First servers" }, { label: "Why", class: "wide" }],
    el("tbody", {}, codeRows.length ? codeRows : [emptyRow(5, "No reason to report: every server can take this change.", "dry-run-no-codes")]),
    "dry-run-codes",
    { stack: true },
  );
}

/** The plan in absolute numbers: wave sizes, in-flight, budget, and the gates it has. */
function planList(plan) {
  const items = [];
  const waves = plan.waves || [];
  items.push(["Waves", waves.length ? `${waves.length}: ${waves.join(", ")} servers` : "none", "plan-waves"]);
  items.push(["Max in flight", plan.max_in_flight, "plan-max-in-flight"]);
  items.push(["Error budget", plan.max_failures === null || plan.max_failures === undefined ? "no limit" : `${plan.max_failures} failure(s) allowed`, "plan-max-failures"]);
  items.push(["Incompatible servers", plan.on_incompatible === "skip" ? "stored skipped" : "refuse the batch", "plan-on-incompatible"]);
  if (plan.pause_after_waves) items.push(["Pause after waves", plan.pause_after_waves === true ? "every wave" : plan.pause_after_waves.join(", ")]);
  if (plan.wave_delay_s) items.push(["Bake time", `${plan.wave_delay_s} s between waves`]);
  if (plan.health_check) {
    const hc = plan.health_check;
    items.push(["Health check", `${hc.http ? `HTTP ${hc.http}` : `TCP ${hc.tcp}`} · on unhealthy: ${plan.on_unhealthy}`, "plan-health"]);
  }
  if (plan.backup) items.push(["Backup", `an IMS image of each system disk, kept ${plan.backup.retention_s} s`, "plan-backup"]);
  if (plan.spread) items.push(["Spread", plan.spread.map((r) => `${r.by} ≤ ${r.max_in_flight}`).join(", ")]);
  if (plan.waves_by) items.push(["Waves by", plan.waves_by.by]);
  return el(
    "dl",
    { class: "mini plan", testid: "dry-run-plan" },
    items.map(([term, value, testid]) => el("div", { class: "fact" }, el("dt", {}, term), el("dd", { testid }, String(value)))),
  );
}

/** What a real submission would do with servers that cannot take the change. */
function blockedFate(plan) {
  return plan.on_incompatible === "skip"
    ? "they would be stored skipped with their reason (on_incompatible: skip)"
    : "the batch would be refused whole (on_incompatible: reject)";
}

/** A dry run's report as cards: a one-line summary, verdicts, the plan, reasons by code,
 * conflicts and the backup quota. */
export function drawReport(report) {
  const cards = [];
  const verdicts = report.verdicts || {};
  const blocked = (verdicts.will_fail || 0) + (verdicts.unknown || 0);
  const conflicts = verdicts.conflict || 0;
  cards.push(
    el(
      "p",
      { class: blocked || conflicts ? "notice warn" : "notice", testid: "dry-run-summary" },
      `${report.total} server(s): ` +
        Object.entries(verdicts)
          .map(([v, n]) => `${n} ${words(v)}`)
          .join(", ") +
        "." +
        (blocked ? ` ${blocked} cannot take this change: ${blockedFate(report.plan || {})}.` : "") +
        (conflicts ? ` ${conflicts} already belong to another active batch.` : ""),
    ),
  );
  cards.push(
    el(
      "div",
      { class: "report-grid" },
      el("div", { class: "card flush" }, countTable("Verdict", report.verdicts, "dry-run-verdicts")),
      el("div", { class: "card" }, el("h2", {}, "Plan"), planList(report.plan || {})),
    ),
  );
  cards.push(el("div", { class: "card flush" }, codeTable(report)));
  if ((report.conflicts || []).length) {
    cards.push(conflictList(report.conflicts));
  }
  if (report.backup_quota) {
    const q = report.backup_quota;
    cards.push(
      el(
        "p",
        { class: q.enough === false ? "notice error" : "notice", testid: "dry-run-backup-quota" },
        `Backups: ${q.needed} needed, ${q.left} left of an IMS quota of ${q.quota} (${q.used} used).`,
      ),
    );
  }
  return cards;
}

function conflictList(conflicts) {
  return el(
    "div",
    { class: "card", testid: "conflicts" },
    el("h2", {}, `${conflicts.length} server(s) already in an active batch`),
    el(
      "ul",
      { class: "plain mono" },
      conflicts.slice(0, 20).map((c) =>
        el("li", { testid: "conflict" }, c.server_id, " in ", el("a", { href: `#/batches/${c.batch_id}` }, c.batch_id.slice(0, 8)), c.state ? ` (${c.state})` : ""),
      ),
      conflicts.length > 20 ? el("li", { class: "muted" }, `… and ${conflicts.length - 20} more`) : null,
    ),
  );
}

/**
 * An API refusal with what the API names: each invalid field (400), each conflicting server
 * (409), each incompatible server and its codes (422), the backup quota. `serverAt(i)` turns
 * `servers[i]` into the id the operator gave, so a bad line can be found.
 */
export function drawError(error, serverAt) {
  const detail = error.detail || {};
  const parts = [el("p", { class: "notice error", testid: "submit-error-message" }, `${error.status ? `HTTP ${error.status}: ` : ""}${detail.message || error.message}`)];
  const fields = Object.entries(detail.fields || {});
  if (fields.length) {
    parts.push(
      el(
        "ul",
        { class: "field-errors", testid: "field-errors" },
        fields.map(([field, reason]) => {
          const m = field.match(/^servers\[(\d+)\]$/);
          const given = m && serverAt ? serverAt(Number(m[1])) : null;
          return el("li", { testid: "field-error", "data-field": field }, el("code", {}, field), given ? ` (${given})` : "", `: ${reason}`);
        }),
      ),
    );
  }
  if ((detail.conflicts || []).length) parts.push(conflictList(detail.conflicts));
  if ((detail.servers || []).length) {
    const codes = Object.entries(detail.codes || {}).map(([c, n]) => `${c} ×${n}`);
    parts.push(
      el(
        "div",
        { class: "card", testid: "incompatible" },
        el("h2", {}, `${detail.servers.length} incompatible server(s)${codes.length ? `: ${codes.join(", ")}` : ""}`),
        el(
          "ul",
          { class: "plain" },
          detail.servers.slice(0, 20).map((s) =>
            el("li", { testid: "incompatible-server", "data-server-id": s.server_id }, el("span", { class: "mono" }, s.server_id), " — ", (s.reasons || []).map((r) => `${r.code}: ${r.message}`).join("; ")),
          ),
          detail.servers.length > 20 ? el("li", { class: "muted" }, `… and ${detail.servers.length - 20} more`) : null,
        ),
      ),
    );
  }
  if (detail.backup_quota) {
    const q = detail.backup_quota;
    parts.push(el("p", { class: "notice error" }, `Backups needed: ${q.needed}; the IMS quota leaves ${q.left} (quota ${q.quota}, used ${q.used}).`));
  }
  return el("div", { class: "api-error", testid: "submit-error" }, parts);
}
