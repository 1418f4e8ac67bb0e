/* One batch: its controls, facts, progress with rate and ETA, waves, failures grouped by code,
 * and its servers (filter, search, CSV export). */
import {
  SERVER_STATES,
  TERMINAL_BATCH_STATES,
  api,
  askText,
  badge,
  dash,
  done,
  el,
  fact,
  mayDo,
  openDialog,
  refreshNow,
  session,
  short,
  stackedBar,
  time,
  words,
} from "./core.js";
import { drawError, drawReport } from "./report.js";
import { serverTable } from "./servers.js";

const IN_FLIGHT_STATES = ["submitting", "backing_up", "running", "verifying"];
const RETRY_STATES = ["failed", "cancelled", "skipped", "succeeded"];
// The rate is measured over the polls of the last two minutes, like `reimage watch` does.
const RATE_WINDOW_MS = 120_000;

const isGate = (b) => b.approval_gate !== null && b.approval_gate !== undefined;
const gateWords = (gate) => (gate === 0 ? "before the start" : `after wave ${gate}`);

/** The batch's controls; `run` does the asking (a dialog, a confirm) and the call. */
const ACTIONS = [
  {
    name: "pause",
    label: "Pause",
    kind: "btn",
    shows: (b) => ["pending", "running"].includes(b.state) && !b.cancel_requested,
    run: async (b, post) => {
      const reason = await askText({
        title: `Pause batch ${short(b.id)}`,
        label: "Why? (shown on the batch; running jobs are followed to their end)",
        confirm: "Pause",
        required: true,
        maxLength: 500,
        testid: "pause-dialog",
      });
      if (reason !== null) await post({ reason });
    },
  },
  {
    name: "resume",
    label: "Resume",
    kind: "btn btn-primary",
    // An approval gate opens with approvals, never with a resume.
    shows: (b) => b.state === "paused" && !b.cancel_requested && !isGate(b),
    run: (b, post) => post({}),
  },
  {
    name: "cancel",
    label: "Cancel",
    kind: "btn btn-danger",
    shows: (b) => !TERMINAL_BATCH_STATES.has(b.state) && !b.cancel_requested,
    run: async (b, post) => {
      const sure = window.confirm(
        `Cancel batch ${short(b.id)}? Servers not yet sent are cancelled; jobs already running are followed to their end.`,
      );
      if (sure) await post({});
    },
  },
  {
    name: "retry",
    label: "Retry…",
    kind: "btn btn-primary",
    shows: (b) => TERMINAL_BATCH_STATES.has(b.state) && RETRY_STATES.some((s) => s !== "succeeded" && (b.counts[s] || 0) > 0),
    run: (b) => retryDialog(b),
  },
  {
    name: "approve",
    label: "Approve",
    kind: "btn btn-primary",
    role: "approver",
    shows: (b) => isGate(b) && session.me !== null && session.me.name !== b.submitted_by,
    run: async (b, post) => {
      const comment = await askText({ title: `Approve batch ${short(b.id)} ${gateWords(b.approval_gate)}`, label: "A comment for the record (optional)", confirm: "Approve", testid: "approve-dialog" });
      if (comment !== null) await post(comment ? { comment } : {});
    },
  },
  {
    name: "reject",
    label: "Reject",
    kind: "btn btn-danger",
    role: "approver",
    shows: isGate,
    run: async (b, post) => {
      const comment = await askText({ title: `Reject batch ${short(b.id)}: it is cancelled`, label: "Why?", confirm: "Reject", kind: "btn btn-danger", testid: "reject-dialog" });
      if (comment !== null) await post(comment ? { comment } : {});
    },
  },
  {
    name: "rollback",
    label: "Roll back failed",
    kind: "btn btn-danger",
    // Failed servers that were sent a change have an image to go back to.
    shows: (b) => TERMINAL_BATCH_STATES.has(b.state) && b.kind !== "rollback" && (b.counts.failed || 0) > 0,
    run: async (b, post) => {
      const sure = window.confirm(
        `Start a rollback batch: each of the ${b.counts.failed || 0} failed servers of this one ` +
          "that was sent a change goes back to the image it ran before (its backup image when one was made)?",
      );
      if (sure) {
        const answer = await post({ states: ["failed"] });
        if (answer) location.hash = `#/batches/${answer.id}`;
      }
    },
  },
];

/**
 * Retry with options: which states, the in-flight value (and waves, budget), a password when
 * the parent's was erased. A dry run first; Retry is enabled only for the body it judged.
 */
