/*
 * Submit a batch from the page: the servers pasted, read from a file (in the browser, never
 * uploaded as a file) or chosen by a selector; the change; the rollout policy with an advanced
 * part. A dry run comes first, and Submit stays disabled until the dry run has judged exactly
 * the request the form now makes.
 */
import { UUID, api, el, pageHead, session } from "./core.js";
import { drawError, drawReport } from "./report.js";

const ID_COLUMNS = ["server_id", "server", "id", "instance_id", "uuid"];

/**
 * Server ids from pasted text or a file: one a line, or a CSV whose `server_id` (or id...)
 * column holds them, or failing a named column, the first cell that is a UUID. Blank lines and
 * `#` comments are skipped; repeats are dropped (and counted) since the API refuses them.
 */
function parseServers(text) {
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const cells = (line) => line.split(/[,;\t]/).map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
  let column = -1;
  let start = 0;
  if (lines.length) {
    const head = cells(lines[0]);
    const named = head.findIndex((c) => ID_COLUMNS.includes(c.toLowerCase()));
    if (named >= 0) {
      column = named;
      start = 1;
    } else if (head.length > 1 && !head.some((c) => UUID.test(c))) {
      start = 1; // a header row without a known name: the UUID-looking cells below are used
    }
  }
  const seen = new Set();
  const ids = [];
  let repeated = 0;
  for (const line of lines.slice(start)) {
    const row = cells(line);
    const id = column >= 0 ? row[column] || "" : row.find((c) => UUID.test(c)) || row[0];
    if (!id) continue;
    if (seen.has(id.toLowerCase())) {
      repeated += 1;
      continue;
    }
    seen.add(id.toLowerCase());
    ids.push(id);
  }
  return { ids, repeated };
}

/** A fresh Idempotency-Key. crypto.randomUUID() exists only in secure contexts (HTTPS or
 * localhost); getRandomValues() everywhere, and the page may be served over plain HTTP. */
function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** "5" -> 5, "10%" stays a string: the API takes both and says what is wrong with anything else. */
const countOrPercent = (text) => (/^\d+$/.test(text) ? Number(text) : text);
const listOf = (text) =>
  text
    .split(/[\s,]+/)
    .map((t) => t.trim())
    .filter(Boolean);

function input(testid, attrs = {}) {
  return el("input", { type: "text", testid, spellcheck: "false", autocomplete: "off", ...attrs });
}

function field(label, control, help) {
  return el("label", { class: "field" }, el("span", {}, label), control, help ? el("small", { class: "muted" }, help) : null);
}

function select(testid, options, value) {
  const node = el("select", { testid }, options.map(([v, label]) => el("option", { value: v }, label)));
  node.value = value;
  return node;
}

function radio(name, value, label, testid, checked) {
  const node = el("input", { type: "radio", name, value, testid });
  node.checked = Boolean(checked);
  return { node, label: el("label", { class: "check" }, node, ` ${label}`) };
}

