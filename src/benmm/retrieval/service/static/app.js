// benmm retrieval page: plain JS, no dependencies. Reads ?name=...&k=... and searches on load.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { health: null, data: null, filters: new Set() };

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function fetchJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function thumbURL(name, mode) {
  return `/api/patch/${encodeURIComponent(name)}.png?mode=${mode || $("mode").value}&size=120`;
}

// label chips; those shared with the query are highlighted, those in the filter shown active
function chips(labels, shared = new Set()) {
  return el("div", { class: "chips" }, labels.map((label) =>
    el("span", { class: "chip" + (shared.has(label) ? " match" : "") + (state.filters.has(label) ? " active" : ""),
      title: label, text: label })));
}

function thumb(src, alt, mode) {
  if (!src) return el("div", { class: "thumb none", text: "no thumbnail" });
  const img = el("img", { class: "thumb", src, alt, loading: "lazy", width: "120", height: "120" });
  if (mode) { img.dataset.mode = mode; img.title = mode === "s1" ? "S1 false colour" : "S2 true colour"; }
  img.addEventListener("error", () => img.replaceWith(el("div", { class: "thumb none", text: "no thumbnail" })));
  return img;
}

function renderQuery(query) {
  const card = $("query-card");
  card.replaceChildren();
  const side = query.modality === "s1" ? "s1" : undefined;  // an S1 query is shown as S1 false colour
  const src = query.upload ? query.thumbnail : (state.health.thumbnails ? thumbURL(query.name, side) : null);
  card.appendChild(thumb(src, query.name));
  card.appendChild(el("div", { class: "name", text: query.name }));
  card.appendChild(el("div", { class: "muted", text: query.upload ? "uploaded patch" :
    (query.in_archive ? "archive patch (left out of its own results)" : "query-set patch") }));
  const cross = window.benmmQuery.direction(query.modality, state.data && state.data.archive_modality);
  if (cross) card.appendChild(el("div", { class: "direction", text: cross }));
  if (query.labels.length) card.appendChild(chips(query.labels));
}

function renderFilters(results) {
  const counts = new Map();
  for (const r of results) for (const l of r.labels) counts.set(l, (counts.get(l) || 0) + 1);
  const box = $("filters");
  box.replaceChildren();
  [...counts.entries()].sort((a, b) => b[1] - a[1]).forEach(([label, n]) => {
    const chip = el("button", { type: "button", class: "chip filter" + (state.filters.has(label) ? " active" : ""),
      "data-label": label, text: `${label} (${n})` });
    chip.addEventListener("click", () => {
      if (state.filters.has(label)) state.filters.delete(label); else state.filters.add(label);
      renderResults();
    });
    box.appendChild(chip);
  });
}

function renderResults() {
  const data = state.data;
  const shown = data.results.filter((r) => [...state.filters].every((f) => r.labels.includes(f)));
  const grid = $("results");
  grid.replaceChildren();
  for (const r of shown) {
    const queryLabels = new Set(data.query.labels);
    const shared = r.labels.filter((l) => queryLabels.has(l)).length;
    const card = el("div", { class: "card result", "data-name": r.name, "data-rank": String(r.rank) }, [
      // both sides of every result: the S2 true colour and the S1 false colour thumbnail
      el("div", { class: "thumbs" }, ["s2", "s1"].map((mode) =>
        thumb(state.health.thumbnails ? thumbURL(r.name, mode) : null, `${r.name} ${mode}`, mode))),
      el("div", { class: "meta" }, [
        el("span", { class: "rank", text: `#${r.rank}` }),
        el("span", { class: "distance", title: data.metric === "hamming" ? "Hamming distance (bits)" :
          "cosine distance", text: data.metric === "hamming" ? `${r.distance.toFixed(0)} bits` : `d ${r.distance.toFixed(4)}` }),
        data.query.labels.length ? el("span", { class: "shared", text: `${shared} shared` }) : el("span"),
      ]),
      el("div", { class: "name", text: r.name }),
      chips(r.labels, queryLabels),
    ]);
    card.addEventListener("dblclick", () => { $("name").value = r.name; runSearch(); });
    grid.appendChild(card);
  }
  const filt = state.filters.size ? ` · filter: ${[...state.filters].join(" + ")} (${shown.length} shown)` : "";
  const cross = window.benmmQuery.direction(data.query.modality, data.archive_modality);
  $("summary").textContent = `${data.results.length} results · ${data.kind} index${cross ? " · " + cross : ""}` +
    ` · ${data.took_ms} ms${filt}`;
  renderFilters(data.results);
}