async function retryDialog(b) {
  const boxes = RETRY_STATES.map((s) => {
    const n = b.counts[s] || 0;
    const box = el("input", { type: "checkbox", value: s, testid: `retry-state-${s}`, disabled: n === 0 });
    box.checked = n > 0 && (s === "failed" || s === "cancelled");
    return el("label", { class: "check" }, box, ` ${s} (${n})`);
  });
  const inFlight = el("input", { type: "text", testid: "retry-max-in-flight", placeholder: String(b.policy.max_in_flight ?? 50), inputmode: "numeric" });
  const budget = el("input", { type: "text", testid: "retry-max-failures", placeholder: b.policy.max_failures === null || b.policy.max_failures === undefined ? "no limit" : String(b.policy.max_failures) });
  const needsLogin = !(b.os_change && b.os_change.keyname) && !b.cloud_init;
  const password = el("input", { type: "password", testid: "retry-adminpass", autocomplete: "new-password" });
  const result = el("div", { class: "dialog-result", testid: "retry-result" });
  let judged = null; // the body the last dry run answered for

  function body() {
    const out = { states: boxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value) };
    const policy = {};
    const mif = inFlight.value.trim();
    if (mif) policy.max_in_flight = /^\d+$/.test(mif) ? Number(mif) : mif;
    const mf = budget.value.trim();
    if (mf) policy.max_failures = /^\d+$/.test(mf) ? Number(mf) : mf;
    if (Object.keys(policy).length) out.policy = policy;
    if (needsLogin && password.value) out.os_change = { ...b.os_change, adminpass: password.value };
    return out;
  }
  const buttons = [
    { name: "dry", label: "Dry run", kind: "btn", testid: "retry-dry-run" },
    { name: "go", label: "Retry", testid: "retry-submit", disabledWhen: () => judged === null || judged !== JSON.stringify(body()) },
  ];
  const disableStale = () => {
    buttons[1].node.disabled = buttons[1].disabledWhen();
  };
  for (const input of [inFlight, budget, password, ...boxes.map((l) => l.querySelector("input"))]) input.addEventListener("input", disableStale);

  await openDialog({
    title: `Retry servers of batch ${short(b.id)} as a new batch`,
    testid: "retry-dialog",
    body: [
      el("p", { class: "muted" }, "The same change and policy, with what you change here."),
      el("fieldset", { class: "checks" }, el("legend", {}, "States to retry"), boxes),
      el("div", { class: "form-row" }, el("label", { class: "field" }, el("span", {}, "Max in flight"), inFlight), el("label", { class: "field" }, el("span", {}, "Max failures"), budget)),
      needsLogin ? el("label", { class: "field" }, el("span", {}, "Password for the new OS (the parent's was erased after use)"), password) : null,
      result,
    ],
    buttons,
    onButton: async (name) => {
      const sent = body();
      const dry = name === "dry";
      try {
        const answer = await api("POST", `/batches/${b.id}/retry${dry ? "?dry_run=true" : ""}`, sent);
        if (dry) {
          judged = JSON.stringify(sent);
          result.replaceChildren(...drawReport(answer));
          return false;
        }
        location.hash = `#/batches/${answer.id}`;
        return true;
      } catch (error) {
        if (error.status === 401) return true;
        judged = null;
        result.replaceChildren(drawError(error));
        return false;
      }
    },
  });
}

