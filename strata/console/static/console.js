// strata console: plain JS, no framework, no build step. Everything from the server or a model is put on the page
// with textContent (never innerHTML), so a reply or a file name holding markup stays text.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const CSRF = () => $('meta[name="csrf-token"]').content;
const MAX_SCALE = () => parseFloat(document.body.dataset.maxScale || "8");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function say(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function errorText(status, data) {
  const message = data && data.error ? (data.error.message || data.error) : (typeof data === "string" ? data : "");
  return `${status}: ${message || "request failed"}`;
}

async function api(path, options = {}) {
  const headers = { "X-CSRF-Token": CSRF(), ...(options.headers || {}) };
  if (options.body !== undefined && typeof options.body !== "string") {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.body) };
  }
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin", ...options, headers });
  } catch (err) {
    return { ok: false, status: 0, data: { error: { message: `network error: ${err}` } } };
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  return { ok: response.ok, status: response.status, data, headers: response.headers };
}

const fmt = (value, digits = 2) => (value === null || value === undefined || Number.isNaN(value)) ? "–"
  : Number(value).toFixed(digits);

// ---- streaming chat ------------------------------------------------------------------------------------------
async function streamChat(body, onText) {
  const started = performance.now();
  const response = await fetch("/api/console/chat", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF() },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  const header = response.headers.get("X-Strata-Adapters") || "";
  if (!response.ok) {
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json() : await response.text();
    throw new Error(errorText(response.status, data));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", first = null, tokens = 0, usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      for (const line of event.split(/\r?\n/)) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(errorText(chunk.error.code, chunk));
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) first = performance.now();
          tokens += 1;
          text += delta.content;
          onText(text);
        }
      }
    }
  }
  const end = performance.now();
  const count = usage ? usage.completion_tokens : tokens;
  const latency = (end - started) / 1000;
  // tokens/s over the whole request: a fast server's chunks can reach the page in one burst, so a rate measured
  // between the first and the last chunk would say more about buffering than about decoding
  return { text, header, ttft: first === null ? null : (first - started) / 1000, latency, tokens: count,
           tps: latency > 0 && count > 0 ? count / latency : null };
}

function sampling(root = document) {
  const out = {};
  for (const name of ["temperature", "top_p", "max_tokens", "seed"]) {
    const input = $(`#${name}`, root);
    if (input && input.value !== "") out[name] = name === "max_tokens" || name === "seed"
      ? parseInt(input.value, 10) : parseFloat(input.value);
  }
  return out;
}

// ---- adapter sets ---------------------------------------------------------------------------------------------
let adapterCache = null;
async function adapterInfo(force = false) {
  if (!adapterCache || force) {
    const reply = await api("/api/console/adapters");
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return { loaded: [], available: [] }; }
    adapterCache = reply.data;
    if (reply.data.error) say(reply.data.error, "error");
  }
  return adapterCache;
}

function choices(info) {
  const seen = new Map();
  for (const a of [...info.loaded, ...info.available]) if (!seen.has(a.path)) seen.set(a.path, a);
  return [...seen.values()];
}

// A set picker: one checkbox + scale slider per adapter; no box ticked is the base model.
function setPicker(container, info, prefix, ticked = []) {
  container.replaceChildren();
  const rows = choices(info).map((a, i) => {
    const id = `${prefix}-${i}`;
    const box = el("input", { type: "checkbox", id, checked: ticked.includes(a.path), dataset: { path: a.path } });
    const slider = el("input", { type: "range", id: `${id}-scale`, min: -MAX_SCALE(), max: MAX_SCALE(), step: 0.05,
                                 value: 1, "aria-label": `scale of ${a.name}` });
    const shown = el("output", { for: `${id}-scale` }, "1");
    slider.addEventListener("input", () => { shown.textContent = slider.value; });
    return el("div", { class: "pick" }, box, el("label", { for: id }, a.name), slider, shown);
  });
  container.append(...(rows.length ? rows : [el("p", { class: "hint" }, "No adapters found: base model only.")]));
  return () => $$("input[type=checkbox]", container).filter(b => b.checked).map(b => ({
    path: b.dataset.path, scale: parseFloat($(`#${b.id}-scale`).value) }));
}

