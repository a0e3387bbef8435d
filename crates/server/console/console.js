// The eshost console: one page over the server's own HTTP API, with the
// token the operator gives it (kept for this tab only). Every page is
// built from DOM nodes with textContent, never HTML text: payloads are
// data a client wrote.

const state = { token: sessionStorage.getItem("eshost-token") || "", aggregates: [], timers: [], source: null };

// --- The API ---------------------------------------------------------------

class Problem extends Error {
  constructor(status, body) {
    super(body && body.detail ? `${body.kind}: ${body.detail}` : `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const answer = await fetch(path, Object.assign({}, options, { headers }));
  const text = await answer.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { detail: text }; }
  if (!answer.ok) throw new Problem(answer.status, body);
  return body;
}

// --- Building the page -------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/// Appends the children that are there (a condition's `null` is not).
function add(parent, ...children) {
  parent.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function table(headings, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function json(value) {
  return el("pre", {}, JSON.stringify(value, null, 2));
}

function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

function shortDigest(digest) {
  return digest ? digest.replace("sha256:", "").slice(0, 12) + "…" : "";
}

function options(names, selected) {
  return names.map((name) => el("option", { value: name, selected: name === selected }, name));
}

async function loadAggregates() {
  state.aggregates = await api("/v1/aggregates");
  return state.aggregates;
}

// --- Charts: one line (or two) over the samples ---------------------------

function chart(title, samples, series, unit) {
  const width = 300, height = 90, pad = 4;
  const values = series.flatMap((s) => samples.map((x) => x[s.key]));
  const max = Math.max(1e-9, ...values);
  const x = (i) => pad + (samples.length < 2 ? 0 : (i * (width - 2 * pad)) / (samples.length - 1));
  const y = (v) => height - pad - (v / max) * (height - 2 * pad);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const s of series) {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", samples.map((p, i) => `${x(i).toFixed(1)},${y(p[s.key]).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", s.color);
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  const last = samples[samples.length - 1];
  const now = series.map((s) => `${s.label} ${last ? format(last[s.key]) : "–"}`).join(" · ");
  return el("div", { class: "chart", "data-chart": title },
    el("div", { class: "muted" }, `${title} (${unit})`),
    el("div", { class: "value" }, now),
    svg,
    el("div", { class: "muted" }, `max ${format(max)} · last ${samples.length} samples, 10 s each`));
}

function format(value) {
  if (value >= 100) return Math.round(value).toString();
  if (value >= 1) return value.toFixed(1);
  return value.toFixed(3);
}

// --- Pages ------------------------------------------------------------------

const pages = {
  async overview(main) {
    const [ready, aggregates, samples] = await Promise.all([
      fetch("/readyz").then((r) => r.json()).catch(() => null),
      loadAggregates(),
      api("/v1/stats"),
    ]);
    add(main,
      el("h2", {}, "Readiness"),
      ready
        ? el("p", { id: "readiness", class: ready.ready ? "ok" : "bad" },
            ready.ready ? "ready" : "not ready", ` · store ${ready.store} · ${ready.aggregates} aggregates`)
        : el("p", { class: "bad" }, "/readyz did not answer"),
      ready && ready.load_errors && ready.load_errors.length
        ? el("ul", { class: "bad" }, ready.load_errors.map((e) => el("li", {}, e)))
        : null,
      el("h2", {}, "Components"),
      table(["Name", "Version", "Contract", "Digest", "Commands", "Events", "Refused"],
        aggregates.map((a) => el("tr", { "data-aggregate": a.name },
          el("td", {}, a.name), el("td", {}, a.version), el("td", {}, a.contract),
          el("td", { class: "mono", title: a.digest }, shortDigest(a.digest)),
          el("td", {}, a.commands.join(", ")), el("td", {}, a.events.join(", ")),
          el("td", { class: "bad" }, a.refused ? `${a.refused.version} (${shortDigest(a.refused.digest)}): ${a.refused.reason}` : "")))),
      el("h2", {}, "The last 15 minutes"),
      el("div", { class: "charts" },
        chart("Commands", samples, [{ key: "commands_per_second", label: "", color: "#2f5fd0" }], "per second"),
        chart("Latency", samples, [
          { key: "p50_ms", label: "p50", color: "#1a7f37" },
          { key: "p99_ms", label: "p99", color: "#c62828" }], "ms"),
        chart("Commit size", samples, [{ key: "commit_streams", label: "", color: "#6f42c1" }], "streams per commit"),
        chart("Guest time", samples, [{ key: "guest_ms_per_command", label: "", color: "#b35900" }], "ms per command")),
    );
    state.timers.push(setTimeout(() => route(), 10_000));
  },

  async streams(main, params) {
    const aggregates = await loadAggregates();
    const aggregate = params.get("aggregate") || (aggregates[0] && aggregates[0].name) || "";
    const id = params.get("id") || "";
    const find = el("form", { class: "row", id: "find" },
      el("label", {}, "Aggregate", el("select", { name: "aggregate" }, options(aggregates.map((a) => a.name), aggregate))),
      el("label", {}, "Id", el("input", { name: "id", value: id, required: true })),
      el("button", { type: "submit" }, "Open"));
    find.addEventListener("submit", (event) => {
      event.preventDefault();
      const form = new FormData(find);
      location.hash = `#/streams?aggregate=${encodeURIComponent(form.get("aggregate"))}&id=${encodeURIComponent(form.get("id"))}`;
    });
    main.append(el("h2", {}, "Find a stream"), find);
    const component = aggregates.find((a) => a.name === aggregate);
    if (!id || !component) return;
    const started = performance.now();
    const stream = el("section", { id: "stream" });
    main.append(stream);
    await showStream(stream, aggregate, id, 0);
    stream.dataset.loadMs = (performance.now() - started).toFixed(1);
    main.append(commandForm(component, id, stream));
  },

  async log(main, params) {
    const aggregates = await loadAggregates();
    const only = params.get("aggregate") || "";
    const filter = el("form", { class: "row" },
      el("label", {}, "Aggregate", el("select", { name: "aggregate", id: "log-filter" },
        el("option", { value: "" }, "all"), options(aggregates.map((a) => a.name), only))));
    filter.addEventListener("change", () => {
      const chosen = new FormData(filter).get("aggregate");
      location.hash = chosen ? `#/log?aggregate=${encodeURIComponent(chosen)}` : "#/log";
    });
    const rows = el("tbody", { id: "log-rows" });
    const status = el("p", { class: "muted", id: "log-status" }, "connecting…");
    main.append(el("h2", {}, "Live log"), filter, status,
      el("table", {}, el("thead", {}, el("tr", {}, ["Position", "Aggregate", "Id", "#", "Event", "Payload"].map((h) => el("th", {}, h)))), rows));
    const query = new URLSearchParams({ tail: "50" });
    if (only) query.set("aggregate", only);
    if (state.token) query.set("access_token", state.token);
    const source = new EventSource(`/v1/events?${query}`);
    state.source = source;
    source.onopen = () => { status.textContent = "following"; };
    source.onerror = () => { status.textContent = "disconnected; retrying…"; };
    source.onmessage = (message) => {
      const e = JSON.parse(message.data);
      rows.prepend(el("tr", { "data-position": e.position },
        el("td", {}, e.position), el("td", {}, e.aggregate), el("td", {}, e.id), el("td", {}, e.sequence),
        el("td", {}, e.name), el("td", { class: "mono" }, JSON.stringify(e.payload))));
      while (rows.children.length > 200) rows.lastChild.remove();
    };
  },

  async projections(main) {
    const result = el("div", { id: "rebuild-result" });
    const rows = el("tbody", { id: "projection-rows" });
    add(main, el("h2", {}, "Projections"), result,
      el("table", {}, el("thead", {}, el("tr", {},
        ["Name", "Version", "Generation", "Position", "Lag", "Status", "Error", ""].map((h) => el("th", {}, h)))), rows));
    const refresh = async () => {
      const listed = await api("/v1/projections");
      rows.replaceChildren(...listed.map((p) => el("tr", { "data-projection": p.name, "data-lag": p.lag ?? "", "data-generation": p.generation, "data-digest": p.digest },
        el("td", {}, p.name), el("td", {}, p.version), el("td", {}, p.generation), el("td", {}, p.position),
        el("td", {}, p.lag ?? "–"), el("td", { class: p.status === "ok" ? "ok" : "bad" }, p.rebuilding ? "rebuilding" : p.status),
        el("td", { class: "bad" }, p.error || ""),
        el("td", {}, p.runs_here ? el("button", { class: "secondary", "data-rebuild": p.name, on: { click: () =>
          act(result, () => api(`/v1/projections/${encodeURIComponent(p.name)}/rebuild`, { method: "POST" })) } }, "Rebuild") : ""))));
      state.timers.push(setTimeout(() => refresh().catch((e) => notice(e.message)), 2_000));
    };
    await refresh();
  },

  async reactors(main) {
    const result = el("div", { id: "reactor-result" });
    const rows = el("tbody", { id: "reactor-rows" });
    const parkedRows = el("tbody", { id: "parked-rows" });
    add(main, el("h2", {}, "Reactors"), result,
      el("table", {}, el("thead", {}, el("tr", {},
        ["Name", "Version", "Position", "Lag", "Parked", "Timers", "Pending", "On failure", "Stopped at", ""].map((h) => el("th", {}, h)))), rows),
      el("h3", {}, "Parked events"),
      el("table", {}, el("thead", {}, el("tr", {},
        ["Reactor", "Position", "Event", "Reason", "Parked at", "Retry"].map((h) => el("th", {}, h)))), parkedRows));
    const path = (name, rest) => `/v1/reactors/${encodeURIComponent(name)}/${rest}`;
    const setPolicy = (name, onFailure) => act(result, () => api(path(name, "policy"), {
      method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ on_failure: onFailure }),
    }));
    const refresh = async () => {
      const listed = await api("/v1/reactors");
      rows.replaceChildren(...listed.map((r) => el("tr", { "data-reactor": r.name, "data-parked": r.parked, "data-on-failure": r.on_failure },
        el("td", {}, r.name), el("td", {}, r.version), el("td", {}, r.position), el("td", {}, r.lag ?? "–"),
        el("td", { class: r.parked ? "bad" : "" }, r.parked), el("td", {}, r.timers), el("td", {}, r.pending),
        el("td", {}, el("select", { "data-policy": r.name, on: { change: (event) => setPolicy(r.name, event.target.value) } },
          options(["park", "stop"], r.on_failure))),
        el("td", { class: r.stopped_at ? "bad" : "" }, r.stopped_at ?? ""),
        el("td", {}, r.parked ? el("button", { class: "secondary", "data-retry": r.name, on: { click: () =>
          act(result, () => api(path(r.name, "retry"), { method: "POST" })) } }, "Retry parked") : ""))));
      const parked = (await Promise.all(listed.filter((r) => r.parked).map((r) => api(path(r.name, "parked"))))).flat();
      parkedRows.replaceChildren(...parked.map((p) => el("tr", { "data-position": p.position, "data-retry-waiting": p.retry_requested_at_ms ? "true" : "false" },
        el("td", {}, p.reactor), el("td", {}, p.position), el("td", {}, p.event), el("td", { class: "bad" }, p.reason),
        el("td", {}, new Date(p.at_ms).toISOString()), el("td", {}, p.retry_requested_at_ms ? "waiting for the runner" : ""))));
      state.timers.push(setTimeout(() => refresh().catch((e) => notice(e.message)), 2_000));
    };
    await refresh();
  },

  async deploy(main, params) {
    const [aggregates, projections] = await Promise.all([loadAggregates(), api("/v1/projections")]);
    // `#/deploy?aggregate=Name` or `#/deploy?projection=name`.
    const kind = params.get("projection") ? "projection" : "aggregate";
    const name = params.get(kind) || (aggregates[0] && aggregates[0].name) || "";
    const base = kind === "projection" ? "/v1/projections" : "/v1/modules";
    const url = (suffix = "") => `${base}/${encodeURIComponent(name)}${suffix}`;
    const choice = (k, n) => el("option", { value: `${k}=${n}`, selected: k === kind && n === name }, n);
    const result = el("div", { id: "deploy-result" });
    const upload = el("form", { class: "row", id: "upload" },
      el("label", {}, "Component", el("select", { name: "component" },
        el("optgroup", { label: "Aggregates" }, aggregates.map((a) => choice("aggregate", a.name))),
        projections.length ? el("optgroup", { label: "Projections" }, projections.map((p) => choice("projection", p.name))) : null)),
      el("label", {}, "File (.wasm)", el("input", { type: "file", name: "file", accept: ".wasm", required: true })),
      el("button", { type: "submit" }, "Deploy"),
      el("button", { type: "button", class: "secondary", id: "rollback" }, "Roll back"));
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      await act(result, () => api(url(), { method: "PUT", body: new FormData(upload).get("file") }));
    });
    upload.querySelector("#rollback").addEventListener("click", () => act(result, () => api(url("/rollback"), { method: "POST" })));
    upload.querySelector("select").addEventListener("change", (event) => { location.hash = `#/deploy?${event.target.value}`; });
    const live = kind === "aggregate" ? aggregates.find((a) => a.name === name) : projections.find((p) => p.name === name);
    add(main,
      el("h2", {}, "Deploy a version"),
      live ? el("p", { id: "live" }, `Live: ${live.name} ${live.version} (${shortDigest(live.digest)})`) : null,
      upload, result,
      el("h2", {}, "History"));
    const history = name ? await api(`${url("/history")}?limit=50`) : [];
    main.append(table(["When", "Action", "Version", "Digest", "By", "Reason"],
      history.map((d) => el("tr", { "data-action": d.action },
        el("td", {}, d.at), el("td", {}, d.action), el("td", {}, d.version),
        el("td", { class: "mono", title: d.digest }, shortDigest(d.digest)),
        el("td", {}, d.by || ""), el("td", {}, d.reason || "")))));
  },
};

