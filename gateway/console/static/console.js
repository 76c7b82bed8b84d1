// dockwatch operator console: live updates (Server-Sent Events), sorting, filters and actions.
// Written for this console, no dependencies (GPL-3.0-or-later, as the rest of dockwatch).
"use strict";
(function () {
  const page = document.body.dataset.page;
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));
  const MAX_ROWS = 500;

  const ISO = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?Z$/;
  function shown(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "string" && ISO.test(value)) return value.replace(ISO, "$1 $2");
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "number" && !Number.isInteger(value)) return value.toFixed(2);
    return String(value);
  }

  // --- tables ------------------------------------------------------------------------------
  function fields(table) {
    return $$("thead th[data-field]", table).map((th) => th.dataset.field);
  }
  function fillRow(row, table, data) {
    const names = fields(table);
    names.forEach((name, i) => {
      let cell = row.cells[i];
      if (!cell) { cell = row.insertCell(); cell.dataset.field = name; }
      if (name in data) cell.textContent = shown(data[name]);
    });
    if ("state" in data) row.dataset.state = data.state;
  }
  function upsert(tableId, key, data, options) {
    const table = document.getElementById(tableId);
    if (!table) return null;
    const id = tableId + "-" + key;
    let row = document.getElementById(id);
    const isNew = !row;
    if (isNew) {
      row = document.createElement("tr");
      row.id = id;
      const body = table.tBodies[0];
      if (options && options.append) body.appendChild(row); else body.insertBefore(row, body.firstChild);
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    }
    fillRow(row, table, data);
    if (isNew) { row.classList.add("new"); }
    return row;
  }
  function sortable() {
    $$("th button.sort").forEach((button) => {
      button.addEventListener("click", () => {
        const th = button.closest("th");
        const table = th.closest("table");
        const index = Array.from(th.parentNode.children).indexOf(th);
        const descending = th.dataset.sorted === "asc";
        $$("th", table).forEach((h) => delete h.dataset.sorted);
        th.dataset.sorted = descending ? "desc" : "asc";
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        const rows = Array.from(table.tBodies[0].rows);
        rows.sort((a, b) => {
          const x = a.cells[index].textContent, y = b.cells[index].textContent;
          const nx = Number(x), ny = Number(y);
          const order = x !== "" && y !== "" && !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
          return descending ? -order : order;
        });
        rows.forEach((r) => table.tBodies[0].appendChild(r));
      });
    });
  }

  // --- the operator token and actions --------------------------------------------------------
  const tokenInput = $("#operator-token");
  if (tokenInput) {
    tokenInput.value = sessionStorage.getItem("dockwatch-operator-token") || "";
    tokenInput.addEventListener("change", () =>
      sessionStorage.setItem("dockwatch-operator-token", tokenInput.value));
  }
  function notice(text, isError) {
    const box = $("#notice");
    if (!box) return;
    box.hidden = !text;
    box.textContent = text || "";
    box.className = isError ? "notice" : "notice ok";
  }
  async function act(url, body) {
    const headers = {};
    if (tokenInput && tokenInput.value) headers["X-Operator-Token"] = tokenInput.value;
    const response = await fetch(url, { method: "POST", headers: headers, body: body });
    let answer = {};
    try { answer = await response.json(); } catch (e) { answer = { error: response.statusText }; }
    return { ok: response.ok, status: response.status, answer: answer };
  }
  function describe(result) {
    if (result.ok) return result.answer.message || "done";
    const lines = [result.status + ": " + (result.answer.error || "refused")];
    (result.answer.problems || []).forEach((p) => lines.push(p));
    return lines.join("\n");
  }
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.action");
    if (!button) return;
    const result = await act(button.dataset.action);
    notice(describe(result), !result.ok);
  });
  function ackButtons() {
    $$("table[data-ack]").forEach((table) => {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = "Action";
      table.tHead.rows[0].appendChild(th);
    });
    $$("table[data-ack] tbody tr").forEach(addAck);
  }
  function addAck(row) {
    const table = row.closest("table");
    if (!table || !table.hasAttribute("data-ack")) return;
    const active = $('td[data-field="active"]', row), acked = $('td[data-field="acknowledged"]', row);
    let cell = $("td.ack", row);
    if (!cell) { cell = row.insertCell(); cell.className = "ack"; }
    cell.textContent = "";
    if (active && active.textContent === "yes" && acked && acked.textContent !== "yes") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "action";
      button.textContent = "Acknowledge";
      button.dataset.action = "/actions/alerts/" + encodeURIComponent(row.id.slice(table.id.length + 1)) + "/acknowledge";
      cell.appendChild(button);
    }
  }
  const upload = $("#receipts-upload");
  if (upload) {
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      const out = $("#upload-result");
      out.textContent = "uploading…";
      const result = await act("/actions/receipts", new FormData(upload));
      out.textContent = describe(result);
      out.className = result.ok ? "result" : "result error";
    });
  }

  // --- filters -------------------------------------------------------------------------------
  const search = $("#filter");
  if (search) {
    search.addEventListener("input", () => {
      const needle = search.value.trim().toLowerCase();
      $$("#" + search.dataset.filter + " tbody tr").forEach((row) => {
        row.hidden = needle !== "" && !row.textContent.toLowerCase().includes(needle);
      });
    });
  }
  const movementFilters = $("#movement-filters");
  function movementShown(row) {
    if (!movementFilters) return true;
    const kind = movementFilters.elements.kind.value;
    const location = movementFilters.elements.location.value.trim().toLowerCase();
    const sku = movementFilters.elements.sku.value.trim().toLowerCase();
    const cell = (f) => { const c = $('td[data-field="' + f + '"]', row); return c ? c.textContent.toLowerCase() : ""; };
    return (!kind || cell("kind") === kind)
      && (!location || cell("from_location").includes(location) || cell("to_location").includes(location))
      && (!sku || cell("sku").includes(sku));
  }
  if (movementFilters) {
    movementFilters.addEventListener("input", () =>
      $$("#movements tbody tr").forEach((row) => { row.hidden = !movementShown(row); }));
  }

  // --- shelves: the weight trace ---------------------------------------------------------------
  const traces = (() => { const el = $("#traces"); return el ? JSON.parse(el.textContent) : {}; })();
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach((k) => el.setAttribute(k, attrs[k]));
    parent.appendChild(el);
    return el;
  }
  function drawShelf(shelfId) {
    const trace = traces[shelfId];
    const section = document.getElementById("shelf-" + shelfId);
    if (!trace || !section) return;
    const box = $("svg.trace", section);
    while (box.firstChild) box.removeChild(box.firstChild);
    const samples = trace.samples.filter((s) => s[1] !== null);  // null: a garbage reading
    if (samples.length < 2) { svg("text", { x: 10, y: 20 }, box).textContent = "waiting for samples…"; return; }
    const t0 = samples[0][0], t1 = samples[samples.length - 1][0];
    let lo = Infinity, hi = -Infinity;
    samples.forEach((s) => { lo = Math.min(lo, s[1]); hi = Math.max(hi, s[1]); });
    const pad = Math.max((hi - lo) * 0.1, trace.unit_weight_g || 1);
    lo -= pad; hi += pad;
    const x = (t) => 5 + 590 * (t - t0) / Math.max(t1 - t0, 1e-9);
    const y = (g) => 155 - 150 * (g - lo) / (hi - lo);
    svg("polyline", { class: "w", points: samples.map((s) => x(s[0]).toFixed(1) + "," + y(s[1]).toFixed(1)).join(" ") }, box);
    // Stable plateaus: runs of at least 5 samples within a fifth of a unit of the run's start.
    const band = (trace.unit_weight_g || 1) / 5;
    let start = 0;
    for (let i = 1; i <= samples.length; i++) {
      if (i === samples.length || Math.abs(samples[i][1] - samples[start][1]) > band) {
        if (i - start >= 5) {
          const g = samples[start][1];
          svg("line", { class: "plateau", x1: x(samples[start][0]), x2: x(samples[i - 1][0]), y1: y(g), y2: y(g) }, box);
        }
        start = i;
      }
    }
    if (trace.baseline_g !== null && trace.baseline_g >= lo && trace.baseline_g <= hi) {
      svg("line", { class: "baseline", x1: 5, x2: 595, y1: y(trace.baseline_g), y2: y(trace.baseline_g) }, box);
    }
    // Picks, restocks and adjustments: a coloured vertical line at the sample that settled them.
    trace.marks.forEach((m) => {
      if (m[0] < t0) return;
      const mark = svg("line", { class: "mark " + m[1], x1: x(m[0]), x2: x(m[0]), y1: 2, y2: 158 }, box);
      svg("title", {}, mark).textContent = m[1] + " " + m[2];
    });
  }
  const pending = new Set();
  function redrawSoon(shelfId) {
    if (pending.size === 0) requestAnimationFrame(() => { pending.forEach(drawShelf); pending.clear(); });
    pending.add(shelfId);
  }

  // --- doors: reads per antenna ------------------------------------------------------------------
  const strips = {};
  const BLOCKS = "▁▂▃▄▅▆▇█";
  function drawStrips(perSecond, totals) {
    $$("#antennas tbody tr").forEach((row) => {
      const key = $('td[data-field="reader"]', row).textContent + ":" + $('td[data-field="antenna"]', row).textContent;
      const history = strips[key] || (strips[key] = []);
      history.push(perSecond[key] || 0);
      if (history.length > 60) history.shift();
      const top = Math.max(1, ...history);
      $('td[data-field="strip"]', row).textContent = history.map((n) => n === 0 ? "·" : BLOCKS[Math.min(7, Math.floor(7 * n / top))]).join("");
      if (key in totals) $('td[data-field="reads"]', row).textContent = totals[key];
    });
  }

  // --- doors: the reads of one pass or tag, per antenna ------------------------------------------
  const passEpcs = (() => { const el = $("#pass-epcs"); return el ? JSON.parse(el.textContent) : {}; })();
  let chosenEpcs = null;
  function passButton(row) {
    const seq = row.id.slice("passes-".length);
    if (!passEpcs[seq] || !passEpcs[seq].length || $("td.reads", row)) return;
    const cell = row.insertCell();
    cell.className = "reads";
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Reads";
    button.addEventListener("click", () => { chosenEpcs = passEpcs[seq]; showReads(); });
    cell.appendChild(button);
  }
  if ($("#passes")) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = "Reads";
    $("#passes").tHead.rows[0].appendChild(th);
    $$("#passes tbody tr").forEach(passButton);
  }
  const tagForm = $("#tag-form");
  if (tagForm) {
    tagForm.addEventListener("submit", () => {
      const epc = tagForm.elements.epc.value.trim();
      chosenEpcs = epc ? [epc] : null;
      showReads();
    });
  }
  async function showReads() {
    const box = $("#tag-reads");
    if (!box || !chosenEpcs) return;
    const query = chosenEpcs.map((e) => "epc=" + encodeURIComponent(e)).join("&");
    const response = await fetch("/doors/reads?" + query);
    if (!response.ok) return;
    const reads = (await response.json()).reads;
    while (box.firstChild) box.removeChild(box.firstChild);
    const legend = $("#tag-legend");
    if (!reads.length) {
      svg("text", { x: 10, y: 20 }, box).textContent = "no reads of this pass or tag are kept";
      legend.textContent = "";
      return;
    }
    const bands = Array.from(new Set(reads.map((r) => r.reader + ":" + r.antenna))).sort();
    const t0 = Math.min(...reads.map((r) => r.at_us)), t1 = Math.max(...reads.map((r) => r.at_us));
    const height = 160 / bands.length;
    const x = (t) => 5 + 590 * (t - t0) / Math.max(t1 - t0, 1);
    bands.forEach((band, i) => {
      svg("line", { class: "baseline", x1: 0, x2: 600, y1: (i + 1) * height, y2: (i + 1) * height }, box);
    });
    // Band names in HTML over the chart (text inside a stretched SVG would be distorted).
    const labels = $("#tag-bands");
    if (labels) {
      labels.textContent = "";
      bands.forEach((band) => {
        const item = document.createElement("span");
        item.textContent = band;
        item.style.height = (100 / bands.length) + "%";
        labels.appendChild(item);
      });
    }
    reads.forEach((r) => {
      const band = bands.indexOf(r.reader + ":" + r.antenna);
      const rssi = r.rssi === null ? -60 : Math.max(-90, Math.min(-20, r.rssi));
      const y = band * height + height * (1 - (rssi + 90) / 70);
      svg("line", { class: "mark restock", x1: x(r.at_us), x2: x(r.at_us) + 0.5, y1: y, y2: y + 3 }, box);
    });
    const counts = bands.map((b) => b + ": " + reads.filter((r) => r.reader + ":" + r.antenna === b).length + " reads");
    legend.textContent = "top to bottom, RSSI -90..-20 dBm over " + ((t1 - t0) / 1e6).toFixed(1) + " s: " + counts.join(", ");
  }

  // --- live events -------------------------------------------------------------------------------
  const handlers = {
    movement(m) {
      if (page === "movements") {
        const row = upsert("movements", m.seq, m);
        if (row) row.hidden = !movementShown(row);
      }
      if (page === "doors" && m.source_type === "rfid_portal") {
        passEpcs[m.seq] = m.epcs;
        passButton(upsert("passes", m.seq, m));
      }
    },
    stock(s) {
      if (page === "stock") {
        const row = upsert("stock", s.location + "|" + s.sku, s);
        if (row && search && search.value) search.dispatchEvent(new Event("input"));
      }
      if (page === "shelves") {
        $$("section.shelf").forEach((section) => {
          if (section.dataset.location === s.location && section.dataset.sku === s.sku) {
            $(".on-hand", section).textContent = s.on_hand;
          }
        });
      }
    },
    alert(a) {
      if (page === "alerts") addAck(upsert("alerts", a.alert_id, a));
      if (page === "overview") {
        const id = "active-alerts-" + a.alert_id;
        if (a.active) addAck(upsert("active-alerts", a.alert_id, a));
        else { const row = document.getElementById(id); if (row) row.remove(); }
      }
    },
    device(d) {
      if (page === "overview") upsert("devices", d.device_id, d);
    },
    sample(s) {
      if (page !== "shelves" || !traces[s.shelf_id]) return;
      const trace = traces[s.shelf_id];
      trace.samples.push([s.at, s.grams, s.stable]);
      if (trace.samples.length > 1200) trace.samples.shift();
      s.marks.forEach((m) => trace.marks.push([s.at, m.kind, m.quantity]));
      redrawSoon(s.shelf_id);
    },
    tick(t) {
      if (page === "overview") {
        $("#last-seq").textContent = t.last_seq;
        $("#this-minute").textContent = t.this_minute;
        Object.keys(t.sinks).forEach((sink) => upsert("sinks", sink, { sink: sink, lag: t.sinks[sink], acked: t.last_seq - t.sinks[sink] }));
      }
      if (page === "doors") { drawStrips(t.antennas, t.reads); showReads(); }
      const receiptsTable = page === "doors" ? "door-receipts" : page === "receipts" ? "receipts" : null;
      if (receiptsTable) {
        const open = new Set();
        t.receipts.forEach((r) => { upsert(receiptsTable, r.receipt_id, r, { append: true }); open.add(receiptsTable + "-" + r.receipt_id); });
        if (page === "doors") $$("#door-receipts tbody tr").forEach((row) => { if (!open.has(row.id)) row.remove(); });
      }
    },
  };
  function connect() {
    const live = $("#live");
    if (!live || !window.EventSource) return;
    const source = new EventSource("/events?page=" + encodeURIComponent(page));
    source.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); });
    source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.classList.remove("on"); });
    Object.keys(handlers).forEach((kind) =>
      source.addEventListener(kind, (event) => handlers[kind](JSON.parse(event.data))));
    source.addEventListener("reload", () => { source.close(); window.location.reload(); });
  }

  sortable();
  ackButtons();
  Object.keys(traces).forEach(drawShelf);
  connect();
})();