// A soft-prompt picker: a labelled select of the soft prompts the server can apply; returns the request field
// ({} leaves the server's default, {soft_prompt: false} turns it off, else {soft_prompt: name or path}).
let softCache = null;
async function softInfo() {
  if (!softCache) {
    const reply = await api("/api/console/soft-prompts");
    softCache = reply.ok ? reply.data : { choices: [], default: null, error: errorText(reply.status, reply.data) };
    if (softCache.error) say(softCache.error, "error");
  }
  return softCache;
}

function softPicker(container, info, prefix) {
  const id = `${prefix}-soft`;
  // option values are positions, never the names themselves: a folder may be called anything
  const options = [el("option", { value: "default" }, info.default ? `server default (${info.default})` : "none")];
  if (info.default) options.push(el("option", { value: "off" }, "none"));
  info.choices.forEach((c, i) => options.push(el("option", { value: String(i) }, c.name)));
  const select = el("select", { id }, ...options);
  container.replaceChildren(el("label", { for: id }, "Soft prompt"), select);
  return () => select.value === "default" ? {} : select.value === "off" ? { soft_prompt: false }
    : { soft_prompt: info.choices[parseInt(select.value, 10)].value };
}

// ---- Adapters page --------------------------------------------------------------------------------------------
async function adaptersPage() {
  const render = async () => {
    const info = await adapterInfo(true);
    $("#roots").textContent = (info.roots || []).join(", ") || "none";
    const body = $("#loaded tbody");
    body.replaceChildren(...info.loaded.map(a => {
      const id = `scale-${a.id}`;
      const slider = el("input", { type: "range", id, min: -MAX_SCALE(), max: MAX_SCALE(), step: 0.05, value: a.scale,
                                   dataset: { path: a.path }, "aria-label": `scale of ${a.name}` });
      const shown = el("output", { for: id }, String(a.scale));
      slider.addEventListener("input", () => { shown.textContent = slider.value; });
      return el("tr", {}, el("td", {}, String(a.id)), el("td", {}, a.name), el("td", {}, a.level ?? "–"),
                el("td", {}, a.topic ?? "–"), el("td", { class: "mono" }, (a.base_fingerprint || "–").slice(0, 16)),
                el("td", { class: "mono" }, a.path), el("td", {}, slider, " ", shown));
    }));
    if (!info.loaded.length) body.append(el("tr", {}, el("td", { colspan: 7 }, "No adapter loaded.")));
    $("#available tbody").replaceChildren(...info.available.map(a => el("tr", {},
      el("td", {}, a.name), el("td", {}, a.level ?? "–"), el("td", {}, a.topic ?? "–"), el("td", { class: "mono" }, a.path),
      el("td", {}, el("button", { type: "button", "aria-label": `Load ${a.name}`, on: { click: () => load(a.path, 1) } },
                      "Load")))));
  };
  const current = () => $$("#loaded input[type=range]").map(s => ({ path: s.dataset.path, scale: parseFloat(s.value) }));
  const post = async (adapters, done) => {
    const reply = await api("/api/console/adapters", { method: "POST", body: { adapters } });
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    say(done, "ok");
    await render();
  };
  const load = (path, scale) => post([...current().filter(a => a.path !== path), { path, scale }], `Loaded ${path}.`);
  $("#apply").addEventListener("click", () => post(current(), "Applied the global adapter set."));
  $("#clear").addEventListener("click", () => post([], "Cleared: the global set is the base model."));
  $("#by-path").addEventListener("submit", ev => {
    ev.preventDefault();
    load($("#path").value.trim(), parseFloat($("#path-scale").value || "1"));
  });
  await render();
}

// ---- Playground -----------------------------------------------------------------------------------------------
async function playgroundPage() {
  const getSet = setPicker($("#set"), await adapterInfo(), "pg");
  const getSoft = softPicker($("#soft"), await softInfo(), "pg");
  let history = [];
  $("#reset").addEventListener("click", () => { history = []; $("#conversation").replaceChildren(); });
  $("#chat-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const text = $("#prompt").value;
    const system = $("#system").value.trim();
    history.push({ role: "user", content: text });
    const reply = el("pre", { class: "output" });
    $("#conversation").append(el("li", { class: "user" }, el("strong", {}, "you: "), text),
                              el("li", { class: "assistant" }, el("strong", {}, "model: "), reply));
    $("#send").disabled = true;
    try {
      const messages = system ? [{ role: "system", content: system }, ...history] : history;
      const grammar = $("#grammar").value.trim();
      const result = await streamChat({ messages, lora: getSet(), ...getSoft(), ...sampling(),
                                        ...(grammar ? { grammar } : {}) },
                                      t => { reply.textContent = t; });
      history.push({ role: "assistant", content: result.text });
      $("#adapters-header").textContent = result.header;
      $("#ttft").textContent = `${fmt(result.ttft * 1000, 0)} ms`;
      $("#tps").textContent = fmt(result.tps, 1);
      say("");
    } catch (err) {
      history.pop();
      say(String(err.message || err), "error");
    } finally {
      $("#send").disabled = false;
    }
  });
}