export function submitView() {
  // ---- the servers
  const source = {
    paste: radio("source", "paste", "Paste a list", "source-paste", true),
    file: radio("source", "file", "Upload a file", "source-file"),
    selector: radio("source", "selector", "Selector", "source-selector"),
  };
  const pasted = el("textarea", { class: "mono request", rows: "8", spellcheck: "false", testid: "servers-text", placeholder: "One server id a line, or CSV with a server_id column", "aria-label": "Server ids" });
  const file = el("input", { type: "file", accept: ".txt,.csv,text/plain,text/csv", testid: "servers-file", "aria-label": "A file of server ids" });
  let fileServers = { ids: [], repeated: 0, name: "" };
  const selTags = input("selector-tags", { placeholder: "role=web, env=prod" });
  const selName = input("selector-name", { placeholder: "web-" });
  const selStatus = select("selector-status", [["", "any"], ...["ACTIVE", "SHUTOFF", "ERROR"].map((s) => [s, s])], "");
  const selNotImage = input("selector-not-image", { placeholder: "image uuid" });
  const serversCount = el("span", { class: "muted", testid: "servers-count" });
  const panes = {
    paste: el("div", { class: "pane" }, pasted),
    file: el("div", { class: "pane", hidden: true }, file),
    selector: el(
      "div",
      { class: "pane form-grid", hidden: true },
      field("Tags (all must match)", selTags, "key=value, comma separated"),
      field("Name contains", selName),
      field("Status", selStatus),
      field("Not already on image", selNotImage),
    ),
  };

  // ---- the change
  const me = session.me;
  const project = input("project-id", { placeholder: "0605767bd8b5d3f92f0ac0123456789a" });
  if (me && me.projects && me.projects.length === 1) project.value = me.projects[0];
  const region = input("region", { placeholder: "cn-north-4" });
  const imageMode = select("image-mode", [["one", "One image"], ["arch", "One per architecture"]], "one");
  const imageid = input("imageid", { placeholder: "image uuid" });
  const imageX86 = input("image-x86", { placeholder: "x86_64 image uuid" });
  const imageArm = input("image-arm", { placeholder: "aarch64 (Kunpeng) image uuid" });
  const archImages = el("div", { class: "form-row", hidden: true }, field("x86_64 image", imageX86), field("aarch64 image", imageArm));
  const oneImage = el("div", {}, field("Image id", imageid));
  const keyname = input("keyname", { placeholder: "KeyPair-ops" });
  const adminpass = el("input", { type: "password", testid: "adminpass", autocomplete: "new-password" });
  const cloudInit = el("input", { type: "checkbox", testid: "cloud-init" });
  const stopFirst = el("input", { type: "checkbox", testid: "mode-stop" });
  stopFirst.checked = true;

  // ---- the rollout
  const waves = input("waves", { placeholder: "1, 10%, 100%" });
  const maxInFlight = input("max-in-flight", { placeholder: "50" });
  const maxFailures = input("max-failures", { placeholder: "no limit (e.g. 0, 3 or 5%)" });
  const pauseAfter = input("pause-after-waves", { placeholder: "e.g. 1, 2 (or all)" });
  const waveDelay = input("wave-delay", { placeholder: "0" });
  const pollInterval = input("poll-interval", { placeholder: "10" });
  const jobTimeout = input("job-timeout", { placeholder: "1800" });
  const skipMatching = el("input", { type: "checkbox", testid: "skip-matching" });
  skipMatching.checked = true;
  const onIncompatible = select("on-incompatible", [["reject", "refuse the batch"], ["skip", "store them skipped"]], "reject");
  const onConflict = select("on-conflict", [["reject", "refuse the batch"], ["skip", "store them skipped"]], "reject");
  const spread = el("textarea", { class: "mono", rows: "2", testid: "spread", placeholder: "availability_zone=5\nserver_group=1" });
  const wavesBy = input("waves-by", { placeholder: "availability_zone" });
  const wavesOrder = input("waves-by-order", { placeholder: "cn-north-4a, cn-north-4b" });
  const windows = el("textarea", { class: "mono", rows: "2", testid: "windows", placeholder: '[{"cron": "0 1 * * SAT", "duration_s": 14400, "timezone": "Asia/Shanghai"}]' });
  const approvalsBefore = input("approvals-before", { placeholder: "0" });
  const approvalsAfter = input("approvals-after", { placeholder: "e.g. 1" });
  const approvalsRequired = input("approvals-required", { placeholder: "1" });
  const healthKind = select("health-kind", [["", "none"], ["http", "HTTP"], ["tcp", "TCP"]], "");
  const healthTarget = input("health-target", { placeholder: "http://{ip}:8080/healthz or {ip}:22" });
  const healthDelay = input("health-initial-delay", { placeholder: "120" });
  const healthInterval = input("health-interval", { placeholder: "10" });
  const healthSuccesses = input("health-successes", { placeholder: "1" });
  const healthDeadline = input("health-deadline", { placeholder: "900" });
  const onUnhealthy = select("on-unhealthy", [["keep", "keep"], ["rollback", "roll back"]], "keep");
  const backup = el("input", { type: "checkbox", testid: "backup" });
  const backupRetention = input("backup-retention", { placeholder: "604800" });
  const notifyUrl = input("notify-url", { placeholder: "https://hooks.example.com/reimage" });

  const dryRun = el("button", { type: "button", class: "btn btn-primary", testid: "submit-dry-run" }, "Dry run");
  const submit = el("button", { type: "button", class: "btn btn-primary", testid: "submit-batch", disabled: true }, "Submit");
  const status = el("span", { class: "muted", testid: "submit-status" }, "A dry run first: Submit is enabled once it has judged this request.");
  const results = el("div", { testid: "submit-results" });
  let judged = null; // the request the last dry run judged, as JSON
  let idempotencyKey = null; // one per judged request: a double click submits once

  function currentSource() {
    return Object.keys(source).find((k) => source[k].node.checked);
  }

  function servers() {
    const kind = currentSource();
    if (kind === "paste") return parseServers(pasted.value);
    if (kind === "file") return fileServers;
    return null;
  }

  function drawCount() {
    const found = servers();
    if (!found) {
      serversCount.textContent = "resolved by the cloud at submission";
      return;
    }
    const from = currentSource() === "file" && fileServers.name ? `${fileServers.name}: ` : "";
    serversCount.textContent = `${from}${found.ids.length} server(s)${found.repeated ? ` (${found.repeated} repeated, dropped)` : ""}`;
  }

  /** The request body the form describes; { error } when a field cannot even be read. */
  function request() {
    const body = { project_id: project.value.trim(), region: region.value.trim() };
    const found = servers();
    if (found) body.servers = found.ids;
    else {
      const selector = {};
      const tags = listOf(selTags.value.replace(/,/g, " "));
      if (tags.length) selector.tags = tags;
      if (selName.value.trim()) selector.name = selName.value.trim();
      if (selStatus.value) selector.status = selStatus.value;
      if (selNotImage.value.trim()) selector.not_image = selNotImage.value.trim();
      body.selector = selector;
    }
    const change = {};
    if (imageMode.value === "one") change.imageid = imageid.value.trim();
    else {
      change.images = {};
      if (imageX86.value.trim()) change.images.x86_64 = imageX86.value.trim();
      if (imageArm.value.trim()) change.images.aarch64 = imageArm.value.trim();
    }
    if (keyname.value.trim()) change.keyname = keyname.value.trim();
    if (adminpass.value) change.adminpass = adminpass.value;
    if (stopFirst.checked) change.mode = "withStopServer";
    body.os_change = change;
    if (cloudInit.checked) body.cloud_init = true;
    if (onConflict.value !== "reject") body.on_conflict = onConflict.value;
    if (notifyUrl.value.trim()) body.notify_url = notifyUrl.value.trim();
    const policy = readPolicy();
    if (policy.error) return policy;
    body.policy = policy;
    return body;
  }

  function readPolicy() {
    const p = {};
    const text = (node) => node.value.trim();
    if (text(waves)) p.waves = listOf(text(waves)).map(countOrPercent);
    if (text(maxInFlight)) p.max_in_flight = countOrPercent(text(maxInFlight));
    if (text(maxFailures)) p.max_failures = countOrPercent(text(maxFailures));
    if (text(pauseAfter)) p.pause_after_waves = ["all", "true"].includes(text(pauseAfter)) ? true : listOf(text(pauseAfter)).map(countOrPercent);
    const numbers = [
      [waveDelay, "wave_delay_s"],
      [pollInterval, "poll_interval_s"],
      [jobTimeout, "job_timeout_s"],
    ];
    for (const [node, name] of numbers) if (text(node)) p[name] = Number(text(node));
    if (!skipMatching.checked) p.skip_matching = false;
    if (onIncompatible.value !== "reject") p.on_incompatible = onIncompatible.value;
    const rules = text(spread)
      .split(/\n/)
      .map((l) => l.trim())
      .filter(Boolean);
    if (rules.length) {
      p.spread = rules.map((rule) => {
        const [by, limit] = rule.split("=").map((s) => s.trim());
        return { by, max_in_flight: countOrPercent(limit || "") };
      });
    }
    if (text(wavesBy)) p.waves_by = text(wavesOrder) ? { by: text(wavesBy), order: listOf(text(wavesOrder)) } : text(wavesBy);
    if (text(windows)) {
      try {
        p.windows = JSON.parse(text(windows));
      } catch (error) {
        return { error: { "policy.windows": `not valid JSON (${error.message})` } };
      }
    }
    if (text(approvalsBefore) || text(approvalsAfter)) {
      p.approvals = {};
      if (text(approvalsBefore)) p.approvals.before_start = Number(text(approvalsBefore));
      if (text(approvalsAfter)) p.approvals.after_waves = listOf(text(approvalsAfter)).map(countOrPercent);
      if (text(approvalsRequired)) p.approvals.required = Number(text(approvalsRequired));
    }
    if (healthKind.value) {
      const check = { [healthKind.value]: text(healthTarget) };
      const gate = [
        [healthDelay, "initial_delay_s"],
        [healthInterval, "interval_s"],
        [healthSuccesses, "successes"],
        [healthDeadline, "deadline_s"],
      ];
      for (const [node, name] of gate) if (text(node)) check[name] = Number(text(node));
      p.health_check = check;
      if (onUnhealthy.value !== "keep") p.on_unhealthy = onUnhealthy.value;
    }
    if (backup.checked) p.backup = text(backupRetention) ? { mode: "image", retention_s: Number(text(backupRetention)) } : { mode: "image" };
    return p;
  }

  /** Any change after a dry run: its report no longer speaks for the form. */
  function changed() {
    drawCount();
    const body = request();
    const same = judged !== null && !body.error && JSON.stringify(body) === judged;
    submit.disabled = !same;
    if (judged !== null && !same) status.textContent = "Changed since the dry run: run it again before submitting.";
  }

  const serverAt = (i) => {
    const found = servers();
    return found && found.ids[i] !== undefined ? `"${found.ids[i]}"` : null;
  };

  dryRun.addEventListener("click", async () => {
    const body = request();
    if (body.error) {
      results.replaceChildren(drawError({ status: 0, message: "The form has a field that cannot be read", detail: { message: "The form has a field that cannot be read", fields: body.error } }));
      return;
    }
    dryRun.disabled = true;
    submit.disabled = true;
    status.textContent = "Reading the fleet…";
    try {
      const report = await api("POST", "/batches?dry_run=true", body);
      judged = JSON.stringify(body);
      idempotencyKey = randomKey();
      status.textContent = `Dry run of ${report.total} servers with ${report.cloud_calls.total} cloud calls: nothing stored, nothing sent. Submit sends this request.`;
      results.replaceChildren(...drawReport(report));
      submit.disabled = false;
    } catch (error) {
      judged = null;
      if (error.status === 401) return;
      status.textContent = "The dry run was refused:";
      results.replaceChildren(drawError(error, serverAt));
    } finally {
      dryRun.disabled = false;
    }
  });

  submit.addEventListener("click", async () => {
    const body = request();
    if (body.error || JSON.stringify(body) !== judged) return;
    submit.disabled = true;
    dryRun.disabled = true;
    status.textContent = "Submitting…";
    try {
      const batch = await api("POST", "/batches", body, { "Idempotency-Key": idempotencyKey });
      location.hash = `#/batches/${batch.id}`;
    } catch (error) {
      if (error.status === 401) return;
      status.textContent = "The batch was refused; nothing was stored:";
      results.replaceChildren(drawError(error, serverAt));
      submit.disabled = false;
    } finally {
      dryRun.disabled = false;
    }
  });

  for (const [name, r] of Object.entries(source)) {
    r.node.addEventListener("change", () => {
      for (const [other, pane] of Object.entries(panes)) pane.hidden = other !== name;
      changed();
    });
  }
  file.addEventListener("change", async () => {
    const chosen = file.files && file.files[0];
    fileServers = chosen ? { ...parseServers(await chosen.text()), name: chosen.name } : { ids: [], repeated: 0, name: "" };
    changed();
  });
  imageMode.addEventListener("change", () => {
    oneImage.hidden = imageMode.value !== "one";
    archImages.hidden = imageMode.value === "one";
  });

  const form = el(
    "form",
    { class: "submit-form", testid: "submit-form", autocomplete: "off", onsubmit: (e) => e.preventDefault() },
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Servers"),
      el("div", { class: "checks" }, Object.values(source).map((r) => r.label)),
      Object.values(panes),
      serversCount,
    ),
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Change"),
      el("div", { class: "form-grid" }, field("Project id", project), field("Region", region), field("Images", imageMode)),
      oneImage,
      archImages,
      el("div", { class: "form-grid" }, field("Key pair", keyname, "or a password"), field("Password", adminpass, "8-26 characters; erased after use")),
      el("div", { class: "checks" }, el("label", { class: "check" }, stopFirst, " Stop each server first (withStopServer)"), el("label", { class: "check" }, cloudInit, " Cloud-Init (v2 API)")),
    ),
    el(
      "section",
      { class: "card" },
      el("h2", {}, "Rollout"),
      el("div", { class: "form-grid" }, field("Waves", waves, "counts or %, the last repeats"), field("Max in flight", maxInFlight, "a count or %"), field("Max failures", maxFailures, "error budget, a count or %")),
      el(
        "details",
        { class: "advanced", testid: "advanced" },
        el("summary", {}, "Advanced: gates, spread, windows, approvals, health check, backup"),
        el(
          "div",
          { class: "form-grid" },
          field("Pause after waves", pauseAfter),
          field("Bake time between waves (s)", waveDelay),
          field("Poll interval (s)", pollInterval),
          field("Job timeout (s)", jobTimeout),
          field("Incompatible servers", onIncompatible),
          field("Servers in another active batch", onConflict),
          el("label", { class: "check" }, skipMatching, " Skip servers already on the image"),
        ),
        el("div", { class: "form-grid" }, field("Spread (by=max, one a line)", spread, "availability_zone, server_group or tag:<key>"), field("Waves by", wavesBy), field("Waves by order", wavesOrder)),
        field("Maintenance windows (JSON list)", windows, "cron with duration_s and timezone, or start and end"),
        el("div", { class: "form-grid" }, field("Approvals before the start", approvalsBefore), field("Approvals after waves", approvalsAfter), field("Approvers needed", approvalsRequired)),
        el(
          "div",
          { class: "form-grid" },
          field("Health check", healthKind),
          field("Probe target", healthTarget, "{ip} {floating_ip} {server_id} {name}"),
          field("Initial delay (s)", healthDelay),
          field("Interval (s)", healthInterval),
          field("Successes in a row", healthSuccesses),
          field("Deadline (s)", healthDeadline),
          field("When unhealthy", onUnhealthy),
        ),
        el("div", { class: "form-grid" }, el("label", { class: "check" }, backup, " Back up each system disk first (IMS image)"), field("Backup kept (s)", backupRetention), field("Webhook URL", notifyUrl)),
      ),
    ),
    el("div", { class: "actions sticky-actions" }, dryRun, submit, status),
  );
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);

  const root = el(
    "div",
    { class: "page", testid: "submit-page" },
    el("nav", { class: "crumbs" }, el("a", { href: "#/" }, "Batches"), " / new batch"),
    pageHead("New batch"),
    form,
    results,
  );
  drawCount();
  return { root, title: "New batch", refresh: async () => {}, live: () => false };
}
