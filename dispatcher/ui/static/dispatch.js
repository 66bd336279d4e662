// The dispatch page: draws the graph from the coordinates the server computed (a canvas, so
// 10,000 items cost one pass per colour), follows the dispatch through server-sent events,
// and opens the node drawer. Statuses are one letter per node: N R C F X (see live.py).
(function () {
  "use strict";
  const COLORS = {N: "#b8bec8", R: "#3b82f6", C: "#1f9d55", F: "#dc3545", X: "#d97706", "?": "#9aa0a6"};
  const NAMES = {N: "NEW_OBJECT", R: "RUNNING", C: "COMPLETED", F: "FAILED", X: "CANCELLED", "?": "OTHER"};
  const ORDER = ["C", "R", "F", "X", "N", "?"];
  const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];

  const page = document.getElementById("dispatch");
  if (!page) return;
  const id = page.dataset.dispatchId;
  const canvas = document.getElementById("graph");
  const ctx = canvas.getContext("2d");
  const state = {
    codes: [], user: "", status: page.dataset.status, layout: null, counts: [],
    showAll: false, expanded: new Set(), view: {x: 0, y: 0, k: 1}, selected: -1, openNode: -1,
  };
  window.covalentGraph = state; // for tests and benchmarks: what is drawn

  // -- graph data ------------------------------------------------------------------------

  async function loadGraph() {
    const q = new URLSearchParams();
    if (state.showAll) q.set("all", "1");
    for (const k of state.expanded) q.append("expand", k);
    const t0 = performance.now();
    const resp = await fetch(`/ui/dispatches/${id}/graph?${q}`, {credentials: "same-origin"});
    if (!resp.ok) { note("The graph could not be loaded; the node table below lists every node."); return; }
    const data = await resp.json();
    if (!state.codes.length) state.codes = data.status.split("");
    if (!state.user) state.user = data.user;
    state.layout = data;
    recount();
    document.getElementById("graph-loading").hidden = true;
    document.getElementById("collapse").hidden = state.expanded.size === 0;
    const boxes = data.items.filter((it) => it[7] < 0).length;
    const shown = data.node_item.filter((i) => i >= 0).length;
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "es"}`;
    note(!data.aggregated ? `${data.items.length} nodes`
         : boxes ? `${shown} nodes: ${plural(boxes, "box")} (one per electron name and layer) and ` +
                   `${data.items.length - boxes} single nodes; click a box to open it`
                 : `${shown} nodes, every box opened`);
    fit();
    draw();
    page.dataset.graphItems = data.items.length;
    page.dataset.graphMs = Math.round(performance.now() - t0);
    page.dataset.graphDrawn = String(performance.now());
  }

  function note(text) { document.getElementById("graph-note").textContent = text; }

  function recount() {
    const lay = state.layout;
    state.counts = lay.items.map(() => ({}));
    lay.node_item.forEach((item, node) => {
      if (item < 0) return;
      const c = state.codes[node] || "?";
      const counts = state.counts[item];
      counts[c] = (counts[c] || 0) + 1;
    });
  }

  // -- drawing ---------------------------------------------------------------------------

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const r = canvas.getBoundingClientRect();
    canvas.width = Math.max(1, Math.round(r.width * dpr));
    canvas.height = Math.max(1, Math.round(r.height * dpr));
  }

  function fit() {
    const lay = state.layout;
    if (!lay) return;
    resize();
    const r = canvas.getBoundingClientRect();
    const pad = 30;
    const k = Math.min((r.width - 2 * pad) / Math.max(lay.width, 1), (r.height - 2 * pad) / Math.max(lay.height, 1), 1.5);
    state.view = {k: k, x: lay.width / 2 - r.width / 2 / k, y: -pad / k};
    if (lay.height * k < r.height - 2 * pad) state.view.y = lay.height / 2 - r.height / 2 / k;
  }

  let frame = 0;
  function draw() {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; paint(); });
  }

  function paint() {
    const lay = state.layout;
    if (!lay) return;
    const dpr = window.devicePixelRatio || 1;
    const {x: vx, y: vy, k} = state.view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr * k, 0, 0, dpr * k, -vx * k * dpr, -vy * k * dpr);
    const w = canvas.width / dpr / k, h = canvas.height / dpr / k;
    const visible = (it) => it[3] + it[5] / 2 >= vx && it[3] - it[5] / 2 <= vx + w &&
                            it[4] + it[6] / 2 >= vy && it[4] - it[6] / 2 <= vy + h;
    const items = lay.items;
    // Edges: one path; straight lines when there are many and they are small on screen.
    const straight = lay.edges.length > 2000 && k < 0.3;
    ctx.beginPath();
    for (const [s, d] of lay.edges) {
      const a = items[s], b = items[d];
      const y1 = a[4] + a[6] / 2, y2 = b[4] - b[6] / 2;
      if (Math.max(y1, y2) < vy || Math.min(y1, y2) > vy + h) continue;
      if (Math.max(a[3], b[3]) < vx || Math.min(a[3], b[3]) > vx + w) continue;
      ctx.moveTo(a[3], y1);
      if (straight) { ctx.lineTo(b[3], y2); continue; }
      const m = (y1 + y2) / 2;
      ctx.bezierCurveTo(a[3], m, b[3], m, b[3], y2);
    }
    ctx.strokeStyle = "rgba(100,110,125,0.45)";
    ctx.lineWidth = 1 / Math.max(k, 0.2);
    ctx.stroke();
    // Nodes: one fill per status colour.
    const shown = [];
    for (let i = 0; i < items.length; i++) if (visible(items[i])) shown.push(i);
    const byColor = {};
    for (const i of shown) {
      const it = items[i];
      if (it[7] < 0) continue;
      const c = state.codes[it[7]] || "?";
      (byColor[c] = byColor[c] || []).push(it);
    }
    const tiny = k * 30 < 6; // nodes a few pixels high: plain rectangles draw much faster
    for (const c in byColor) {
      ctx.beginPath();
      for (const it of byColor[c]) {
        if (tiny) ctx.rect(it[3] - it[5] / 2, it[4] - it[6] / 2, it[5], it[6]);
        else roundRect(it[3] - it[5] / 2, it[4] - it[6] / 2, it[5], it[6], 5);
      }
      ctx.fillStyle = COLORS[c];
      ctx.fill();
    }
    // Boxes: a frame with a bar of its members' statuses.
    for (const i of shown) {
      const it = items[i];
      if (it[7] >= 0) continue;
      const x0 = it[3] - it[5] / 2, y0 = it[4] - it[6] / 2;
      ctx.beginPath(); roundRect(x0, y0, it[5], it[6], 6);
      ctx.fillStyle = "#fff"; ctx.fill();
      ctx.strokeStyle = "#7b8494"; ctx.lineWidth = 1.5 / Math.max(k, 0.3); ctx.stroke();
      let bx = x0 + 6;
      const bw = it[5] - 12, counts = state.counts[i] || {};
      for (const c of ORDER) {
        const n = counts[c] || 0;
        if (!n) continue;
        const part = bw * n / it[8];
        ctx.fillStyle = COLORS[c];
        ctx.fillRect(bx, y0 + it[6] - 14, part, 8);
        bx += part;
      }
    }
    if (state.selected >= 0 && items[state.selected]) {
      const it = items[state.selected];
      ctx.beginPath(); roundRect(it[3] - it[5] / 2 - 3, it[4] - it[6] / 2 - 3, it[5] + 6, it[6] + 6, 7);
      ctx.strokeStyle = "#111"; ctx.lineWidth = 2 / Math.max(k, 0.3); ctx.stroke();
    }
    // Labels, only when they are big enough to read.
    if (k * 12 >= 7) {
      ctx.font = "12px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      for (const i of shown) {
        const it = items[i];
        if (it[7] >= 0) {
          const c = state.codes[it[7]] || "?";
          ctx.fillStyle = c === "N" ? "#1d2330" : "#fff";
          ctx.fillText(clip(it[1], it[5] - 10), it[3], it[4]);
        } else {
          const counts = state.counts[i] || {};
          ctx.fillStyle = "#1d2330";
          ctx.fillText(clip(`${it[1]}  ×${it[8]}`, it[5] - 10), it[3], it[4] - 10);
          ctx.fillStyle = "#4b5563";
          ctx.font = "10.5px system-ui, sans-serif";
          ctx.fillText(`✓${counts.C || 0}  ▶${counts.R || 0}  ✗${counts.F || 0}`, it[3], it[4] + 2);
          ctx.font = "12px system-ui, sans-serif";
        }
      }
    }
  }

  function roundRect(x, y, w, h, r) {
    ctx.moveTo(x + r, y);
    ctx.arcTo(x + w, y, x + w, y + h, r);
    ctx.arcTo(x + w, y + h, x, y + h, r);
    ctx.arcTo(x, y + h, x, y, r);
    ctx.arcTo(x, y, x + w, y, r);
    ctx.closePath();
  }

  const clipped = new Map();
  function clip(text, width) {
    const key = text + "|" + width;
    let out = clipped.get(key);
    if (out !== undefined) return out;
    out = text;
    while (out.length > 1 && ctx.measureText(out).width > width) out = out.slice(0, -2) + "…";
    clipped.set(key, out);
    return out;
  }

  // -- interaction -----------------------------------------------------------------------

  function toWorld(ev) {
    const r = canvas.getBoundingClientRect();
    return {x: state.view.x + (ev.clientX - r.left) / state.view.k, y: state.view.y + (ev.clientY - r.top) / state.view.k};
  }

  function hit(p) {
    const items = state.layout ? state.layout.items : [];
    for (let i = items.length - 1; i >= 0; i--) {
      const it = items[i];
      if (Math.abs(p.x - it[3]) <= it[5] / 2 && Math.abs(p.y - it[4]) <= it[6] / 2) return i;
    }
    return -1;
  }

  let drag = null;
  canvas.addEventListener("mousedown", (ev) => { drag = {x: ev.clientX, y: ev.clientY, moved: false, view: {...state.view}}; });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
    state.view.x = drag.view.x - dx / state.view.k;
    state.view.y = drag.view.y - dy / state.view.k;
    draw();
  });
  window.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const moved = drag.moved;
    drag = null;
    canvas.classList.remove("dragging");
    if (!moved && ev.target === canvas) click(ev);
  });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const p = toWorld(ev);
    const k = Math.min(Math.max(state.view.k * Math.exp(-ev.deltaY * 0.0015), 0.005), 4);
    const r = canvas.getBoundingClientRect();
    state.view = {k: k, x: p.x - (ev.clientX - r.left) / k, y: p.y - (ev.clientY - r.top) / k};
    draw();
  }, {passive: false});

  function click(ev) {
    const i = hit(toWorld(ev));
    if (i < 0) return;
    const it = state.layout.items[i];
    if (it[7] >= 0) { state.selected = i; draw(); openDrawer(it[7]); return; }
    state.expanded.add(it[0]);
    page.dataset.expandedAt = String(performance.now());
    note("Opening the box…");
    loadGraph();
  }

  document.getElementById("fit").addEventListener("click", () => { fit(); draw(); });
  document.getElementById("collapse").addEventListener("click", () => { state.expanded.clear(); loadGraph(); });
  document.getElementById("show-all").addEventListener("change", (ev) => { state.showAll = ev.target.checked; loadGraph(); });
  window.addEventListener("resize", () => { resize(); draw(); });

  // -- the node drawer -------------------------------------------------------------------

  const drawer = document.getElementById("drawer");
  async function openDrawer(node) {
    state.openNode = node;
    const resp = await fetch(`/ui/dispatches/${id}/nodes/${node}`, {credentials: "same-origin"});
    drawer.innerHTML = await resp.text(); // rendered and escaped by the server
    drawer.hidden = false;
    if (window.location.hash !== `#node=${node}`) history.replaceState(null, "", `#node=${node}`);
  }
  function closeDrawer() {
    drawer.hidden = true;
    state.openNode = -1;
    state.selected = -1;
    draw();
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  document.addEventListener("click", (ev) => {
    const open = ev.target.closest("[data-open-node]");
    if (open) { ev.preventDefault(); openDrawer(Number(open.dataset.openNode)); return; }
    if (ev.target.closest("[data-close-drawer]")) closeDrawer();
  });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !drawer.hidden) closeDrawer(); });
  function drawerFromHash() {
    const m = /^#node=(\d+)$/.exec(window.location.hash);
    if (m && Number(m[1]) !== state.openNode) openDrawer(Number(m[1]));
  }
  window.addEventListener("hashchange", drawerFromHash);
  drawerFromHash();

  // -- live ------------------------------------------------------------------------------

  function setStatus(status) {
    state.status = status;
    page.dataset.status = status;
    const badge = document.getElementById("d-status");
    if (badge) { badge.textContent = status; badge.className = "badge big s-" + status; }
  }

  function summarise() {
    const counts = {};
    let total = 0;
    for (let i = 0; i < state.codes.length; i++) {
      if (state.user[i] !== "1") continue;
      total++;
      counts[state.codes[i]] = (counts[state.codes[i]] || 0) + 1;
    }
    const done = counts.C || 0;
    const set = (elId, v) => { const el = document.getElementById(elId); if (el) el.textContent = v; };
    set("d-done", done);
    set("d-total", total);
    const bar = document.getElementById("d-bar");
    if (bar) bar.style.width = (total ? 100 * done / total : 0) + "%";
    for (const el of document.querySelectorAll("[data-count]")) {
      const code = Object.keys(NAMES).find((c) => NAMES[c] === el.dataset.count);
      el.querySelector("b").textContent = counts[code] || 0;
    }
  }

  function applyChanges(changes) {
    const lay = state.layout;
    const table = document.getElementById("node-table");
    for (const [node, c] of changes) {
      const old = state.codes[node];
      state.codes[node] = c;
      if (lay) {
        const item = lay.node_item[node];
        if (item >= 0) {
          const counts = state.counts[item];
          if (old) counts[old] = (counts[old] || 1) - 1;
          counts[c] = (counts[c] || 0) + 1;
        }
      }
      const row = table && table.querySelector(`tr[data-node="${node}"] [data-role=status]`);
      if (row) { row.textContent = NAMES[c]; row.className = "badge s-" + NAMES[c]; }
      if (node === state.openNode) openDrawer(node);
    }
    summarise();
    draw();
  }

  let events = null;
  function follow() {
    events = new EventSource(`/ui/dispatches/${id}/events`);
    events.addEventListener("snapshot", (ev) => {
      const data = JSON.parse(ev.data);
      state.user = data.user;
      const changes = [];
      for (let i = 0; i < data.nodes.length; i++) if (state.codes[i] !== data.nodes[i]) changes.push([i, data.nodes[i]]);
      if (!state.codes.length) state.codes = data.nodes.split("");
      setStatus(data.status);
      applyChanges(changes);
    });
    events.addEventListener("update", (ev) => {
      const data = JSON.parse(ev.data);
      setStatus(data.status);
      applyChanges(data.nodes);
    });
    events.addEventListener("end", async (ev) => {
      events.close();
      setStatus(JSON.parse(ev.data).status);
      const resp = await fetch(`/ui/dispatches/${id}/summary`, {credentials: "same-origin"});
      if (resp.ok) {
        const summary = document.getElementById("summary");
        summary.innerHTML = await resp.text();
        htmx.process(summary);
        summarise();
      }
      page.dataset.ended = "1";
    });
  }
  window.addEventListener("pagehide", () => { if (events) events.close(); });

  resize();
  follow();
  loadGraph();
})();