// ---- Compare --------------------------------------------------------------------------------------------------
function words(text) { return text.split(/(\s+)/).filter(w => w.length); }

// Word-level LCS against the reference: the words of `other` that are not in the common subsequence are marked.
function diffNodes(reference, other) {
  const a = words(reference), b = words(other);
  const n = a.length, m = b.length;
  const table = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--)
    table[i][j] = a[i] === b[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
  const nodes = [];
  let i = 0, j = 0, changed = 0;
  while (j < m) {
    if (i < n && a[i] === b[j]) { nodes.push(document.createTextNode(b[j])); i++; j++; }
    else if (i < n && table[i + 1][j] >= table[i][j + 1]) i++;
    else { nodes.push(el("mark", { class: "diff" }, b[j])); if (b[j].trim()) changed++; j++; }
  }
  return { nodes, changed };
}

async function comparePage() {
  const info = await adapterInfo();
  const soft = await softInfo();
  const grid = $("#columns-grid");
  let pickers = [];
  let softs = [];
  const build = () => {
    const count = Math.min(6, Math.max(2, parseInt($("#columns").value || "3", 10)));
    const names = choices(info);
    grid.replaceChildren();
    pickers = [];
    softs = [];
    for (let c = 0; c < count; c++) {
      const sets = el("div", { class: "set" });
      const softBox = el("div", { class: "soft" });
      const column = el("article", { class: "column", dataset: { column: c } },
        el("h2", {}, c === 0 ? "Column 1 (reference)" : `Column ${c + 1}`),
        el("fieldset", {}, el("legend", {}, `Adapters of column ${c + 1}`), sets, softBox),
        el("dl", { class: "stats" }, el("dt", {}, "X-Strata-Adapters"), el("dd", { class: "hdr" }, "–"),
           el("dt", {}, "latency"), el("dd", { class: "lat" }, "–"), el("dt", {}, "TTFT"), el("dd", { class: "ttft" }, "–"),
           el("dt", {}, "tokens/s"), el("dd", { class: "tps" }, "–"), el("dt", {}, "words differing"),
           el("dd", { class: "changed" }, "–")),
        el("pre", { class: "output", "aria-live": "polite" }));
      grid.append(column);
      const ticked = c === 0 || !names[c - 1] ? [] : [names[c - 1].path];
      pickers.push(setPicker(sets, info, `col${c}`, ticked));
      softs.push(softPicker(softBox, soft, `col${c}`));
    }
  };
  $("#set-columns").addEventListener("click", build);
  build();
  $("#compare-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    $("#run").disabled = true;
    say("Streaming every column at once…");
    const messages = [{ role: "user", content: $("#prompt").value }];
    const columns = $$(".column", grid);
    const runs = columns.map((column, c) => {
      const out = $(".output", column);
      out.textContent = "";
      column.dataset.started = String(performance.now());
      return streamChat({ messages, lora: pickers[c](), ...softs[c](), ...sampling() }, t => { out.textContent = t; })
        .then(result => {
          column.dataset.ended = String(performance.now());
          $(".hdr", column).textContent = result.header;
          $(".lat", column).textContent = `${fmt(result.latency, 2)} s`;
          $(".ttft", column).textContent = `${fmt(result.ttft * 1000, 0)} ms`;
          $(".tps", column).textContent = fmt(result.tps, 1);
          return result;
        })
        .catch(err => { out.textContent = ""; $(".hdr", column).textContent = String(err.message || err); return null; });
    });
    const results = await Promise.all(runs);
    const reference = results[0] ? results[0].text : "";
    columns.forEach((column, c) => {
      if (!results[c] || c === 0) { if (c === 0) $(".changed", column).textContent = "reference"; return; }
      const { nodes, changed } = diffNodes(reference, results[c].text);
      $(".output", column).replaceChildren(...nodes);
      $(".changed", column).textContent = String(changed);
    });
    say(results.every(Boolean) ? "Done." : "Some columns failed; see their headers.", results.every(Boolean) ? "ok" : "error");
    $("#run").disabled = false;
  });
}