function duration(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Servers finished per minute from successive polls, and the time the rest would take. */
function rateMeter() {
  let samples = [];
  return {
    add(b) {
      const now = Date.now();
      samples.push([now, done(b.counts)]);
      samples = samples.filter(([t]) => now - t <= RATE_WINDOW_MS);
    },
    read(b) {
      const total = b.total || 0;
      const left = total - done(b.counts);
      if (TERMINAL_BATCH_STATES.has(b.state) && b.finished_at) {
        const minutes = (new Date(b.finished_at) - new Date(b.created_at)) / 60000;
        return { rate: minutes > 0 ? done(b.counts) / minutes : null, eta: "finished", overall: true };
      }
      if (samples.length < 2) return { rate: null, eta: "measuring…" };
      const [t0, d0] = samples[0];
      const [t1, d1] = samples[samples.length - 1];
      const perMinute = t1 > t0 ? ((d1 - d0) * 60000) / (t1 - t0) : 0;
      // Held: no estimate holds while nothing new may be sent.
      if (b.state === "paused") return { rate: perMinute, eta: "paused" };
      if (b.waiting_for_window) return { rate: perMinute, eta: "after its window opens" };
      if (perMinute <= 0) return { rate: 0, eta: "—" };
      return { rate: perMinute, eta: duration((left / perMinute) * 60) };
    },
  };
}

export function batchView(batchId) {
  let batch = null;
  let missing = false;
  const pending = new Set(); // actions sent, not yet answered
  const rate = rateMeter();
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
  const failures = el("section", { class: "card", testid: "failure-codes", hidden: true });
  const servers = serverTable(batchId);

  const body = el(
    "div",
    {},
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
    failures,
    servers.root,
  );
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
    body,
  );

  async function act(action) {
    if (!batch || pending.size) return;
    actionError.hidden = true;
    const post = async (payload) => {
      pending.add(action.name);
      drawButtons();
      try {
        return await api("POST", `/batches/${batchId}/${action.name}`, payload);
      } catch (error) {
        if (error.status !== 401) {
          actionError.textContent = `${action.label.replace("…", "")} failed: ${error.message}`;
          actionError.hidden = false;
        }
        return null;
      } finally {
        pending.delete(action.name);
        drawButtons();
      }
    };
    await action.run(batch, post);
    refreshNow();
  }

  function drawButtons() {
    for (const action of ACTIONS) {
      const button = buttons[action.name];
      button.hidden = !batch || missing || !mayDo(action.role) || !action.shows(batch);
      button.disabled = pending.size > 0;
      button.classList.toggle("working", pending.has(action.name));
    }
  }

  function policySummary(p) {
    const parts = [];
    if (p.health_check) parts.push(`health check ${p.health_check.http || p.health_check.tcp} (on unhealthy: ${p.on_unhealthy || "keep"})`);
    if (p.backup) parts.push("backup first");
    if (p.approvals) {
      const a = p.approvals;
      const gates = [a.before_start ? "before the start" : null, ...(a.after_waves || []).map((w) => `after wave ${w}`)].filter(Boolean);
      parts.push(`approvals ${gates.join(", ")}`);
    }
    if (p.windows) parts.push(`${p.windows.length} maintenance window(s)`);
    if (p.on_incompatible === "skip") parts.push("incompatible servers skipped");
    return parts.join(" · ");
  }

  function drawMeta(b) {
    const change = b.os_change || {};
    const image = change.imageid
      ? el("span", { class: "mono" }, change.imageid)
      : change.images
        ? el("span", { class: "mono" }, Object.entries(change.images).map(([arch, id]) => `${arch} ${short(id)}`).join(", "))
        : dash(null);
    const items = [
      fact("ID", el("span", { class: "mono" }, b.id), "batch-id"),
      fact("Project", el("span", { class: "mono" }, b.project_id)),
      fact("Region", b.region),
      fact(b.kind === "rollback" ? "Image" : "Image", b.kind === "rollback" ? "each server's previous image" : image),
      fact("Submitted by", dash(b.submitted_by), "submitted-by"),
      fact("Created", time(b.created_at)),
      fact("Updated", time(b.updated_at)),
    ];
    if (b.finished_at) items.push(fact("Finished", time(b.finished_at)));
    const spread = (b.policy && b.policy.spread) || [];
    if (spread.length) items.push(fact("Spread", spread.map((r) => `${r.by} ≤ ${r.max_in_flight}`).join(", "), "spread"));
    if (b.policy && b.policy.waves_by) items.push(fact("Waves by", b.policy.waves_by.by, "waves-by"));
    const summary = policySummary(b.policy || {});
    if (summary) items.push(fact("Policy", summary, "policy-summary"));
    if (b.selector) items.push(fact("Selector", JSON.stringify(b.selector), "selector"));
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
      const next = isGate(b) ? "An approver must approve (or reject) it." : "Resume to continue.";
      list.push(el("p", { class: "notice warn", testid: "pause-reason" }, `Paused: ${reason}${who}. ${next}`));
    }
    const waiting = b.approvals && b.approvals.waiting;
    if (waiting) {
      list.push(
        el("p", { class: "notice", testid: "approval-waiting" }, `Waiting for approval ${gateWords(waiting.gate)}: ${waiting.have} of ${waiting.needed} approval(s), from people other than ${b.submitted_by || "the submitter"}.`),
      );
    }
    if (b.abort_reason) list.push(el("p", { class: "notice error", testid: "abort-reason" }, `Aborted: ${words(b.abort_reason)}`));
    if (b.cancel_requested && !TERMINAL_BATCH_STATES.has(b.state)) {
      list.push(el("p", { class: "notice warn", testid: "cancel-requested" }, "Cancel requested: servers not yet sent are cancelled; running jobs are followed to their end."));
    }
    if (b.broken) list.push(el("p", { class: "notice error", testid: "broken" }, `${b.broken} server(s) were left in ERROR by their job.`));
    if (b.waiting_for_window) {
      list.push(el("p", { class: "notice warn", testid: "waiting-for-window" }, "Waiting for its maintenance window: nothing new is sent before ", time(b.window_opens_at), "."));
    }
    const decisions = (b.approvals && b.approvals.decisions) || [];
    if (decisions.length) {
      list.push(
        el(
          "ul",
          { class: "notice", testid: "approvals" },
          decisions.map((d) => el("li", {}, `${d.decision} ${gateWords(d.gate)} by `, el("strong", {}, d.principal), " at ", time(d.at), d.comment ? ` — ${d.comment}` : "")),
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
    const speed = rate.read(b);
    const rateText = speed.rate === null ? "—" : `${speed.rate.toFixed(1)}/min`;
    progress.replaceChildren(
      el("div", { class: "big" }, el("span", { testid: "done-count" }, `${finished} of ${total}`), el("span", { class: "muted" }, ` done · ${pct}%`)),
      stackedBar(b.counts, total, "batch-progress"),
      el(
        "p",
        { class: "rate muted", testid: "rate-line" },
        speed.overall ? "average " : "rate ",
        el("strong", { testid: "rate" }, rateText),
        " · ETA ",
        el("strong", { testid: "eta" }, speed.eta),
      ),
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
      el("dl", { class: "mini" }, fact("Allowed", allowed === null ? "no limit" : allowed, "budget-allowed"), fact("Left", allowed === null ? "—" : eb.left, "budget-left")),
    );
    const inFlight = IN_FLIGHT_STATES.reduce((n, s) => n + (b.counts[s] || 0), 0);
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
    const labels = (b.domains && b.domains.wave_labels) || [];
    waves.replaceChildren(
      ...(b.waves || []).map((w) =>
        el(
          "div",
          { class: `wave${w.wave === b.current_wave && !TERMINAL_BATCH_STATES.has(b.state) ? " current" : ""}`, testid: "wave-row", "data-wave": w.wave },
          el("span", { class: "wave-name" }, `Wave ${w.wave}`, labels[w.wave - 1] ? el("span", { class: "muted small" }, ` ${labels[w.wave - 1]}`) : null),
          stackedBar(w.counts, w.size, "wave-bar"),
          el("span", { class: "bar-label" }, `${done(w.counts)}/${w.size}`),
        ),
      ),
    );
  }

  /** "312 × Ecs.0202": each group filters the server table below; its CSV is one click. */
  function drawFailures(b) {
    const groups = b.failure_codes || [];
    failures.hidden = groups.length === 0;
    if (!groups.length) return;
    failures.replaceChildren(
      el("h2", {}, "Failures by code"),
      el(
        "ul",
        { class: "groups" },
        groups.map((g) =>
          el(
            "li",
            { testid: "failure-group", "data-code": g.code, "data-state": g.state },
            el(
              "button",
              { type: "button", class: "group-link", testid: "failure-group-filter", title: "Show these servers", onclick: () => servers.showGroup(g.state, g.code) },
              el("strong", { testid: "failure-group-count" }, g.count),
              " × ",
              el("span", { class: "mono code", testid: "failure-group-code" }, g.code),
            ),
            " ",
            badge(g.state),
            el("span", { class: "muted group-message" }, g.message ? ` ${g.message}` : ""),
            el("button", { type: "button", class: "btn btn-small", testid: "failure-group-csv", onclick: () => servers.exportCsv(g.state, g.code) }, "CSV"),
          ),
        ),
      ),
    );
  }

  function showMissing() {
    missing = true;
    state.replaceChildren();
    drawButtons();
    body.replaceChildren(el("p", { class: "notice error", testid: "batch-missing" }, `No batch ${batchId}: it does not exist, or your token may not see its project.`), el("p", {}, el("a", { href: "#/" }, "Back to the batches")));
  }

  async function refresh() {
    let answer;
    try {
      answer = await api("GET", `/batches/${batchId}`);
    } catch (error) {
      if (error.status === 404) {
        showMissing();
        return;
      }
      throw error;
    }
    batch = answer;
    rate.add(answer);
    state.replaceChildren(badge(answer.state, "batch-state"));
    drawMeta(answer);
    drawNotes(answer);
    drawStats(answer);
    drawWaves(answer);
    drawFailures(answer);
    drawButtons();
    await servers.refresh();
  }

  return {
    root,
    title: `Batch ${short(batchId)}`,
    refresh,
    onIdentity: drawButtons,
    // A missing batch will not appear: nothing to follow.
    live: () => !missing && (batch === null || !TERMINAL_BATCH_STATES.has(batch.state) || pending.size > 0),
  };
}

/** A malformed batch URL: said, not silently replaced by the list. */
export function badBatchView(text) {
  const root = el(
    "div",
    { class: "page", testid: "bad-batch" },
    el("nav", { class: "crumbs" }, el("a", { href: "#/" }, "Batches")),
    el("p", { class: "notice error", testid: "bad-batch-id" }, `"${text}" is not a batch id (a batch id is a UUID, like 3193f8ac-253c-431f-becc-124506e8fe56).`),
  );
  return { root, title: "Not a batch id", refresh: async () => {}, live: () => false };
}
