// Behaviour shared by every page: copy buttons, actions (cancel, redispatch, start, delete,
// bulk delete) as same-origin JSON requests, times in the browser's zone, running clocks,
// and the dispatch list's live updates (#15, #24).
(function () {
  "use strict";

  const LABELS = {NEW_OBJECT: "Not started", RUNNING: "Running", COMPLETED: "Completed",
                  FAILED: "Failed", CANCELLED: "Cancelled"};
  const TERMINAL = ["COMPLETED", "FAILED", "CANCELLED"];
  const label = (s) => LABELS[s] || s.charAt(0) + s.slice(1).toLowerCase().replace(/_/g, " ");

  // A short message in the corner (never over the graph's middle); gone after a few seconds.
  function toast(text, kind) {
    const box = document.getElementById("toasts");
    if (!box) return null;
    const el = document.createElement("div");
    el.className = "toast" + (kind ? " " + kind : "");
    el.textContent = text;
    box.appendChild(el);
    setTimeout(() => el.remove(), kind === "error" ? 8000 : 3000);
    return el;
  }

  function setBadge(el, status) {
    el.textContent = label(status);
    el.title = status;
    el.dataset.status = status;
    el.className = el.className.replace(/\bs-[A-Z_]+\b/, "s-" + status);
  }

  // Actions send Content-Type: application/json, which no cross-site form can (security.py).
  async function act(method, path, body) {
    const resp = await fetch("/api/v1" + path, {
      method: method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: method === "DELETE" ? null : JSON.stringify(body || {}),
    });
    const out = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(out.message || resp.statusText);
    return out;
  }

  function refreshList() {
    if (document.getElementById("table")) {
      htmx.ajax("GET", window.location.pathname + window.location.search, "#table");
    }
  }

  function picked() {
    return [...document.querySelectorAll("#dispatches .pick-row:checked")].map((b) => b.value);
  }

  function updateSelection() {
    const count = picked().length;
    const button = document.querySelector("[data-action=delete-selected]");
    const span = document.getElementById("selected-count");
    if (span) span.textContent = count;
    if (button) button.disabled = count === 0;
  }

  async function run(action, button) {
    const id = button.dataset.id;
    if (action === "cancel") {
      if (!window.confirm("Cancel this dispatch? Its unfinished nodes stop; completed ones keep their outputs.")) return;
      button.disabled = true;
      await act("POST", `/dispatches/${id}/cancel`, {task_ids: []});
      toast("Cancel requested");
    } else if (action === "redispatch") {
      const out = await act("POST", `/dispatches/${id}/redispatch`);
      window.location.assign(`/dispatches/${out.dispatch_id}`);
    } else if (action === "start") {
      const out = await act("POST", `/dispatches/${id}/start`);
      toast(out.started ? "Started" : "It had started already");
      if (button.dataset.then) window.location.assign(button.dataset.then); else refreshList();
    } else if (action === "delete") {
      if (!window.confirm("Delete this dispatch, its nodes' records and outputs?")) return;
      await act("DELETE", `/dispatches/${id}`);
      if (button.dataset.then) window.location.assign(button.dataset.then); else refreshList();
    } else if (action === "stop-triggers") {
      const n = document.querySelectorAll(`button[data-action=stop-triggers][data-id="${id}"]`).length;
      if (!window.confirm(n > 1 ? `Stop all ${n} triggers of this dispatch?` : "Stop this trigger? It will not fire again.")) return;
      const out = await act("POST", "/triggers/stop", {dispatch_ids: [id]});
      toast(`Stopped ${out.stopped}`);
      window.location.reload();
    } else if (action === "delete-selected") {
      const ids = picked();
      if (!ids.length || !window.confirm(`Delete ${ids.length} dispatch${ids.length === 1 ? "" : "es"}, their records and outputs?`)) return;
      const out = await act("POST", "/listing/delete", {dispatch_ids: ids});
      toast(`Deleted ${out.deleted.length}`);
      refreshList();
    } else if (action === "delete-matching") {
      const bulk = document.getElementById("bulk");
      const n = Number(button.dataset.count);
      const what = n === 1 ? "the finished dispatch" : `all ${n} finished dispatches`;
      if (!window.confirm(`Delete ${what} this filter matches (every page), with records and outputs?`)) return;
      const out = await act("POST", "/listing/delete", {filter: {
        status: bulk.dataset.filterStatus, q: bulk.dataset.filterQ, age: bulk.dataset.filterAge}});
      toast(`Deleted ${out.deleted.length}`);
      refreshList();
    }
  }

  document.addEventListener("click", async (ev) => {
    const copy = ev.target.closest("[data-copy]");
    if (copy) {
      ev.preventDefault();
      try { await navigator.clipboard.writeText(copy.dataset.copy); } catch (e) { /* no clipboard */ }
      copy.classList.add("done");
      setTimeout(() => copy.classList.remove("done"), 1200);
      return;
    }
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    try {
      await run(button.dataset.action, button);
    } catch (e) {
      button.disabled = false;
      toast(`${button.textContent.trim()} failed: ${e.message}`, "error");
    }
  });

  document.addEventListener("change", (ev) => {
    if (ev.target.id === "select-all") {
      for (const box of document.querySelectorAll("#dispatches .pick-row")) box.checked = ev.target.checked;
    }
    if (ev.target.id === "select-all" || ev.target.classList.contains("pick-row")) updateSelection();
  });

  // Times are sent in UTC (and say so); the browser shows them in its own zone, and says which.
  const zone = new Intl.DateTimeFormat(undefined, {timeZoneName: "short"}).formatToParts(new Date())
    .find((p) => p.type === "timeZoneName");
  const pad = (n) => String(n).padStart(2, "0");
  function localTimes(root) {
    for (const el of (root || document).querySelectorAll("time[datetime]:not([data-local])")) {
      const t = new Date(el.getAttribute("datetime"));
      if (isNaN(t)) continue;
      el.textContent = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
        `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())} ${zone ? zone.value : ""}`.trim();
      el.dataset.local = "1";
    }
  }
  document.addEventListener("DOMContentLoaded", () => localTimes());
  document.addEventListener("htmx:afterSettle", (ev) => localTimes(ev.target));

  function duration(s) {
    if (s < 10) return s.toFixed(2) + " s";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " m " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " m";
  }

  // A running clock is drawn by the browser; nothing is asked of the server.
  setInterval(() => {
    for (const el of document.querySelectorAll("[data-start]:not([data-start=''])[data-end='']")) {
      const row = el.closest("[data-status]");
      if (row && !["RUNNING", "NEW_OBJECT"].includes(row.dataset.status)) continue;
      el.textContent = duration((Date.now() - Date.parse(el.dataset.start)) / 1000);
    }
  }, 1000);

  // The dispatch list: rows change in place as the server pushes commits.
  let source = null;
  function updateRow(table, r) {
    const tr = table.querySelector(`tr[data-id="${r.id}"]`);
    if (!tr) return;
    const was = tr.dataset.status;
    tr.dataset.status = r.status;
    setBadge(tr.querySelector("[data-role=status]"), r.status);
    if (was !== r.status) moveCount(was, r.status);
    if ("start" in r) setTimes(tr, r.start || "", r.end || "");
    tr.querySelector("[data-role=done]").textContent = r.done;
    tr.querySelector("[data-role=total]").textContent = r.total;
    tr.querySelector(".bar-mini i").style.width = (r.total ? 100 * r.done / r.total : 0) + "%";
    if (TERMINAL.includes(r.status) && !TERMINAL.includes(was)) {
      // It can be deleted now: the same controls a reload would show.
      const actions = tr.querySelector("td.actions");
      actions.replaceChildren();
      const del = document.createElement("button");
      Object.assign(del, {type: "button", className: "danger small", textContent: "Delete"});
      del.dataset.action = "delete";
      del.dataset.id = r.id;
      actions.appendChild(del);
      const pick = tr.querySelector("td.pick");
      if (!pick.querySelector("input")) {
        const box = document.createElement("input");
        Object.assign(box, {type: "checkbox", className: "pick-row", value: r.id});
        box.setAttribute("aria-label", "Select " + r.id.slice(0, 8));
        pick.appendChild(box);
      }
    }
  }

  // The status chips' counts follow the rows that move (All stays).
  function moveCount(from, to) {
    for (const [status, step] of [[from, -1], [to, 1]]) {
      const b = document.querySelector(`[data-filter="${status}"] b`);
      if (b) b.textContent = Math.max(0, Number(b.textContent) + step);
    }
  }

  // A row's start and end as the server has them: the runtime a reload would show.
  function setTimes(tr, start, end) {
    const rt = tr.querySelector("td.rt");
    if (!rt) return;
    rt.dataset.start = start;
    rt.dataset.end = end;
    if (start && end) rt.textContent = duration((Date.parse(end) - Date.parse(start)) / 1000);
    const started = rt.previousElementSibling;
    if (start && started && !started.querySelector("time")) {
      const t = document.createElement("time");
      t.setAttribute("datetime", start);
      started.replaceChildren(t);
      localTimes(started);
    }
  }

  function followList() {
    const table = document.getElementById("dispatches");
    if (source) { source.close(); source = null; }
    updateSelection();
    if (!table || document.hidden) return;  // (opened in the background: followed when shown)
    source = new EventSource("/ui/events?ids=" + encodeURIComponent(table.dataset.ids));
    source.addEventListener("rows", (ev) => { for (const r of JSON.parse(ev.data)) updateRow(table, r); });
    source.addEventListener("new", () => {
      if (table.dataset.liveNew) refreshList();
      else document.querySelector(".new-banner").hidden = false;
    });
  }
  document.addEventListener("DOMContentLoaded", followList);
  document.addEventListener("htmx:afterSettle", (ev) => { if (ev.target.id === "table") followList(); });
  window.addEventListener("pagehide", () => { if (source) source.close(); });
  // As a dispatch's page does: a hidden tab closes its stream (a browser's 6 connections to one
  // server are soon taken otherwise); shown again, the table is read anew and followed.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      if (source) { source.close(); source = null; }
    } else if (!source && document.getElementById("dispatches")) {
      refreshList();
    }
  });
  window.covalentUI = {toast, label, setBadge, localTimes, duration, act};
  window.covalentDuration = duration;
})();