// ---- Arena ----------------------------------------------------------------------------------------------------
function boardTable(topic, rows) {
  return el("table", { class: "board" },
    el("caption", {}, topic),
    el("thead", {}, el("tr", {}, ["rank", "name", "rating", "95 % interval", "votes", "wins"].map(h => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r, i) => el("tr", {}, el("td", {}, String(i + 1)), el("td", {}, r.name),
      el("td", {}, fmt(r.rating, 0)), el("td", {}, `${fmt(r.low, 0)} – ${fmt(r.high, 0)}`), el("td", {}, String(r.votes)),
      el("td", {}, String(r.wins))))));
}

async function arenaPage() {
  const info = await adapterInfo();
  const loaded = new Set(info.loaded.map(a => a.path));
  const candidates = [{ name: "base", set: [], ticked: true }, ...choices(info).map(a => ({
    name: a.name, set: [{ path: a.path, scale: 1 }], ticked: loaded.has(a.path) }))];
  $("#contenders").replaceChildren(...candidates.map((c, i) => el("div", { class: "pick" },
    el("input", { type: "checkbox", id: `cand-${i}`, checked: c.ticked, dataset: { index: i } }),
    el("label", { for: `cand-${i}` }, c.name))));
  let match = null;
  const board = async () => {
    const reply = await api("/api/console/arena/leaderboard");
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    $("#vote-count").textContent = String(reply.data.votes);
    $("#board").replaceChildren(...Object.entries(reply.data.topics).map(([topic, rows]) => boardTable(topic, rows)));
  };
  const draw = async source => {
    const reply = await api(`/api/console/arena/prompt?source=${source}`);
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    $("#prompt").value = reply.data.prompt;
    $("#topic").value = reply.data.topic;
  };
  $("#draw-qa").addEventListener("click", () => draw("qa"));
  $("#draw-pairs").addEventListener("click", () => draw("pairs"));
  $("#arena-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const chosen = $$("#contenders input:checked").map(b => candidates[parseInt(b.dataset.index, 10)].set);
    $("#fight").disabled = true;
    say("Generating both answers…");
    const reply = await api("/api/console/arena/match", { method: "POST", body: {
      prompt: $("#prompt").value, topic: $("#topic").value, candidates: chosen, ...sampling() } });
    $("#fight").disabled = false;
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    match = reply.data;
    $("#out-a").textContent = match.a;
    $("#out-b").textContent = match.b;
    $("#name-a").textContent = "";
    $("#name-b").textContent = "";
    $$(".vote").forEach(b => { b.disabled = false; });
    $("#match").hidden = false;
    say("Vote: the names are shown after.");
    $(".vote").focus();
  });
  $$(".vote").forEach(button => button.addEventListener("click", async () => {
    if (!match) return;
    const reply = await api(`/api/console/arena/${match.id}/vote`, { method: "POST", body: { vote: button.dataset.vote } });
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    $("#name-a").textContent = `(${reply.data.a})`;
    $("#name-b").textContent = `(${reply.data.b})`;
    $$(".vote").forEach(b => { b.disabled = true; });
    say(`Vote recorded: ${reply.data.vote}. A was ${reply.data.a}, B was ${reply.data.b}.`, "ok");
    match = null;
    await board();
  }));
  $("#export-save").addEventListener("click", async () => {
    const reply = await api("/api/console/arena/export", { method: "POST", body: {} });
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    say(`Wrote ${reply.data.rows} preference rows to ${reply.data.path}.`, "ok");
  });
  await board();
}

