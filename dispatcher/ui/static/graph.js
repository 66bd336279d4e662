// The graph canvas: draws the layout the server computed (one pass per colour, so 10,000 items
// are cheap), with edges along their routes, and lets a person move around it with a mouse,
// a finger (one to pan, two to pinch), or the keyboard (arrows, +/-, 0, Enter); others
// (minimap.js) follow it with on("paint"|"change"). Colours come from the stylesheet (dark mode too).
// Statuses are one letter per node: N R C F X (see live.py).
(function () {
  "use strict";
  const CODES = ["N", "R", "C", "F", "X", "?"];
  const NAMES = {N: "NEW_OBJECT", R: "RUNNING", C: "COMPLETED", F: "FAILED", X: "CANCELLED", "?": "OTHER"};
  const ORDER = ["C", "R", "F", "X", "N", "?"];

  function palette() {
    const css = getComputedStyle(document.documentElement);
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const colors = {};
    for (const c of CODES) colors[c] = v("--s-" + NAMES[c], "#9aa0a6");
    return {colors, edge: v("--edge", "rgba(100,110,125,0.45)"), ink: v("--ink", "#1d2330"),
            muted: v("--muted", "#6b7280"), panel: v("--panel", "#fff"), frame: v("--frame", "#7b8494"),
            sub: v("--sub", "#7c3aed"), focus: v("--focus", "#111"), onDark: "#fff"};
  }

  function Graph(canvas, tip, hooks) {
    const ctx = canvas.getContext("2d");
    const state = {codes: [], layout: null, counts: [], view: {x: 0, y: 0, k: 1}, selected: -1, aim: -1};
    const listeners = {paint: [], change: []};
    const changed = () => { for (const f of listeners.change) f(); };
    let colors = palette();
    const dark = window.matchMedia("(prefers-color-scheme: dark)");
    dark.addEventListener("change", () => { colors = palette(); changed(); draw(); });

    function resize() {
      const dpr = window.devicePixelRatio || 1;
      const r = canvas.getBoundingClientRect();
      canvas.width = Math.max(1, Math.round(r.width * dpr));
      canvas.height = Math.max(1, Math.round(r.height * dpr));
    }

    function size() { const r = canvas.getBoundingClientRect(); return {w: r.width, h: r.height, r: r}; }

    function fit() {
      const lay = state.layout;
      if (!lay) return;
      resize();
      const {w, h} = size();
      const pad = 30;
      const k = Math.min((w - 2 * pad) / Math.max(lay.width, 1), (h - 2 * pad) / Math.max(lay.height, 1), 1.5);
      state.view = {k: k, x: lay.width / 2 - w / 2 / k, y: -pad / k};
      if (lay.height * k < h - 2 * pad) state.view.y = lay.height / 2 - h / 2 / k;
    }

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

    function setLayout(data) { state.layout = data; recount(); changed(); fit(); draw(); }

    // A node's status changed: move it between its box's counts; redraw once per frame.
    function setCode(node, c) {
      const old = state.codes[node];
      state.codes[node] = c;
      const lay = state.layout;
      if (lay) {
        const item = lay.node_item[node];
        if (item >= 0) {
          const counts = state.counts[item];
          if (old) counts[old] = (counts[old] || 1) - 1;
          counts[c] = (counts[c] || 0) + 1;
        }
      }
      changed();
    }

    let frame = 0;
    function draw() {
      if (frame) return;
      frame = requestAnimationFrame(() => { frame = 0; paint(); for (const f of listeners.paint) f(); });
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
      const key = text + "|" + width + "|" + ctx.font;
      let out = clipped.get(key);
      if (out !== undefined) return out;
      out = text;
      while (out.length > 1 && ctx.measureText(out).width > width) out = out.slice(0, -2) + "…";
      clipped.set(key, out);
      return out;
    }

    function paintEdges(items, edges, vx, vy, w, h, k) {
      const straight = edges.length > 2000 && k < 0.3;
      ctx.beginPath();
      for (const e of edges) {
        const a = items[e[0]], b = items[e[1]];
        const y1 = a[4] + a[6] / 2, y2 = b[4] - b[6] / 2;
        if (Math.max(y1, y2) < vy || Math.min(y1, y2) > vy + h) continue;
        let lo = Math.min(a[3], b[3]), hi = Math.max(a[3], b[3]);
        for (let i = 2; i < e.length; i += 2) { lo = Math.min(lo, e[i]); hi = Math.max(hi, e[i]); }
        if (hi < vx || lo > vx + w) continue;
        ctx.moveTo(a[3], y1);
        if (e.length === 2) {
          if (straight) { ctx.lineTo(b[3], y2); continue; }
          const m = (y1 + y2) / 2;
          ctx.bezierCurveTo(a[3], m, b[3], m, b[3], y2);
          continue;
        }
        // A route: straight through the gaps it was given, corners rounded when large enough.
        let px = a[3], py = y1;
        for (let i = 2; i < e.length; i += 2) {
          const nx = e[i], ny = e[i + 1];
          if (straight || i + 2 >= e.length) { ctx.lineTo(nx, ny); px = nx; py = ny; continue; }
          ctx.arcTo(nx, ny, e[i + 2], e[i + 3], 6);
          px = nx; py = ny;
        }
        ctx.lineTo(b[3], y2);
      }
      ctx.strokeStyle = colors.edge;
      ctx.lineWidth = 1 / Math.max(k, 0.2);
      ctx.stroke();
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
      const items = lay.items;
      const visible = (it) => it[3] + it[5] / 2 >= vx && it[3] - it[5] / 2 <= vx + w &&
                              it[4] + it[6] / 2 >= vy && it[4] - it[6] / 2 <= vy + h;
      paintEdges(items, lay.edges, vx, vy, w, h, k);
      const shown = [];
      for (let i = 0; i < items.length; i++) if (visible(items[i])) shown.push(i);
      const byColor = {};
      const subs = [];
      for (const i of shown) {
        const it = items[i];
        if (it[7] < 0) continue;
        const c = state.codes[it[7]] || "?";
        (byColor[c] = byColor[c] || []).push(it);
        if (it[2] === "sublattice") subs.push(it);
      }
      const tiny = k * 30 < 6; // nodes a few pixels high: plain rectangles draw much faster
      for (const c in byColor) {
        ctx.beginPath();
        for (const it of byColor[c]) {
          if (tiny) ctx.rect(it[3] - it[5] / 2, it[4] - it[6] / 2, it[5], it[6]);
          else roundRect(it[3] - it[5] / 2, it[4] - it[6] / 2, it[5], it[6], it[2] === "sublattice" ? 2 : 5);
        }
        ctx.fillStyle = colors.colors[c];
        ctx.fill();
      }
      // A sublattice is a workflow of its own: a second frame around it.
      if (subs.length) {
        ctx.beginPath();
        for (const it of subs) ctx.rect(it[3] - it[5] / 2 - 4, it[4] - it[6] / 2 - 4, it[5] + 8, it[6] + 8);
        ctx.strokeStyle = colors.sub; ctx.lineWidth = 2 / Math.max(k, 0.3); ctx.stroke();
      }
      for (const i of shown) {
        const it = items[i];
        if (it[7] >= 0) continue;
        const x0 = it[3] - it[5] / 2, y0 = it[4] - it[6] / 2;
        ctx.beginPath(); roundRect(x0, y0, it[5], it[6], 6);
        ctx.fillStyle = colors.panel; ctx.fill();
        ctx.strokeStyle = colors.frame; ctx.lineWidth = 1.5 / Math.max(k, 0.3); ctx.stroke();
        let bx = x0 + 6;
        const bw = it[5] - 12, counts = state.counts[i] || {};
        for (const c of ORDER) {
          const n = counts[c] || 0;
          if (!n) continue;
          const part = bw * n / it[8];
          ctx.fillStyle = colors.colors[c];
          ctx.fillRect(bx, y0 + it[6] - 14, part, 8);
          bx += part;
        }
      }
      for (const [index, color, gap] of [[state.selected, colors.focus, 3], [state.aim, colors.sub, 6]]) {
        const it = index >= 0 && items[index];
        if (!it) continue;
        ctx.beginPath(); roundRect(it[3] - it[5] / 2 - gap, it[4] - it[6] / 2 - gap, it[5] + 2 * gap, it[6] + 2 * gap, 7);
        ctx.strokeStyle = color; ctx.lineWidth = 2 / Math.max(k, 0.3); ctx.stroke();
      }
      if (k * 12 >= 7) paintLabels(items, shown);
    }

    // Labels only when big enough to read: the name, and the node's id to tell twins apart.
    function paintLabels(items, shown) {
      ctx.textBaseline = "middle";
      for (const i of shown) {
        const it = items[i];
        if (it[7] >= 0) {
          const c = state.codes[it[7]] || "?";
          const id = "#" + it[7];
          ctx.font = "10.5px system-ui, sans-serif";
          const idw = ctx.measureText(id).width;
          ctx.font = "12px system-ui, sans-serif";
          const name = clip((it[2] === "sublattice" ? "▣ " : "") + it[1], it[5] - 16 - idw);
          const nw = ctx.measureText(name).width;
          const x0 = it[3] - (nw + 5 + idw) / 2;
          ctx.textAlign = "left";
          ctx.fillStyle = c === "N" ? "#1d2330" : colors.onDark;
          ctx.fillText(name, x0, it[4]);
          ctx.font = "10.5px system-ui, sans-serif";
          ctx.globalAlpha = 0.75;
          ctx.fillText(id, x0 + nw + 5, it[4] + 0.5);
          ctx.globalAlpha = 1;
        } else {
          const counts = state.counts[i] || {};
          ctx.textAlign = "center";
          ctx.font = "12px system-ui, sans-serif";
          ctx.fillStyle = colors.ink;
          ctx.fillText(clip(`${it[1]}  ×${it[8]}`, it[5] - 10), it[3], it[4] - 10);
          ctx.fillStyle = colors.muted;
          ctx.font = "10.5px system-ui, sans-serif";
          ctx.fillText(`✓${counts.C || 0}  ▶${counts.R || 0}  ✗${counts.F || 0}`, it[3], it[4] + 2);
        }
      }
    }

    // -- pointer: drag to pan, wheel or pinch to zoom, click or tap to open -------------------

    function toWorld(cx, cy) {
      const r = canvas.getBoundingClientRect();
      return {x: state.view.x + (cx - r.left) / state.view.k, y: state.view.y + (cy - r.top) / state.view.k};
    }
    function hit(p) {
      const items = state.layout ? state.layout.items : [];
      for (let i = items.length - 1; i >= 0; i--) {
        const it = items[i];
        if (Math.abs(p.x - it[3]) <= it[5] / 2 && Math.abs(p.y - it[4]) <= it[6] / 2) return i;
      }
      return -1;
    }
    function zoomAt(cx, cy, factor) {
      const p = toWorld(cx, cy);
      const k = Math.min(Math.max(state.view.k * factor, 0.005), 4);
      const r = canvas.getBoundingClientRect();
      state.view = {k: k, x: p.x - (cx - r.left) / k, y: p.y - (cy - r.top) / k};
      draw();
    }

    const pointers = new Map();
    let gesture = null;
    canvas.addEventListener("pointerdown", (ev) => {
      canvas.setPointerCapture(ev.pointerId);
      pointers.set(ev.pointerId, {x: ev.clientX, y: ev.clientY});
      hideTip();
      const pts = [...pointers.values()];
      gesture = {start: pts.map((p) => ({...p})), view: {...state.view}, moved: pts.length > 1,
                 dist: pts.length > 1 ? Math.hypot(pts[0].x - pts[1].x, pts[0].y - pts[1].y) : 0};
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!pointers.has(ev.pointerId)) { tipAt(ev); return; }
      pointers.set(ev.pointerId, {x: ev.clientX, y: ev.clientY});
      const pts = [...pointers.values()];
      if (!gesture) return;
      if (pts.length >= 2 && gesture.start.length >= 2) {  // pinch: zoom about the fingers' middle
        const d = Math.hypot(pts[0].x - pts[1].x, pts[0].y - pts[1].y);
        const mid = {x: (pts[0].x + pts[1].x) / 2, y: (pts[0].y + pts[1].y) / 2};
        const k = Math.min(Math.max(gesture.view.k * d / Math.max(gesture.dist, 1), 0.005), 4);
        const r = canvas.getBoundingClientRect();
        const m0 = {x: (gesture.start[0].x + gesture.start[1].x) / 2, y: (gesture.start[0].y + gesture.start[1].y) / 2};
        const world = {x: gesture.view.x + (m0.x - r.left) / gesture.view.k, y: gesture.view.y + (m0.y - r.top) / gesture.view.k};
        state.view = {k: k, x: world.x - (mid.x - r.left) / k, y: world.y - (mid.y - r.top) / k};
        gesture.moved = true;
      } else {
        const dx = pts[0].x - gesture.start[0].x, dy = pts[0].y - gesture.start[0].y;
        if (Math.abs(dx) + Math.abs(dy) > 4) { gesture.moved = true; canvas.classList.add("dragging"); }
        state.view.x = gesture.view.x - dx / state.view.k;
        state.view.y = gesture.view.y - dy / state.view.k;
      }
      draw();
    });
    function pointerEnd(ev) {
      if (!pointers.has(ev.pointerId)) return;
      pointers.delete(ev.pointerId);
      canvas.classList.remove("dragging");
      if (gesture && !gesture.moved && pointers.size === 0 && ev.type === "pointerup") {
        const i = hit(toWorld(ev.clientX, ev.clientY));
        if (i >= 0) activate(i);
      }
      if (pointers.size === 0) gesture = null;
      else {  // one finger left of a pinch: pan from here
        const pts = [...pointers.values()];
        gesture = {start: pts.map((p) => ({...p})), view: {...state.view}, moved: true, dist: 0};
      }
    }
    canvas.addEventListener("pointerup", pointerEnd);
    canvas.addEventListener("pointercancel", pointerEnd);
    canvas.addEventListener("pointerleave", (ev) => { if (ev.pointerType === "mouse") hideTip(); });
    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      zoomAt(ev.clientX, ev.clientY, Math.exp(-ev.deltaY * 0.0015));
    }, {passive: false});

    function activate(i) {
      const it = state.layout.items[i];
      if (it[7] >= 0) { state.selected = i; draw(); hooks.open(it[7]); }
      else hooks.expand(it[0]);
    }

    // -- keyboard: arrows pan, +/- zoom, 0 fits, Enter opens the item at the centre ----------

    function centreItem() {
      const {w, h} = size();
      const c = {x: state.view.x + w / 2 / state.view.k, y: state.view.y + h / 2 / state.view.k};
      const items = state.layout ? state.layout.items : [];
      let best = -1, bestD = Infinity;
      for (let i = 0; i < items.length; i++) {
        const d = Math.hypot(items[i][3] - c.x, items[i][4] - c.y);
        if (d < bestD) { bestD = d; best = i; }
      }
      return best;
    }
    canvas.addEventListener("keydown", (ev) => {
      const {w, h, r} = size();
      const step = 80 / state.view.k;
      const moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
      if (moves[ev.key]) {
        state.view.x += moves[ev.key][0]; state.view.y += moves[ev.key][1];
      } else if (ev.key === "+" || ev.key === "=") {
        zoomAt(r.left + w / 2, r.top + h / 2, 1.25);
      } else if (ev.key === "-" || ev.key === "_") {
        zoomAt(r.left + w / 2, r.top + h / 2, 0.8);
      } else if (ev.key === "0") {
        fit();
      } else if (ev.key === "Enter" || ev.key === " ") {
        const i = centreItem();
        if (i >= 0) activate(i);
      } else {
        return;
      }
      ev.preventDefault();
      state.aim = centreItem();
      draw();
    });
    canvas.addEventListener("focus", () => { state.aim = centreItem(); draw(); });
    canvas.addEventListener("blur", () => { state.aim = -1; draw(); });

    // -- the tooltip: what an item is, where the pointer rests -------------------------------

    function hideTip() { if (tip) tip.hidden = true; }
    function tipAt(ev) {
      if (!tip || !state.layout) return;
      const i = hit(toWorld(ev.clientX, ev.clientY));
      if (i < 0) { hideTip(); canvas.style.cursor = ""; return; }
      canvas.style.cursor = "pointer";
      const it = state.layout.items[i];
      const label = window.covalentUI ? window.covalentUI.label : (s) => s;
      let text;
      if (it[7] >= 0) {
        const status = NAMES[state.codes[it[7]] || "?"];
        text = `${it[1]} #${it[7]} · ${label(status)}` + (it[2] === "sublattice" ? " · sublattice" :
               it[2] !== "electron" ? ` · ${it[2]}` : "") + " — click for details";
      } else {
        const c = state.counts[i] || {};
        text = `${it[1]} ×${it[8]}: ${c.C || 0} completed, ${c.R || 0} running, ${c.F || 0} failed` +
               `${c.X ? ", " + c.X + " cancelled" : ""} — click to open the box`;
      }
      tip.textContent = text;
      tip.hidden = false;
      const r = canvas.parentElement.getBoundingClientRect();
      tip.style.left = Math.min(ev.clientX - r.left + 12, r.width - tip.offsetWidth - 4) + "px";
      tip.style.top = (ev.clientY - r.top + 14) + "px";
    }

    window.addEventListener("resize", () => { resize(); draw(); });
    resize();
    return {state, setLayout, setCode, draw, fit, resize, recount, size, colors: () => colors,
            on: (kind, f) => listeners[kind].push(f)};
  }

  window.CovalentGraph = Graph;
})();
