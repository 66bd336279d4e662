// Behaviour shared by every page: copy buttons, actions (cancel, redispatch, delete) as
// same-origin JSON requests, running clocks, and the dispatch list's live updates (#15).
(function () {
  "use strict";

  function toast(text) {
    const el = document.createElement("div");
    el.className = "toast";
    el.textContent = text;
    document.body.appendChild(el);
    setTimeout(() => el.remove(), 4000);
  }

  // Actions send Content-Type: application/json, which no cross-site form can (security.py).
  async function act(method, path) {
    const resp = await fetch("/api/v1" + path, {
      method: method, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: method === "DELETE" ? null : "{}",
    });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(body.message || resp.statusText);
    return body;
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
    const id = button.dataset.id, action = button.dataset.action;
    try {
      if (action === "cancel") {
        await act("POST", `/dispatches/${id}/cancel`);
        toast("Cancelling…");
      } else if (action === "redispatch") {
        const out = await act("POST", `/dispatches/${id}/redispatch`);
        window.location.assign(`/dispatches/${out.dispatch_id}`);
      } else if (action === "delete") {
        if (!window.confirm("Delete this dispatch, its nodes' records and outputs?")) return;
        await act("DELETE", `/dispatches/${id}`);
        const row = button.closest("tr[data-id]");
        if (button.dataset.then) window.location.assign(button.dataset.then);
        else if (row) row.remove();
      }
    } catch (e) {
      toast(`${action} failed: ${e.message}`);
    }
  });

  function duration(s) {
    if (s < 10) return s.toFixed(2) + " s";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " m " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " m";
  }
  window.covalentDuration = duration;

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
  function followList() {
    const table = document.getElementById("dispatches");
    if (source) { source.close(); source = null; }
    if (!table) return;
    source = new EventSource("/ui/events?ids=" + encodeURIComponent(table.dataset.ids));
    source.addEventListener("rows", (ev) => {
      for (const r of JSON.parse(ev.data)) {
        const tr = table.querySelector(`tr[data-id="${r.id}"]`);
        if (!tr) continue;
        tr.dataset.status = r.status;
        const badge = tr.querySelector("[data-role=status]");
        badge.textContent = r.status;
        badge.className = "badge s-" + r.status;
        tr.querySelector("[data-role=done]").textContent = r.done;
        tr.querySelector("[data-role=total]").textContent = r.total;
        tr.querySelector(".bar-mini i").style.width = (r.total ? 100 * r.done / r.total : 0) + "%";
      }
    });
    source.addEventListener("new", () => {
      if (table.dataset.liveNew) htmx.ajax("GET", window.location.pathname + window.location.search, "#table");
      else document.querySelector(".new-banner").hidden = false;
    });
  }
  document.addEventListener("DOMContentLoaded", followList);
  document.addEventListener("htmx:afterSettle", (ev) => { if (ev.target.id === "table") followList(); });
  window.addEventListener("pagehide", () => { if (source) source.close(); });
  window.covalentToast = toast;
})();