// ---- QA reports -----------------------------------------------------------------------------------------------
async function qaPage() {
  const reply = await api("/api/console/qa");
  if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
  const release = reply.data.release;
  if (release) $("#release").replaceChildren(el("h2", {}, `Release ${release.name} ${release.version || ""} ${release.tag || ""}`),
    el("pre", { class: "output" }, JSON.stringify(release.qa || release, null, 2)));
  $("#gates").replaceChildren(...(reply.data.gates || []).map(g => el("section", { class: "gate" },
    el("h2", {}, `Build gate ${g.name}: ${g.passed ? "every layer passed" : "FAILED"}`),
    el("table", {}, el("caption", {}, `F1 / ROUGE-L / perplexity of each topic's held-out answers (| grounded F1); `
                                      + `verdict on own-topic ${g.metric}`),
       el("thead", {}, el("tr", {}, g.header.map(h => el("th", { scope: "col" }, h)))),
       el("tbody", {}, g.rows.map(row => el("tr", { class: row[row.length - 1] === "FAILED" ? "error" : "" },
         row.map((text, i) => i === 0 ? el("th", { scope: "row" }, text) : el("td", {}, text)))))),
    Object.keys(g.failed).length ? el("ul", {}, Object.entries(g.failed).map(([layer, reasons]) =>
      el("li", { class: "error" }, `${layer}: ${reasons.join("; ")}`))) : "")));
  const reports = reply.data.reports;
  $("#reports").replaceChildren(...(reports.length ? reports.map(r => el("section", { class: "report" },
    el("h2", {}, r.name),
    el("p", {}, `layers: ${r.layers.join(", ") || "–"}; started ${r.started || "–"} `,
       r.has_html ? el("a", { href: `/qa/${encodeURIComponent(r.name)}/report.html` }, "HTML report") : ""),
    r.gates.length ? el("ul", {}, r.gates.map(g => el("li", { class: g.passed ? "ok" : "error" },
      `${g.passed ? "PASS" : "FAIL"}: ${g.message}`))) : "",
    r.matrix.header.length ? el("table", {}, el("caption", {}, "mean F1 per topic (best marked)"),
      el("thead", {}, el("tr", {}, r.matrix.header.map(h => el("th", { scope: "col" }, h)))),
      el("tbody", {}, r.matrix.rows.map(row => el("tr", {}, row.map(([text, best]) => el("td", { class: best ? "best" : "" }, text))))))
      : el("p", { class: "hint" }, "no per-topic scores (no prompt with a reference and a topic)"),
    r.plots.map(p => el("img", { src: `/qa/${encodeURIComponent(r.name)}/${p}`, alt: `${r.name} plot ${p}`, loading: "lazy" }))))
    : [el("p", {}, "No QA report yet: run `strata qa --server URL`.")]));
}

// ---- Status ---------------------------------------------------------------------------------------------------
async function statusPage() {
  let last = null;
  const tick = async () => {
    const reply = await api("/api/console/status");
    const data = reply.data || {};
    const health = data.health || {};
    const m = data.metrics || {};
    const now = performance.now();
    let tps = null;
    if (last && data.metrics) tps = (m.completion_tokens - last.tokens) / ((now - last.at) / 1000);
    if (data.metrics) last = { tokens: m.completion_tokens, at: now };
    const release = data.release ? `${data.release.name} ${data.release.version || ""} (${data.release.tag || "no tag"})` : "none";
    const items = [["health", health.status || `error ${reply.status}`], ["message", health.message || ""],
      ["model", health.model || "–"], ["release", release], ["slots busy", `${m.slots_busy ?? "–"} / ${health.slots ?? "–"}`],
      ["queue depth", m.queue_depth ?? "–"], ["tokens/s (last 2 s)", fmt(tps, 1)],
      ["completion tokens", m.completion_tokens ?? "–"], ["adapter swaps", m.adapter_swaps ?? "–"],
      ["loaded adapters", m.loaded_adapters ?? "–"], ["requests", m.requests ?? "–"]];
    $("#status").replaceChildren(...items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { key: k } }, String(v))]));
  };
  await tick();
  setInterval(tick, 2000);
}

// ---- Training runs --------------------------------------------------------------------------------------------
function lossPlot(curves) {
  const svgNS = "http://www.w3.org/2000/svg";
  const points = curves.flatMap(c => c.points);
  const box = $("#loss-plot");
  box.replaceChildren();
  if (!points.length) return;
  const [w, h, pad] = [520, 160, 28];
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs) || 1, Math.min(...ys), Math.max(...ys)];
  const sx = x => pad + (x - x0) / ((x1 - x0) || 1) * (w - 2 * pad);
  const sy = y => h - pad - (y - y0) / ((y1 - y0) || 1) * (h - 2 * pad);
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `loss from ${fmt(ys[0], 3)} to ${fmt(ys[ys.length - 1], 3)}`);
  curves.forEach((c, i) => {
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("points", c.points.map(p => `${sx(p[0])},${sy(p[1])}`).join(" "));
    line.setAttribute("class", `curve c${i % 4}`);
    svg.append(line);
  });
  const label = document.createElementNS(svgNS, "text");
  label.setAttribute("x", pad); label.setAttribute("y", 14);
  label.textContent = `loss ${fmt(y1, 3)} → ${fmt(ys[ys.length - 1], 3)} (${curves.map(c => c.name).join(", ")})`;
  svg.append(label);
  box.append(svg);
}

