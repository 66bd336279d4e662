// The dispatch page: the graph (graph.js) from the layout the server computed, the live
// updates (server-sent events), the node drawer (a dialog: focus moves into it and back), a
// running node's output so far (asked for only while its drawer is open), the Graph/Timeline
// tabs, and the node table's filter, sort and page kept in the address.
(function () {
  "use strict";
  const NAMES = {N: "NEW_OBJECT", R: "RUNNING", C: "COMPLETED", F: "FAILED", X: "CANCELLED", "?": "OTHER"};
  const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];
  const LIVE_OUTPUT_MS = 1500;

  // Where a running node prints: the embedded cluster's workers listen on Unix sockets named
  // <pid>-<random>.sock, so say which process; any other address as it is (full one on hover).
  function workerLabel(address) {
    const m = /^unix:\/\/.*\/(\d+)-[0-9a-f]+\.sock$/.exec(address || "");
    return m ? `worker process ${m[1]} on this machine` : (address || "its worker");
  }

  const page = document.getElementById("dispatch");
  if (!page) return;
  const ui = window.covalentUI;
  const id = page.dataset.dispatchId;
  const drawer = document.getElementById("drawer");
  const state = {user: "", status: page.dataset.status, showAll: false, expanded: new Set(), openNode: -1};
  const graph = window.CovalentGraph(document.getElementById("graph"), document.getElementById("graph-tip"),
                                     {open: openDrawer, expand: expandBox});
  window.CovalentMinimap(document.getElementById("minimap"), graph);
  // For tests and benchmarks: what is drawn (layout, view, codes) and the page's own state.
  window.covalentGraph = graph.state;
  Object.assign(graph.state, {page: state});

  // -- graph data ------------------------------------------------------------------------

  async function loadGraph() {
    const q = new URLSearchParams();
    if (state.showAll) q.set("all", "1");
    for (const k of state.expanded) q.append("expand", k);
    const t0 = performance.now();
    const resp = await fetch(`/ui/dispatches/${id}/graph?${q}`, {credentials: "same-origin"});
    if (!resp.ok) { note("The graph could not be loaded; the node table below lists every node."); return; }
    const data = await resp.json();
    if (!graph.state.codes.length) graph.state.codes = data.status.split("");
    if (!state.user) state.user = data.user;
    document.getElementById("graph-loading").hidden = true;
    document.getElementById("collapse").hidden = state.expanded.size === 0;
    const boxes = data.items.filter((it) => it[7] < 0).length;
    const shown = data.node_item.filter((i) => i >= 0).length;
    const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "es"}`;
    note(!data.aggregated ? `${data.items.length} node${data.items.length === 1 ? "" : "s"}`
         : boxes ? `${shown} nodes: ${plural(boxes, "box")} (one per electron name and layer) and ` +
                   `${data.items.length - boxes} single nodes; click a box to open it`
                 : `${shown} nodes, every box opened`);
    graph.setLayout(data);
    page.dataset.graphItems = data.items.length;
    page.dataset.graphMs = Math.round(performance.now() - t0);
    page.dataset.graphDrawn = String(performance.now());
  }

  function note(text) { document.getElementById("graph-note").textContent = text; }

  function expandBox(key) {
    state.expanded.add(key);
    page.dataset.expandedAt = String(performance.now());
    note("Opening the box…");
    loadGraph();
  }

  document.getElementById("fit").addEventListener("click", () => { graph.fit(); graph.draw(); });
  document.getElementById("collapse").addEventListener("click", () => { state.expanded.clear(); loadGraph(); });
  document.getElementById("show-all").addEventListener("change", (ev) => { state.showAll = ev.target.checked; loadGraph(); });

  // -- tabs: the graph or the timeline ---------------------------------------------------

  const tabs = [...document.querySelectorAll("[role=tab]")];
  function showTab(tab, remember) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (tab.id === "tab-timeline" && window.covalentTimeline) window.covalentTimeline.show();
    if (tab.id === "tab-graph") { graph.resize(); graph.draw(); }
    if (remember) {
      const url = new URL(window.location.href);
      if (tab.id === "tab-timeline") url.searchParams.set("view", "timeline"); else url.searchParams.delete("view");
      history.replaceState(null, "", url);
    }
  }
  for (const t of tabs) {
    t.addEventListener("click", () => showTab(t, true));
    t.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(t);
      const next = ev.key === "ArrowRight" ? tabs[(i + 1) % tabs.length] : ev.key === "ArrowLeft" ? tabs[(i + tabs.length - 1) % tabs.length] : null;
      if (next) { ev.preventDefault(); next.focus(); showTab(next, true); }
    });
  }

  // -- the node table: its filter, sort and page are in the address -----------------------

  document.addEventListener("htmx:afterSettle", (ev) => {
    if (ev.target.id !== "nodes") return;
    const path = ev.detail.pathInfo && ev.detail.pathInfo.finalRequestPath || "";
    const query = path.includes("?") ? path.slice(path.indexOf("?") + 1) : "";
    const keep = new URLSearchParams(window.location.search).get("view");
    const params = new URLSearchParams(query);
    for (const [k, v] of [...params]) if (!v || (k === "page" && v === "1") || (k === "sort" && v === "id") || (k === "order" && v === "asc")) params.delete(k);
    if (keep) params.set("view", keep);
    const qs = params.toString();
    history.replaceState(null, "", window.location.pathname + (qs ? "?" + qs : "") + window.location.hash);
  });

  // -- the node drawer: a dialog; focus goes in, and back where it was on close ------------

  let returnFocus = null;
  let returnTo = "";  // where the same link is found again if a live update redrew it meanwhile
  let liveTimer = 0;
  function whereFound(el) {
    const n = el && el.getAttribute && el.getAttribute("data-open-node");
    const box = n !== null && n !== undefined && el.closest("[id]");
    return box ? `#${CSS.escape(box.id)} [data-open-node="${CSS.escape(n)}"]` : "";
  }
  async function openDrawer(node, keepFocus) {
    const first = drawer.hidden;
    if (first && !keepFocus) {
      returnFocus = document.activeElement;
      returnTo = whereFound(returnFocus);
    }
    state.openNode = node;
    const resp = await fetch(`/ui/dispatches/${id}/nodes/${node}`, {credentials: "same-origin"});
    // the whole body first: another node opened while it arrives wins (this one must neither
    // fill the drawer nor put its own number back in the address)
    const text = await resp.text().catch(() => "");
    if (state.openNode !== node) return;
    if (resp.ok) {
      drawer.innerHTML = text; // rendered and escaped by the server
      ui.localTimes(drawer);
    } else {
      let body = {};
      try { body = JSON.parse(text); } catch (e) { /* not JSON: the status text says it */ }
      drawer.replaceChildren();
      const head = document.createElement("div");
      head.className = "drawer-head";
      head.innerHTML = '<h2 id="drawer-title"></h2><button type="button" class="close" data-close-drawer aria-label="Close">×</button>';
      head.querySelector("h2").textContent = `No node ${node}`;
      const p = document.createElement("p");
      p.id = "drawer-missing";
      p.textContent = resp.status === 404 ? `This dispatch has no node ${node}` +
        ` (its nodes are numbered 0 to ${Math.max(graph.state.codes.length - 1, 0)}).` : (body.message || resp.statusText);
      drawer.append(head, p);
    }
    drawer.hidden = false;
    if (first && !keepFocus) drawer.focus();
    if (window.location.hash !== `#node=${node}`) history.replaceState(null, "", `#node=${node}`);
    followOutput(node);
  }

  function closeDrawer() {
    drawer.hidden = true;
    state.openNode = -1;
    graph.state.selected = -1;
    clearTimeout(liveTimer);
    graph.draw();
    history.replaceState(null, "", window.location.pathname + window.location.search);
    if (returnFocus && !document.contains(returnFocus) && returnTo)
      returnFocus = document.querySelector(returnTo);
    if (returnFocus && document.contains(returnFocus)) returnFocus.focus();
    returnFocus = null;
    returnTo = "";
  }

  // While the drawer shows a RUNNING node, ask for what it printed so far, every moment.
  function followOutput(node) {
    clearTimeout(liveTimer);
    const box = drawer.querySelector("[data-live-output]");
    if (!box) return;
    const poll = async () => {
      if (state.openNode !== node || drawer.hidden) return;
      const resp = await fetch(`/ui/dispatches/${id}/nodes/${node}/output-so-far`, {credentials: "same-origin"});
      if (state.openNode !== node) return;
      if (resp.ok) {
        const out = await resp.json();
        for (const stream of ["stdout", "stderr"]) {
          const pre = drawer.querySelector(`#drawer-${stream}`);
          const empty = drawer.querySelector(`#drawer-${stream}-empty`);
          if (!pre) continue;
          const text = out[stream] || "";
          if (pre.textContent !== text) pre.textContent = text;
          pre.hidden = !text;
          if (empty) empty.hidden = !!text;
        }
        const where = drawer.querySelector("#drawer-live-note");
        if (where) {
          where.textContent = out.running ? `printed so far on ${workerLabel(out.worker)}, updated live` : "";
          where.title = out.worker || "";
        }
        if (!out.running) return;
      }
      liveTimer = setTimeout(poll, LIVE_OUTPUT_MS);
    };
    poll();
  }

  document.addEventListener("click", (ev) => {
    const open = ev.target.closest("[data-open-node]");
    if (open) { ev.preventDefault(); openDrawer(Number(open.dataset.openNode)); return; }
    if (ev.target.closest("[data-close-drawer]")) closeDrawer();
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !drawer.hidden) { ev.preventDefault(); closeDrawer(); }
  });
  function drawerFromHash() {
    const m = /^#node=(.*)$/.exec(window.location.hash);
    if (!m) return;
    const n = /^\d{1,9}$/.test(m[1]) ? Number(m[1]) : NaN;
    if (Number.isNaN(n)) { showMissing(decodeURIComponent(m[1])); return; }
    if (n !== state.openNode) openDrawer(n, true);
  }
  function showMissing(raw) {
    drawer.replaceChildren();
    const head = document.createElement("div");
    head.className = "drawer-head";
    head.innerHTML = '<h2 id="drawer-title">No such node</h2><button type="button" class="close" data-close-drawer aria-label="Close">×</button>';
    const p = document.createElement("p");
    p.id = "drawer-missing";
    p.textContent = `“${raw}” is not a node id: the address can end in #node= and a number, such as #node=0.`;
    drawer.append(head, p);
    drawer.hidden = false;
  }
  window.addEventListener("hashchange", drawerFromHash);

  // -- live ------------------------------------------------------------------------------

  function setStatus(status) {
    const was = state.status;
    state.status = status;
    page.dataset.status = status;
    const badge = document.getElementById("d-status");
    if (badge) ui.setBadge(badge, status);
    if (TERMINAL.includes(status) && !TERMINAL.includes(was)) {
      for (const t of document.querySelectorAll("#toasts .toast")) t.remove();  // "Cancel requested"
    }
  }

  function summarise() {
    const counts = {};
    let total = 0;
    const codes = graph.state.codes;
    for (let i = 0; i < codes.length; i++) {
      if (state.user[i] !== "1") continue;
      total++;
      counts[codes[i]] = (counts[codes[i]] || 0) + 1;
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
    const table = document.getElementById("node-table");
    for (const [node, c] of changes) {
      graph.setCode(node, c);
      const badge = table && table.querySelector(`tr[data-node="${node}"] [data-role=status]`);
      if (badge) ui.setBadge(badge, NAMES[c]);
      if (node === state.openNode) openDrawer(node, true);
    }
    summarise();
    graph.draw();
    if (window.covalentTimeline && changes.length) window.covalentTimeline.stale();
    if (changes.length) refreshTable(false);
  }

  // The node table's other columns (started, runtime, a sublattice's link) follow the
  // commits too: its page is fetched again at most every 2 s while the dispatch runs, and
  // once when it ends. Only the rows and the count are replaced: a filter being typed stays.
  let tableTimer = null;
  function refreshTable(now) {
    if (tableTimer !== null && !now) return;
    clearTimeout(tableTimer);
    const run = async () => {
      tableTimer = null;
      const url = document.getElementById("node-table")?.dataset.url;
      if (!url) return;
      const resp = await fetch(url, {credentials: "same-origin"});
      if (!resp.ok) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const table = document.getElementById("node-table");
      const rows = doc.querySelector("#node-table tbody");
      if (!table || !rows || table.dataset.url !== url) return;  // the filter moved it meanwhile
      const focused = table.contains(document.activeElement) ? whereFound(document.activeElement) : "";
      table.querySelector("tbody").replaceWith(document.adoptNode(rows));
      if (focused) document.querySelector(focused)?.focus();  // a keyboard user keeps their place
      const count = doc.getElementById("node-matching");
      const shown = document.getElementById("node-matching");
      if (count && shown) shown.textContent = count.textContent;
      ui.localTimes(table);
      table.dataset.refreshed = String(Number(table.dataset.refreshed || 0) + 1);
    };
    if (now) return run();
    tableTimer = setTimeout(run, 2000);
    return Promise.resolve();
  }

  let events = null;
  function follow() {
    events = new EventSource(`/ui/dispatches/${id}/events`);
    events.addEventListener("snapshot", (ev) => {
      const data = JSON.parse(ev.data);
      state.user = data.user;
      const codes = graph.state.codes;
      const changes = [];
      for (let i = 0; i < data.nodes.length; i++) if (codes[i] !== data.nodes[i]) changes.push([i, data.nodes[i]]);
      if (!codes.length) graph.state.codes = data.nodes.split("");
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
        ui.localTimes(summary);
        summarise();
      }
      if (window.covalentTimeline) window.covalentTimeline.stale();
      await refreshTable(true);
      page.dataset.ended = "1";
    });
  }
  window.addEventListener("pagehide", () => { if (events) events.close(); });
  // A browser opens at most 6 connections to one server, and each open stream holds one: a
  // hidden tab gives its stream back, so any number of tabs can be open (at the 6th, every
  // page of the UI stopped loading). Shown again, a new stream's snapshot brings it up to date.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (events) { events.close(); events = null; }
    } else if (!events && page.dataset.ended !== "1") {
      follow();
    }
  });

  if (!document.hidden) follow();
  loadGraph();
  drawerFromHash();
  if (new URLSearchParams(window.location.search).get("view") === "timeline") {
    // After every deferred script (timeline.js comes after this one) has run.
    document.addEventListener("DOMContentLoaded", () => showTab(document.getElementById("tab-timeline"), false));
  }
  window.covalentOpenNode = openDrawer;
})();
