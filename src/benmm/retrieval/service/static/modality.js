// benmm retrieval page: the query-modality picker (cross-modal search). Plain JS, no dependencies.
// Only the sides the index's model embeds are enabled (from /api/health); a one-line reason says why the
// others are off. app.js reads window.benmmQuery.value() for every search and upload.
"use strict";

window.benmmQuery = (() => {
  const NAMES = { s1: "S1 (SAR: VV, VH)", s2: "S2 (optical)", s1s2: "S1 + S2" };
  const pick = () => document.getElementById("query-modality");

  function init(health, wanted) {
    const select = pick();
    const have = new Set(health.query_modalities || [health.archive_modality]);
    select.replaceChildren(...Object.keys(NAMES).map((side) => {
      const option = document.createElement("option");
      option.value = side;
      option.textContent = NAMES[side] + (side === health.archive_modality ? " · the archive's side" : "");
      option.disabled = !have.has(side);
      return option;
    }));
    select.value = have.has(wanted) ? wanted : (health.query_modality_default || health.archive_modality || "s2");
    const note = document.getElementById("modality-note");
    note.textContent = have.size < 3 && health.query_modalities_note ? health.query_modalities_note : "";
    note.hidden = !note.textContent;
    const sync = () => { document.body.dataset.queryModality = select.value; };
    select.addEventListener("change", sync);
    sync();
  }

  // "S1 query -> S2 archive" for the query card and the summary line
  function direction(query, archive) {
    return query && archive && query !== archive ? `${query.toUpperCase()} query → ${archive.toUpperCase()} archive` : "";
  }

  return { init, direction, value: () => pick().value || "" };
})();
