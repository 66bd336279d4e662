// The minimap of a big graph: every item as a dot (drawn once per change, then copied), the
// view's rectangle over it; a click or a drag on it moves the view there.
(function () {
  "use strict";

  function Minimap(minimap, graph) {
    const overview = document.createElement("canvas");
    let stale = true;
    function mapScale() {
      const lay = graph.state.layout;
      const s = Math.min(minimap.width / Math.max(lay.width, 1), minimap.height / Math.max(lay.height, 1));
      return {s, ox: (minimap.width - lay.width * s) / 2, oy: (minimap.height - lay.height * s) / 2};
    }
    function wanted() {  // more than a screenful of items
      const lay = graph.state.layout;
      if (!lay) return false;
      const {w, h} = graph.size();
      return lay.items.length > 150 || lay.width * 0.5 > w || lay.height * 0.5 > h;
    }
    function paint() {
      const want = wanted();
      minimap.hidden = !want;
      if (!want) return;
      const dpr = window.devicePixelRatio || 1;
      const cw = Math.round(minimap.clientWidth * dpr), ch = Math.round(minimap.clientHeight * dpr);
      if (!cw || !ch) return;  // its panel is hidden (the Timeline tab)
      if (minimap.width !== cw || minimap.height !== ch) { minimap.width = cw; minimap.height = ch; stale = true; }
      const lay = graph.state.layout;
      const {s, ox, oy} = mapScale();
      if (stale) {
        overview.width = minimap.width; overview.height = minimap.height;
        const o = overview.getContext("2d");
        const by = {};
        for (let i = 0; i < lay.items.length; i++) {
          const it = lay.items[i];
          const c = it[7] >= 0 ? (graph.state.codes[it[7]] || "?") : "box";
          (by[c] = by[c] || []).push(it);
        }
        for (const c in by) {
          o.fillStyle = c === "box" ? graph.colors().frame : graph.colors().colors[c];
          for (const it of by[c]) {
            o.fillRect(ox + (it[3] - it[5] / 2) * s, oy + (it[4] - it[6] / 2) * s,
                       Math.max(it[5] * s, 1), Math.max(it[6] * s, 1));
          }
        }
        stale = false;
      }
      const m = minimap.getContext("2d");
      m.clearRect(0, 0, minimap.width, minimap.height);
      m.drawImage(overview, 0, 0);
      const {w, h} = graph.size();
      const v = graph.state.view;
      m.strokeStyle = graph.colors().focus;
      m.lineWidth = 1.5 * dpr;
      m.strokeRect(ox + v.x * s, oy + v.y * s, w / v.k * s, h / v.k * s);
    }
    function moveTo(ev) {
      const r = minimap.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      const {s, ox, oy} = mapScale();
      const {w, h} = graph.size();
      const x = ((ev.clientX - r.left) * dpr - ox) / s, y = ((ev.clientY - r.top) * dpr - oy) / s;
      graph.state.view.x = x - w / 2 / graph.state.view.k;
      graph.state.view.y = y - h / 2 / graph.state.view.k;
      graph.draw();
    }
    let dragging = false;
    minimap.addEventListener("pointerdown", (ev) => { dragging = true; minimap.setPointerCapture(ev.pointerId); moveTo(ev); });
    minimap.addEventListener("pointermove", (ev) => { if (dragging) moveTo(ev); });
    minimap.addEventListener("pointerup", () => { dragging = false; });

    graph.on("change", () => { stale = true; });
    graph.on("paint", paint);
  }

  window.CovalentMinimap = Minimap;
})();
