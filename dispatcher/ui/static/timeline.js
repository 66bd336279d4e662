// The Timeline tab: each electron a bar over time, in rows by the worker that ran it, the
// critical path outlined; hover for details, click to open the node. Loaded when the tab is
// first shown, and again (at most every 2 s) while the dispatch runs and the tab is shown.
(function () {
  "use strict";
  const NAMES = {N: "NEW_OBJECT", R: "RUNNING", C: "COMPLETED", F: "FAILED", X: "CANCELLED", "?": "OTHER"};
  const ROW = 18, AXIS = 26, GUTTER = 170, REFRESH_MS = 2000;
  const page = document.getElementById("dispatch");
  const canvas = document.getElementById("timeline");
  if (!page || !canvas) return;
  const id = page.dataset.dispatchId;
  const tip = document.getElementById("timeline-tip");
  const ctx = canvas.getContext("2d");
  const state = {data: null, shown: false, stale: true, loading: false, last: 0};
  window.covalentTimelineState = state;

  function colors() {
    const css = getComputedStyle(document.documentElement);
    const v = (n, f) => css.getPropertyValue(n).trim() || f;
    const out = {ink: v("--ink", "#1d2330"), muted: v("--muted", "#6b7280"), line: v("--line", "#e3e6eb"),
                 crit: v("--focus", "#111")};
    for (const c in NAMES) out[c] = v("--s-" + NAMES[c], "#9aa0a6");
    return out;
  }

  async function load() {
    if (state.loading) return;
    state.loading = true;
    state.stale = false;
    state.last = performance.now();
    try {
      const [bars, stats] = await Promise.all([
        fetch(`/ui/dispatches/${id}/timeline`, {credentials: "same-origin"}),
        fetch(`/ui/dispatches/${id}/stats`, {credentials: "same-origin"})]);
      if (bars.ok) state.data = await bars.json();
      if (stats.ok) {
        const box = document.getElementById("timeline-stats");
        box.innerHTML = await stats.text(); // rendered and escaped by the server
      }
      paint();
      page.dataset.timelineDrawn = String(performance.now());
    } finally {
      state.loading = false;
    }
  }

  function geometry() {
    const d = state.data;
    const width = canvas.parentElement.clientWidth;
    const gutter = width < 500 ? 90 : GUTTER;
    const span = Math.max(d.span, 1e-3);
    const x = (t) => gutter + (width - gutter - 12) * t / span;
    return {width, gutter, span, x, height: AXIS + Math.max(d.lanes.length, 1) * ROW + 6};
  }

  function ticks(span) {
    const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    const step = steps.find((s) => span / s <= 8) || 3600 * Math.ceil(span / 3600 / 8);
    const out = [];
    for (let t = 0; t <= span + 1e-9; t += step) out.push(t);
    return out;
  }

  function paint() {
    const d = state.data;
    if (!d || !state.shown) return;
    const c = colors();
    const g = geometry();
    const dpr = window.devicePixelRatio || 1;
    canvas.style.height = g.height + "px";
    canvas.width = Math.round(g.width * dpr);
    canvas.height = Math.round(g.height * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, g.width, g.height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    // The time axis.
    ctx.fillStyle = c.muted;
    ctx.strokeStyle = c.line;
    ctx.beginPath();
    for (const t of ticks(g.span)) {
      const x = g.x(t);
      ctx.moveTo(x, AXIS - 4); ctx.lineTo(x, g.height);
      ctx.textAlign = "center";
      ctx.fillText(window.covalentUI.duration(t).replace(".00 s", " s"), x, AXIS / 2);
    }
    ctx.stroke();
    // Lane labels: a worker's name once, on its first row.
    ctx.textAlign = "left";
    let last = null;
    d.lanes.forEach(([group, row], i) => {
      const y = AXIS + i * ROW;
      if (group !== last) {
        ctx.fillStyle = c.ink;
        ctx.fillText(clip(group.replace(/^tcp:\/\//, ""), g.gutter - 8), 4, y + ROW / 2);
        if (i) { ctx.strokeStyle = c.line; ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(g.width, y); ctx.stroke(); }
      }
      last = group;
    });
    // Bars: one fill per status colour; the critical path outlined.
    const by = {};
    for (const b of d.bars) (by[b[2]] = by[b[2]] || []).push(b);
    for (const code in by) {
      ctx.fillStyle = c[code] || c["?"];
      ctx.beginPath();
      for (const b of by[code]) ctx.rect(g.x(b[3]), AXIS + b[5] * ROW + 3, Math.max(g.x(b[4]) - g.x(b[3]), 2), ROW - 6);
      ctx.fill();
    }
    ctx.strokeStyle = c.crit;
    ctx.lineWidth = 2;
    ctx.beginPath();
    for (const b of d.bars) if (b[6]) ctx.rect(g.x(b[3]) - 1, AXIS + b[5] * ROW + 2, Math.max(g.x(b[4]) - g.x(b[3]), 2) + 2, ROW - 4);
    ctx.stroke();
    ctx.lineWidth = 1;
  }

  function clip(text, width) {
    let out = text;
    while (out.length > 1 && ctx.measureText(out).width > width) out = out.slice(0, -2) + "…";
    return out;
  }

  function barAt(ev) {
    const d = state.data;
    if (!d) return null;
    const r = canvas.getBoundingClientRect();
    const g = geometry();
    const x = ev.clientX - r.left, y = ev.clientY - r.top;
    const lane = Math.floor((y - AXIS) / ROW);
    let best = null;
    for (const b of d.bars) {
      if (b[5] !== lane) continue;
      const x0 = g.x(b[3]), x1 = Math.max(g.x(b[4]), x0 + 2);
      if (x >= x0 - 2 && x <= x1 + 2) best = b;
    }
    return best;
  }

  canvas.addEventListener("pointermove", (ev) => {
    const b = barAt(ev);
    if (!b) { tip.hidden = true; canvas.style.cursor = ""; return; }
    const d = state.data, dur = window.covalentUI.duration;
    canvas.style.cursor = "pointer";
    tip.textContent = `${d.names[b[1]]} #${b[0]} · ${window.covalentUI.label(NAMES[b[2]])} · ran ${dur(b[4] - b[3])}` +
      ` from +${dur(b[3])} · queued ${dur(b[7])} · ${d.lanes[b[5]][0]}${b[6] ? " · critical path" : ""}`;
    tip.hidden = false;
    const r = canvas.parentElement.getBoundingClientRect();
    tip.style.left = Math.min(ev.clientX - r.left + 12, r.width - tip.offsetWidth - 4) + "px";
    tip.style.top = (ev.clientY - r.top + 14) + "px";
  });
  canvas.addEventListener("pointerleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (ev) => {
    const b = barAt(ev);
    if (b && window.covalentOpenNode) window.covalentOpenNode(b[0]);
  });
  window.addEventListener("resize", paint);

  window.covalentTimeline = {
    show() { state.shown = true; if (state.stale || !state.data) load(); else paint(); },
    stale() {
      state.stale = true;
      if (!state.shown || state.loading) return;
      const wait = Math.max(REFRESH_MS - (performance.now() - state.last), 0);
      setTimeout(() => { if (state.stale && !document.getElementById("view-timeline").hidden) load(); }, wait);
    },
  };
})();