async function showStream(section, aggregate, id, after) {
  const base = `/v1/aggregates/${encodeURIComponent(aggregate)}/${encodeURIComponent(id)}`;
  const [current, page] = await Promise.all([
    api(base).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
    api(`${base}/events?after=${after}&limit=100`),
  ]);
  const rows = page.events.map((e) => el("tr", { "data-sequence": e.sequence },
    el("td", {}, e.sequence), el("td", {}, e.position), el("td", {}, e.name),
    el("td", { class: "mono" }, JSON.stringify(e.payload)), el("td", { class: "mono" }, JSON.stringify(e.metadata))));
  const more = page.next_after !== null && page.next_after !== undefined
    ? el("button", { class: "secondary", id: "next-page", on: { click: () => { section.replaceChildren(); showStream(section, aggregate, id, page.next_after); } } }, "Next page")
    : null;
  section.replaceChildren();
  add(section,
    el("h2", {}, `${aggregate} ${id}`),
    current ? el("div", {}, el("p", { class: "muted", id: "snapshot" }, `version ${current.version} · `,
        current.snapshot ? `snapshot at version ${current.snapshot.version} (${current.snapshot.bytes} bytes): a load replays only the events after it`
          : "no snapshot: a load replays every event"), json(current.state))
      : el("p", { class: "muted" }, "no events yet"),
    el("h2", {}, `Events after #${after}`),
    table(["#", "Position", "Event", "Payload", "Metadata"], rows),
    more);
}

