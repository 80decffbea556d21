"use strict";
// The run table of one proposal, live: rows from /api/p/<proposal>/table, then each change the
// server pushes on /events/<proposal> (a run catalogued, a value computed, a comment), and the
// series under way (at most 5 times a second) with the Recorder's preview.

const proposal = document.body.dataset.proposal;
const api = "/api/p/" + encodeURIComponent(proposal);
let columns = [];
let rows = new Map();     // run -> values
let errors = {};          // run -> variable -> reason
let plots = {};           // run -> the variables that are arrays to plot
let sortKey = "run", sortDescending = true;
let previewVersion = -1;

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function shown(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object" && value.array) return "array " + value.array.join("×");
  if (typeof value === "number" && !Number.isInteger(value)) return Number(value.toPrecision(6)).toString();
  return String(value);
}

function cellHtml(run, column, value) {
  const reason = (errors[run] || {})[column.key];
  if (reason && (value === null || value === undefined)) {
    return `<td class="failed" title="${escapeHtml(reason)}">${escapeHtml(reason)}</td>`;
  }
  if (column.key === "comment") {
    return `<td class="comment" data-run="${run}" title="click to edit">${escapeHtml(shown(value))}</td>`;
  }
  if ((value && typeof value === "object" && value.array) || (plots[run] || []).includes(column.key)) {
    return `<td class="array" data-run="${run}" data-key="${escapeHtml(column.key)}" title="plot it">${escapeHtml(shown(value))}</td>`;
  }
  const numeric = typeof value === "number" ? ' class="number"' : "";
  const text = shown(value);
  const title = column.key === "raw_file" ? ` title="${escapeHtml(text)}"` : "";
  return `<td${numeric}${title}>${escapeHtml(column.key === "raw_file" ? text.split("/").pop() : text)}</td>`;
}

function rowHtml(values) {
  const run = values.run;
  return `<tr data-run="${run}">` + columns.map(c => cellHtml(run, c, values[c.key])).join("") + "</tr>";
}

function renderHead() {
  const groups = [];
  for (const column of columns) {
    const last = groups[groups.length - 1];
    if (last && last.name === column.group) last.span += 1; else groups.push({name: column.group, span: 1});
  }
  const head = document.querySelector("#runs thead");
  head.innerHTML =
    '<tr class="groups">' + groups.map(g => `<th colspan="${g.span}">${escapeHtml(g.name)}</th>`).join("") + "</tr>" +
    '<tr class="titles">' + columns.map(c => {
      const sorted = c.key === sortKey ? (sortDescending ? " sorted-desc" : " sorted-asc") : "";
      const units = c.units ? ` <span class="units">[${escapeHtml(c.units)}]</span>` : "";
      return `<th data-key="${escapeHtml(c.key)}" class="${sorted}">${escapeHtml(c.title)}${units}</th>`;
    }).join("") + "</tr>";
}

function filterOf(text) {
  const query = text.trim().toLowerCase();
  if (!query) return () => true;
  const colon = query.indexOf(":");
  const byColumn = colon > 0 ? columns.find(c => c.key.toLowerCase() === query.slice(0, colon) ||
                                                 c.title.toLowerCase() === query.slice(0, colon)) : null;
  if (byColumn) {
    const wanted = query.slice(colon + 1).trim();
    return values => shown(values[byColumn.key]).toLowerCase().includes(wanted);
  }
  return values => columns.some(c => shown(values[c.key]).toLowerCase().includes(query));
}

function compare(a, b) {
  const x = a[sortKey], y = b[sortKey];
  if (x === y) return 0;
  if (x === null || x === undefined) return 1;
  if (y === null || y === undefined) return -1;
  const order = (typeof x === "number" && typeof y === "number") ? x - y : shown(x).localeCompare(shown(y));
  return sortDescending ? -order : order;
}

function renderBody() {
  const keep = filterOf(document.getElementById("filter").value);
  const shownRows = [...rows.values()].filter(keep).sort(compare);
  document.querySelector("#runs tbody").innerHTML = shownRows.map(rowHtml).join("");
  document.getElementById("count").textContent = `${shownRows.length} of ${rows.size} runs`;
}

function say(text, kind) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = "small " + (kind || "");
}

async function loadTable() {
  const started = performance.now();
  const data = await (await fetch(api + "/table")).json();
  columns = data.columns;
  errors = data.errors;
  plots = data.plots;
  rows = new Map(data.rows.map(values => [values.run, values]));
  renderHead();
  renderBody();
  document.body.dataset.renderedMs = String(Math.round(performance.now() - started));  // the table's request and draw
  document.body.dataset.readyAt = String(Math.round(performance.now()));  // since the page was asked for
  document.body.dataset.ready = "1";
}

