"use strict";
function sortKey(cell) {
  const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  if (raw === "") return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw.toLowerCase();
}
function compareKeys(a, b) {
  if (a === null || b === null) return a === b ? 0 : (a === null ? 1 : -1);
  if (typeof a === typeof b) return a < b ? -1 : (a > b ? 1 : 0);
  return typeof a === "number" ? -1 : 1;
}
function sortTable(table, column, header) {
  const ascending = header.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("th").forEach(th => th.removeAttribute("aria-sort"));
  header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows).map((row, i) => [sortKey(row.cells[column]), i, row]);
  rows.sort((x, y) => {
    const c = compareKeys(x[0], y[0]);
    if (c !== 0 && x[0] !== null && y[0] !== null) return ascending ? c : -c;
    return c !== 0 ? c : x[1] - y[1];
  });
  rows.forEach(r => body.appendChild(r[2]));
}
function filterTable(table, text, counter) {
  const words = text.toLowerCase().split(/\s+/).filter(w => w);
  let shown = 0;
  Array.from(table.tBodies[0].rows).forEach(row => {
    const content = row.textContent.toLowerCase();
    const keep = words.every(w => content.includes(w));
    row.hidden = !keep;
    if (keep) shown += 1;
  });
  if (counter) counter.textContent = shown + " of " + table.tBodies[0].rows.length + " insertions shown";
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table.sortable").forEach(table => {
    table.querySelectorAll("th").forEach((th, i) => {
      th.addEventListener("click", () => sortTable(table, i, th));
    });
  });
  const box = document.getElementById("filter");
  const table = document.getElementById("insertions");
  if (box && table) {
    const counter = document.getElementById("shown");
    box.addEventListener("input", () => filterTable(table, box.value, counter));
    filterTable(table, box.value, counter);
  }
});
function hasWebGL() {
  try {
    const canvas = document.createElement("canvas");
    return !!(canvas.getContext("webgl") || canvas.getContext("experimental-webgl"));
  } catch (e) { return false; }
}
function drawFigure(id, figure) {
  const element = document.getElementById(id);
  if (typeof Plotly === "undefined") {
    element.textContent = "plotly.min.js could not be loaded: keep it next to index.html.";
  } else if (!hasWebGL()) {
    element.textContent = "This browser has no WebGL: the 3D view cannot be drawn (the figures still work).";
  } else {
    Plotly.newPlot(element, figure.data, figure.layout, {responsive: true, displaylogo: false});
  }
}