function commandForm(component, id, stream) {
  const result = el("div", { id: "command-result" });
  const form = el("form", { class: "row", id: "command" },
    el("label", {}, "Command", el("select", { name: "command" }, options(component.commands, component.commands[0]))),
    el("label", {}, "Payload (JSON)", el("textarea", { name: "payload" }, "{}")),
    el("button", { type: "submit" }, "Send"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const path = `/v1/aggregates/${encodeURIComponent(component.name)}/${encodeURIComponent(id)}/commands/${encodeURIComponent(data.get("command"))}`;
    await act(result, async () => {
      const outcome = await api(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
        body: data.get("payload"),
      });
      await showStream(stream, component.name, id, 0);
      return outcome;
    });
  });
  return el("div", {}, el("h2", {}, "Send a command"), form, result);
}

/// Runs an action and shows its answer, or its refusal with the upgrade
/// check's report when there is one.
async function act(result, action) {
  result.replaceChildren(el("p", { class: "muted" }, "…"));
  try {
    const answer = await action();
    result.replaceChildren(el("div", { class: "result ok" }, summary(answer)), json(answer));
  } catch (e) {
    const failed = e.body && e.body.check && e.body.check.failed ? e.body.check.failed : [];
    result.replaceChildren(el("div", { class: "result bad", "data-kind": e.body ? e.body.kind : "" }, e.message,
      failed.length ? el("ul", {}, failed.map((f) => el("li", {}, `${f.id}: ${f.error}`))) : null));
  }
}

