// benmm retrieval page: where the query and its results lie, on a small offline map of Europe.
// Self-contained: one SVG element (#map), the outline from /static/europe.json (Natural Earth, public
// domain; see ATTRIBUTION.md), no tile server, no CDN. app.js calls benmmMap.show(data) after a search.
"use strict";

const benmmMap = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const WIDTH = 320;
  let outline = null;  // the fetched europe.json, once

  function node(tag, attrs = {}) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    return n;
  }

  // equirectangular with the longitudes shrunk by cos(middle latitude): fine for a 40-degree-tall map
  function projection(bbox) {
    const [lon0, lat0, lon1, lat1] = bbox;
    const k = Math.cos(((lat0 + lat1) / 2) * Math.PI / 180);
    const scale = WIDTH / ((lon1 - lon0) * k);
    return {
      width: WIDTH, height: Math.round((lat1 - lat0) * scale),
      xy: ([lon, lat]) => [((lon - lon0) * k * scale), ((lat1 - lat) * scale)],
    };
  }

  function path(lines, p) {
    return lines.map((line) => line.map((pt, i) => {
      const [x, y] = p.xy(pt);
      return `${i ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)}`;
    }).join("")).join("");
  }

  function graticule(bbox, step = 10) {
    const [lon0, lat0, lon1, lat1] = bbox;
    const lines = [];
    for (let lon = Math.ceil(lon0 / step) * step; lon <= lon1; lon += step) lines.push([[lon, lat0], [lon, lat1]]);
    for (let lat = Math.ceil(lat0 / step) * step; lat <= lat1; lat += step) lines.push([[lon0, lat], [lon1, lat]]);
    return lines;
  }

  function marker(record, p, cls, r) {
    const [x, y] = p.xy(record.footprint.center);
    const m = node("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r, class: cls, "data-name": record.name });
    const t = node("title");
    const [lon, lat] = record.footprint.center;
    t.textContent = `${record.rank ? `#${record.rank} ` : "query "}${record.name} (${lon.toFixed(3)}, ${lat.toFixed(3)})`;
    m.appendChild(t);
    return m;
  }

  async function load() {
    if (outline) return outline;
    const response = await fetch("/static/europe.json");
    if (!response.ok) throw new Error(`europe.json: ${response.status}`);
    outline = await response.json();
    return outline;
  }

  async function show(data) {
    const svg = document.getElementById("map");
    const note = document.getElementById("map-note");
    if (!svg) return;
    const placed = data.results.filter((r) => r.footprint);
    const query = data.query.footprint ? data.query : null;
    svg.replaceChildren();
    svg.dataset.hits = String(placed.length);
    svg.dataset.query = query ? "1" : "0";
    if (!placed.length && !query) {
      svg.setAttribute("hidden", "");
      const why = (window.benmmHealth && window.benmmHealth.footprints_note) || "no footprints for these patches";
      note.textContent = `no map: ${why}`;
      svg.dataset.state = "empty";
      return;
    }
    let geo;
    try { geo = await load(); } catch (err) { note.textContent = `no map: ${err.message}`; return; }
    const p = projection(geo.bbox);
    svg.removeAttribute("hidden");
    svg.setAttribute("viewBox", `0 0 ${p.width} ${p.height}`);
    svg.appendChild(node("rect", { x: 0, y: 0, width: p.width, height: p.height, class: "sea" }));
    svg.appendChild(node("path", { d: path(graticule(geo.bbox), p), class: "graticule" }));
    svg.appendChild(node("path", { d: path(geo.lines, p), class: "outline" }));
    for (const r of placed) svg.appendChild(marker(r, p, "hit", 3));
    if (query) svg.appendChild(marker(query, p, "query-marker", 5));
    const off = data.results.length - placed.length;
    note.textContent = `${placed.length} result(s) on the map` + (off ? `, ${off} without a footprint` : "") +
      (query ? "; ◉ query" : "; the query has no footprint");
    svg.dataset.state = "drawn";
  }

  return { show, projection };
})();
window.benmmMap = benmmMap;