function takeRow(update) {
  const known = new Set(columns.map(c => c.key));
  if (Object.keys(update.values).some(key => !known.has(key))) {
    loadTable();  // a new variable: a new column, titled and grouped by the server
    return;
  }
  const before = rows.get(update.run);
  errors[update.run] = update.errors;
  plots[update.run] = update.plots;
  const values = {...(before || {}), ...update.values};
  rows.set(update.run, values);
  const shownRow = document.querySelector(`#runs tbody tr[data-run="${update.run}"]`);
  const keep = filterOf(document.getElementById("filter").value);
  if (shownRow && before && before[sortKey] === values[sortKey] && keep(values)) {
    shownRow.outerHTML = rowHtml(values);  // in place: the other rows stay as they are
  } else {
    renderBody();  // a new run, or one that moves in the order or the filter
  }
  const row = document.querySelector(`#runs tbody tr[data-run="${update.run}"]`);
  if (row) row.classList.add("fresh");
}

function showSeries(series) {
  const state = document.getElementById("series-state");
  state.textContent = series.state;
  state.className = "state " + series.state;
  document.getElementById("series-progress").value = series.progress;
  document.getElementById("series-file").textContent = series.file ? series.file.split("/").pop() : "";
  document.getElementById("series-counters").textContent =
    `requested ${series.frames_requested}, acquired ${series.frames_acquired}, received ${series.frames_received}, ` +
    `written ${series.frames_written}, missing ${series.missing_frames}`;
  document.getElementById("series-status").textContent = series.status;
  if (series.preview_version !== previewVersion && series.preview_version > 0) {
    previewVersion = series.preview_version;
    const preview = document.getElementById("preview");
    preview.src = "/api/preview.png?v=" + previewVersion;
    preview.dataset.version = String(previewVersion);
    document.getElementById("preview-caption").textContent = `frame ${series.preview_frame}`;
  }
}

function listen() {
  const source = new EventSource("/events/" + encodeURIComponent(proposal));
  const badge = document.getElementById("live");
  source.onopen = () => { badge.textContent = "live"; badge.className = "badge on"; };
  source.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "badge"; };
  source.addEventListener("row", event => takeRow(JSON.parse(event.data)));
  source.addEventListener("series", event => showSeries(JSON.parse(event.data)));
}

let plotly = null;
function loadPlotly() {
  // plotly.js (4.6 MB) only once a plot is asked for: the table does not wait for it
  plotly = plotly || new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = "/static/plotly/plotly.min.js";
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => reject(new Error("plotly.js did not load"));
    document.head.appendChild(script);
  });
  return plotly;
}

async function plot(run, key) {
  const response = await fetch(`${api}/runs/${run}/plot/${encodeURIComponent(key)}`);
  if (!response.ok) { say(`run ${run}: ${key} has no array to plot`, "error"); return; }
  const data = await response.json();
  const column = columns.find(c => c.key === key) || {title: key, units: ""};
  document.getElementById("plot-panel").hidden = false;
  document.getElementById("plot-title").textContent = `run ${run}: ${column.title}`;
  const trace = data.z ? {z: data.z, type: "heatmap", colorscale: "Viridis"}
                       : {x: data.x || undefined, y: data.y, type: "scatter", mode: "lines"};
  const layout = data.z
    ? {margin: {t: 20}, yaxis: {scaleanchor: "x", autorange: "reversed"}}  // an image: square pixels, row 0 on top
    : {margin: {t: 20}, yaxis: {title: {text: column.units || ""}}};
  (await loadPlotly()).newPlot("plot", [trace], layout, {displaylogo: false});
}

function editComment(cell) {
  if (cell.querySelector("input")) return;
  const run = Number(cell.dataset.run);
  const input = document.createElement("input");
  input.value = shown(rows.get(run).comment);
  input.size = 30;
  cell.textContent = "";
  cell.appendChild(input);
  input.focus();
  const save = async () => {
    const token = document.getElementById("token").value.trim();
    sessionStorage.setItem("photonflow-token", token);
    const response = await fetch(`${api}/runs/${run}/comment`, {
      method: "POST", headers: {"Content-Type": "application/json", ...(token ? {Authorization: "Bearer " + token} : {})},
      body: JSON.stringify({text: input.value}),
    });
    const answer = await response.json();
    if (response.ok) {
      rows.get(run).comment = answer.comment;
      say(`run ${run}: comment saved`, "ok");
    } else {
      say(`run ${run}: not saved: ${answer.description || answer.reason}`, "error");
    }
    renderBody();
  };
  input.addEventListener("keydown", event => {
    if (event.key === "Enter") save();
    if (event.key === "Escape") renderBody();
  });
}

document.getElementById("token").value = sessionStorage.getItem("photonflow-token") || "";
document.getElementById("filter").addEventListener("input", renderBody);
document.querySelector("#runs thead").addEventListener("click", event => {
  const key = event.target.closest("th[data-key]")?.dataset.key;
  if (!key) return;
  sortDescending = key === sortKey ? !sortDescending : false;
  sortKey = key;
  renderHead();
  renderBody();
});
document.querySelector("#runs tbody").addEventListener("click", event => {
  const cell = event.target.closest("td");
  if (!cell) return;
  if (cell.classList.contains("array")) plot(Number(cell.dataset.run), cell.dataset.key);
  if (cell.classList.contains("comment")) editComment(cell);
});
document.getElementById("plot-close").addEventListener("click", () => {
  document.getElementById("plot-panel").hidden = true;
});
loadTable().then(listen);