async function trainingPage() {
  let source = null, shown = null, lastRuns = "";
  const openLog = row => {
    if (source) source.close();
    shown = row.id;
    $("#log-run").textContent = row.id;
    $("#log").textContent = "";
    lossPlot(row.loss_curve || []);
    source = new EventSource(`/api/training/runs/${encodeURIComponent(row.id)}/log`);
    source.addEventListener("line", ev => { $("#log").append(document.createTextNode(JSON.parse(ev.data) + "\n")); });
    source.addEventListener("end", ev => {
      const end = JSON.parse(ev.data);
      $("#log").append(el("strong", {}, `— run ${end.status} —\n`));
      source.close();
      source = null;
    });
  };
  const errorCell = row => {
    if (!row.error) return el("td", {}, "–");
    const lines = row.error.split("\n");
    return el("td", { class: "error-cell" }, el("pre", { class: "first" }, lines.slice(0, 3).join("\n")),
      lines.length > 3 ? el("details", {}, el("summary", {}, "show full error"), el("pre", {}, row.error)) : "");
  };
  const refresh = async () => {
    const reply = await api("/api/training/runs");
    if (!reply.ok) { say(errorText(reply.status, reply.data), "error"); return; }
    const { active, runs, stages } = reply.data;
    const select = $("#stage");
    if (!select.options.length) select.replaceChildren(...stages.map(s => el("option", { value: s, selected: s === "train_all" }, s)));
    $("#start").disabled = Boolean(active);
    $("#active").textContent = active ? `run ${active.run_id} is active (${active.command})` : "no run active";
    const key = JSON.stringify(runs);
    if (key === lastRuns) return reply.data;  // unchanged: keep the table (and any opened "show full error")
    lastRuns = key;
    $("#runs tbody").replaceChildren(...runs.map(row => el("tr", { class: row.status, dataset: { run: row.id } },
      el("td", { class: "mono" }, row.id), el("td", {}, row.command || "–"), el("td", { class: "status" }, row.status),
      el("td", {}, row.samples ?? "–"), el("td", {}, fmt(row.loss, 3)), el("td", {}, row.started || "–"),
      el("td", {}, row.duration_s === null ? "–" : `${row.duration_s} s`), errorCell(row),
      el("td", {}, el("button", { type: "button", "aria-label": `Show the log of run ${row.id}`, on: { click: () => openLog(row) } }, "log"),
        row.has_log ? el("a", { href: `/api/training/runs/${encodeURIComponent(row.id)}/log.txt` }, " full log") : ""))));
    if (!runs.length) $("#runs tbody").append(el("tr", {}, el("td", { colspan: 9 }, "No run yet.")));
    return reply.data;
  };
  $("#trigger-form").addEventListener("submit", async ev => {
    ev.preventDefault();
    const body = { stage: $("#stage").value };
    if ($("#max_steps").value) body.max_steps = parseInt($("#max_steps").value, 10);
    const reply = await api("/api/training/trigger", { method: "POST", body });
    if (reply.status === 409) say(`409: ${reply.data.error.message}`, "error");
    else if (!reply.ok) say(errorText(reply.status, reply.data), "error");
    else say(`Started run ${reply.data.run_id}: ${reply.data.command}`, "ok");
    const data = await refresh();
    const row = data && data.runs.find(r => r.id === (reply.data.run_id || ""));
    if (row) openLog(row);
  });
  await refresh();
  setInterval(refresh, 2000);
}

const PAGES = { "/": adaptersPage, "/playground": playgroundPage, "/compare": comparePage, "/arena": arenaPage,
                "/qa": qaPage, "/status": statusPage, "/training": trainingPage };

document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  if (page) page().catch(err => say(String(err.message || err), "error"));
});