function summary(answer) {
  if (answer && (answer.aggregate || answer.projection) && "deployment" in answer) {
    const a = answer.aggregate || answer.projection;
    return answer.deployment ? `${answer.deployment.action}: ${a.name} ${a.version} is live (${shortDigest(a.digest)})`
      : `${a.name} ${a.version} was live already`;
  }
  if (answer && answer.events) return `recorded: ${answer.events.map((e) => e.name).join(", ") || "no events"}`;
  if (answer && "asked" in answer) return `${answer.asked} parked event(s) of ${answer.reactor} to retry: its runner takes them on its next pass`;
  if (answer && answer.on_failure) return `an event it fails is now ${answer.on_failure === "stop" ? "parked, and it stops there" : "parked, and it goes on"}`;
  if (answer && answer.rebuilding) return `rebuilding ${answer.name}: readers keep the live view until the new one has caught up`;
  return "done";
}

// --- Routing ------------------------------------------------------------------

async function route() {
  for (const timer of state.timers) clearTimeout(timer);
  state.timers = [];
  if (state.source) { state.source.close(); state.source = null; }
  const [path, query] = (location.hash.slice(2) || "overview").split("?");
  const page = pages[path] ? path : "overview";
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.dataset.page === page);
  const main = document.getElementById("page");
  main.replaceChildren();
  main.dataset.page = page;
  notice("");
  try {
    await pages[page](main, new URLSearchParams(query || ""));
  } catch (e) {
    notice(e.status === 401 ? "This server needs a token: give it above." : e.message);
  }
}

document.getElementById("token").value = state.token;
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("eshost-token", state.token);
  route();
});
window.addEventListener("hashchange", route);
route();