function show(data) {
  state.data = data;
  state.filters.clear();
  showError("");
  $("results-area").hidden = false;
  renderQuery(data.query);
  renderResults();
  if (window.benmmMap) window.benmmMap.show(data);  // map.js: where the query and results lie
  document.body.dataset.state = "done";
}

async function runSearch() {
  const name = $("name").value.trim();
  const k = $("k").value;
  const side = window.benmmQuery.value();
  if (!name) { showError("type or pick a patch name"); return; }
  document.body.dataset.state = "searching";
  try {
    const query = `name=${encodeURIComponent(name)}&k=${encodeURIComponent(k)}&modality=${encodeURIComponent(side)}`;
    const data = await fetchJSON(`/api/search?${query}`);
    history.replaceState(null, "", `/?${query}`);
    show(data);
  } catch (err) {
    showError(err.message);
    document.body.dataset.state = "error";
  }
}

async function runUpload() {
  const file = $("file").files[0];
  if (!file) { showError("choose a .npz, .safetensors or .zip file first"); return; }
  const form = new FormData();
  form.append("file", file);
  document.body.dataset.state = "searching";
  try {
    const side = encodeURIComponent(window.benmmQuery.value());
    show(await fetchJSON(`/api/search?k=${encodeURIComponent($("k").value)}&modality=${side}`,
      { method: "POST", body: form }));
  } catch (err) {
    showError(err.message);
    document.body.dataset.state = "error";
  }
}

let suggestTimer = null;
function suggest() {
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(async () => {
    const q = $("name").value.trim();
    if (q.length < 2) return;
    try {
      const data = await fetchJSON(`/api/names?q=${encodeURIComponent(q)}&limit=20`);
      $("name-options").replaceChildren(...data.names.map((n) => el("option", { value: n })));
    } catch (_) { /* suggestions are optional */ }
  }, 150);
}

async function init() {
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  $("upload-form").addEventListener("submit", (e) => { e.preventDefault(); runUpload(); });
  $("name").addEventListener("input", suggest);
  $("random").addEventListener("click", async () => {
    try { $("name").value = (await fetchJSON("/api/random")).name; runSearch(); } catch (err) { showError(err.message); }
  });
  $("clear-filters").addEventListener("click", () => { state.filters.clear(); renderResults(); });
  $("mode").addEventListener("change", () => { if (state.data) { renderQuery(state.data.query); renderResults(); } });
  try {
    state.health = await fetchJSON("/api/health");
    window.benmmHealth = state.health;
  } catch (err) {
    $("status").textContent = "service unavailable";
    showError(err.message);
    return;
  }
  const h = state.health;
  $("status").textContent = `${h.items.toLocaleString()} archive patches · ${h.kind}` +
    (h.bits ? ` (${h.bits}-bit codes)` : ` (${h.dim}-d, ${h.metric})`) +
    (h.query_items ? ` · ${h.query_items.toLocaleString()} query patches` : "");
  $("k").max = String(h.max_k);
  // what the service cannot do, and why (one line each, from the server: e.g. "serve with --store PATH")
  const notes = [h.thumbnails ? "" : `thumbnails are off: ${h.thumbnails_note}`,
    h.upload ? "" : `uploads are off: ${h.upload_note}`].filter(Boolean);
  $("notes").textContent = notes.join(" · ");
  $("notes").hidden = notes.length === 0;
  $("upload-hint").textContent = h.upload ? `bands: ${h.upload_bands.join(" ")}` +
    ((h.query_modalities || []).length > 1 ? " (or those of the chosen query side)" : "") : (h.upload_note || "");
  $("upload-form").querySelector("button").disabled = !h.upload;
  const params = new URLSearchParams(location.search);
  window.benmmQuery.init(h, params.get("modality"));  // modality.js: the query-side picker
  if (params.get("k")) $("k").value = params.get("k");
  if (params.get("mode")) $("mode").value = params.get("mode");
  if (params.get("name")) {
    $("name").value = params.get("name");
    await runSearch();
    // ?filter=LABEL (repeatable): show only results carrying every such label
    if (state.data && params.getAll("filter").length) {
      params.getAll("filter").forEach((label) => state.filters.add(label));
      renderResults();
    }
  } else document.body.dataset.state = "ready";
}

init();
