/* cloudfilm measuring tools: length, angle, elliptical and freehand ROI and point probe, drawn on the image.

   Geometry in image pixel coordinates ((0, 0) = top-left corner of the top-left pixel), on an SVG
   layer that copies the findings overlay's size and transform. Lengths and areas use PixelSpacing
   (PS3.3 10.7.1.3: patient plane); where only ImagerPixelSpacing exists they are at the detector
   plane and flagged so ("calibrated at detector"); with neither they are in pixels ("uncalibrated px").
   ROI statistics and the probe read modality values (e.g. HU) from the frame decoded by pixels.js.
   Each measurement belongs to its slice and is shown only there. Tool modes are drag modes in
   a "Measure" group beside viewer.js's "Drag does": viewer.js ignores drags in a mode it does not know
   (pinch still zooms). */
(function () {
  "use strict";
  const viewer = window.cloudfilmViewer, pixels = window.cloudfilmPixels;
  const vp = document.getElementById("viewport"), img = document.getElementById("frame");
  const findingsLayer = document.getElementById("overlay");
  const dataEl = document.getElementById("study-data");
  if (!viewer || !pixels || !vp || !img || !findingsLayer || !dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const TOOLS = [["length", "Length", "Measure a distance"], ["angle", "Angle", "Measure an angle: drag one arm, then click the other end"],
                 ["ellipse", "ROI", "Elliptical region: area, mean, SD, min and max"], ["probe", "Probe", "Value of a pixel"]];
  TOOLS.splice(3, 0, ["freehand", "Freehand", "Freehand region: draw its outline; area, mean, SD, min and max"]);
  const ROI_KINDS = ["ellipse", "freehand"];

  const layer = document.createElementNS(SVG, "svg");
  layer.id = "measurements";
  layer.setAttribute("class", "overlay measurements");
  layer.setAttribute("aria-hidden", "true");
  findingsLayer.after(layer);

  /* The layer moves and scales with the findings overlay (viewer.js sets its size and transform). */
  function follow() {
    ["width", "height", "viewBox"].forEach(function (a) {
      const v = findingsLayer.getAttribute(a);
      if (v != null) layer.setAttribute(a, v);
    });
    layer.style.transform = findingsLayer.style.transform;
    layer.style.setProperty("--px", findingsLayer.style.getPropertyValue("--px") || "1");
    draw();
  }
  new MutationObserver(follow).observe(findingsLayer, { attributes: true, attributeFilter: ["style", "viewBox", "width", "height"] });

  const measurements = [];   // {kind, key, points, result}
  let active = null;         // the measurement being drawn

  function current() {
    const st = viewer.state, s = data.series[st.s], sl = st.slices[st.i];
    return s && sl ? { series: s.uid, sop: sl.sop, frame: sl.frame, key: s.uid + "/" + sl.sop + "/" + sl.frame } : null;
  }

  function toImage(e) {
    const r = img.getBoundingClientRect(), st = viewer.state;
    if (!r.width || !st.natW) return null;
    return [(e.clientX - r.left) / r.width * st.natW, (e.clientY - r.top) / r.height * st.natH];
  }

  /* --- calibration and statistics ----------------------------------------------------------- */
  /** Millimetres per pixel along rows and columns, and how far to trust them. */
  function calibration(h) {
    if (h && h.pixelSpacing && h.pixelSpacing.length === 2 && h.pixelSpacing[0] > 0) {
      return { row: h.pixelSpacing[0], col: h.pixelSpacing[1], unit: "mm", flag: "" };
    }
    if (h && h.imagerPixelSpacing && h.imagerPixelSpacing.length === 2 && h.imagerPixelSpacing[0] > 0) {
      return { row: h.imagerPixelSpacing[0], col: h.imagerPixelSpacing[1], unit: "mm", flag: "calibrated at detector" };
    }
    return { row: 1, col: 1, unit: "px", flag: "uncalibrated px" };
  }

  function length(p, q, cal) {
    return Math.hypot((q[0] - p[0]) * cal.col, (q[1] - p[1]) * cal.row);
  }

  function angle(a, v, b, cal) {
    const ux = (a[0] - v[0]) * cal.col, uy = (a[1] - v[1]) * cal.row;
    const wx = (b[0] - v[0]) * cal.col, wy = (b[1] - v[1]) * cal.row;
    const d = Math.hypot(ux, uy) * Math.hypot(wx, wy);
    return d ? Math.acos(Math.max(-1, Math.min(1, (ux * wx + uy * wy) / d))) * 180 / Math.PI : 0;
  }

  function unitOf(h) {
    if (!h) return "";
    if (h.rescaleType) return h.rescaleType === "US" ? "" : h.rescaleType;
    return h.modality === "CT" ? "HU" : "";
  }

  /** Statistics of the pixels whose centres lie inside the axis-aligned ellipse in box p-q. */
  function ellipseStats(p, q, entry) {
    const h = entry.header;
    const cx = (p[0] + q[0]) / 2, cy = (p[1] + q[1]) / 2, rx = Math.abs(q[0] - p[0]) / 2, ry = Math.abs(q[1] - p[1]) / 2;
    if (rx < 0.5 || ry < 0.5) return null;
    let n = 0, sum = 0, sq = 0, lo = Infinity, hi = -Infinity;
    const r0 = Math.max(0, Math.floor(cy - ry)), r1 = Math.min(h.rows - 1, Math.ceil(cy + ry));
    const c0 = Math.max(0, Math.floor(cx - rx)), c1 = Math.min(h.cols - 1, Math.ceil(cx + rx));
    for (let r = r0; r <= r1; r++) {
      const dy = (r + 0.5 - cy) / ry;
      for (let c = c0; c <= c1; c++) {
        const dx = (c + 0.5 - cx) / rx;
        if (dx * dx + dy * dy > 1) continue;
        const v = pixels.modalityAt(entry, r * h.cols + c);
        n++; sum += v; sq += v * v;
        if (v < lo) lo = v; if (v > hi) hi = v;
      }
    }
    if (!n) return null;
    const mean = sum / n;
    return { n: n, mean: mean, sd: Math.sqrt(Math.max(0, sq / n - mean * mean)), min: lo, max: hi };
  }

  /** Area of a closed outline in pixels² (shoelace formula). */
  function polygonArea(p) {
    let a = 0;
    for (let k = 0, j = p.length - 1; k < p.length; j = k++) a += (p[j][0] + p[k][0]) * (p[j][1] - p[k][1]);
    return Math.abs(a) / 2;
  }

  /** Statistics of the pixels whose centres lie inside the closed outline (even-odd rule). */
  function polygonStats(p, entry) {
    const h = entry.header;
    const xs = p.map(function (q) { return q[0]; }), ys = p.map(function (q) { return q[1]; });
    const r0 = Math.max(0, Math.floor(Math.min.apply(null, ys))), r1 = Math.min(h.rows - 1, Math.ceil(Math.max.apply(null, ys)));
    const c0 = Math.max(0, Math.floor(Math.min.apply(null, xs))), c1 = Math.min(h.cols - 1, Math.ceil(Math.max.apply(null, xs)));
    let n = 0, sum = 0, sq = 0, lo = Infinity, hi = -Infinity;
    for (let r = r0; r <= r1; r++) {
      const y = r + 0.5, cuts = [];
      for (let k = 0, j = p.length - 1; k < p.length; j = k++) {
        const a = p[j], b = p[k];
        if ((a[1] > y) !== (b[1] > y)) cuts.push(a[0] + (y - a[1]) / (b[1] - a[1]) * (b[0] - a[0]));
      }
      cuts.sort(function (u, v) { return u - v; });
      for (let k = 0; k + 1 < cuts.length; k += 2) {
        // Pixel centres c + 0.5 inside [cuts[k], cuts[k + 1]).
        const from = Math.max(c0, Math.ceil(cuts[k] - 0.5)), to = Math.min(c1, Math.ceil(cuts[k + 1] - 0.5) - 1);
        for (let c = from; c <= to; c++) {
          const v = pixels.modalityAt(entry, r * h.cols + c);
          n++; sum += v; sq += v * v;
          if (v < lo) lo = v; if (v > hi) hi = v;
        }
      }
    }
    if (!n) return null;
    const mean = sum / n;
    return { n: n, mean: mean, sd: Math.sqrt(Math.max(0, sq / n - mean * mean)), min: lo, max: hi };
  }

  function fmt(v, digits) { return Number.isFinite(v) ? v.toFixed(digits) : "–"; }
  const T = window.cloudfilm.t;  // the page's UI texts (common.js)
  /** The calibration flag (an identifier in m.result) in the page's language. */
  function flagText(flag) {
    return flag === "calibrated at detector" ? T("js.measure.detector") : flag === "uncalibrated px" ? T("js.measure.uncalibrated") : flag;
  }

  /** Fills m.result (numbers) and m.text (what the image shows) from its points and the slice header. */
  function evaluate(m, h) {
    const cal = calibration(h), p = m.points, flag = cal.flag ? " (" + flagText(cal.flag) + ")" : "";
    if (m.kind === "length" && p.length === 2) {
      const v = length(p[0], p[1], cal);
      m.result = { value: v, unit: cal.unit, calibration: cal.flag || "patient" };
      m.text = fmt(v, cal.unit === "mm" ? 1 : 0) + " " + cal.unit + flag;
    } else if (m.kind === "angle" && p.length === 3) {
      const v = angle(p[0], p[1], p[2], cal);
      m.result = { value: v, unit: "deg" };
      m.text = fmt(v, 1) + "°";
    } else if ((m.kind === "ellipse" && p.length === 2) || (m.kind === "freehand" && p.length >= 3)) {
      const area = m.kind === "ellipse" ? Math.PI * Math.abs(p[1][0] - p[0][0]) / 2 * cal.col * Math.abs(p[1][1] - p[0][1]) / 2 * cal.row
                                        : polygonArea(p) * cal.col * cal.row;
      const entry = pixels.shown(), unit = unitOf(h), u = unit ? " " + unit : "";
      const s = !entry ? null : m.kind === "ellipse" ? ellipseStats(p[0], p[1], entry) : polygonStats(p, entry);
      m.result = { area: area, areaUnit: cal.unit + "²", unit: unit, calibration: cal.flag || "patient" };
      m.text = T("js.measure.area", { value: fmt(area, cal.unit === "mm" ? 1 : 0) + " " + cal.unit + "²" }) + flag;
      if (s) {
        Object.assign(m.result, { mean: s.mean, sd: s.sd, min: s.min, max: s.max, pixels: s.n });
        m.text += "\n" + T("js.measure.stats", { mean: fmt(s.mean, 1) + u, sd: fmt(s.sd, 1) }) +
          "\n" + T("js.measure.range", { min: fmt(s.min, 0), max: fmt(s.max, 0) + u });
      } else {
        m.text += "\n" + T("js.measure.stats_wait");
      }
    } else if (m.kind === "probe" && p.length === 1) {
      const entry = pixels.shown(), unit = unitOf(h);
      const c = Math.floor(p[0][0]), r = Math.floor(p[0][1]);
      if (entry && c >= 0 && r >= 0 && c < entry.header.cols && r < entry.header.rows) {
        const v = pixels.modalityAt(entry, r * entry.header.cols + c);
        m.result = { value: v, unit: unit, column: c, row: r };
        m.text = fmt(v, Math.abs(v - Math.round(v)) < 1e-6 ? 0 : 2) + (unit ? " " + unit : "") + "  (" + c + ", " + r + ")";
      } else {
        m.result = { value: null, column: c, row: r };
        m.text = entry ? T("js.measure.outside") : T("js.measure.value_wait");
      }
    }
  }

  /* --- drawing ------------------------------------------------------------------------------ */
  function svg(name, attrs) {
    const el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    return el;
  }

  function draw() {
    layer.textContent = "";
    const at = current();
    if (!at) return;
    const px = Number(layer.style.getPropertyValue("--px")) || 1;
    const here = measurements.filter(function (m) { return m.key === at.key; });
    if (active && active.key === at.key && here.indexOf(active) < 0) here.push(active);
    here.forEach(function (m) {
      const g = svg("g", { class: "measure " + m.kind });
      g.dataset.kind = m.kind;
      if (m.result) g.dataset.result = JSON.stringify(m.result);
      const p = m.points;
      if (m.kind === "length" && p.length === 2) {
        g.appendChild(svg("line", { x1: p[0][0], y1: p[0][1], x2: p[1][0], y2: p[1][1] }));
      } else if (m.kind === "angle") {
        g.appendChild(svg("polyline", { points: p.map(function (q) { return q[0] + "," + q[1]; }).join(" ") }));
      } else if (m.kind === "ellipse" && p.length === 2) {
        g.appendChild(svg("ellipse", { cx: (p[0][0] + p[1][0]) / 2, cy: (p[0][1] + p[1][1]) / 2,
          rx: Math.abs(p[1][0] - p[0][0]) / 2, ry: Math.abs(p[1][1] - p[0][1]) / 2 }));
      } else if (m.kind === "freehand") {
        g.appendChild(svg(m === active ? "polyline" : "polygon", { points: p.map(function (q) { return q[0] + "," + q[1]; }).join(" ") }));
      }
      if (m.kind !== "freehand") p.forEach(function (q) { g.appendChild(svg("circle", { cx: q[0], cy: q[1], r: 3 * px, class: "handle" })); });
      if (m.text) {
        const anchor = p.reduce(function (a, q) { return [Math.max(a[0], q[0]), Math.min(a[1], q[1])]; }, [-Infinity, Infinity]);
        const t = svg("text", { x: anchor[0] + 6 * px, y: anchor[1], "font-size": 13 * px, "stroke-width": 3 * px, class: "measure-label" });
        m.text.split("\n").forEach(function (line, k) {
          const span = svg("tspan", { x: anchor[0] + 6 * px, dy: k ? 15 * px : 0 });
          span.textContent = line;
          t.appendChild(span);
        });
        g.appendChild(t);
      }
      layer.appendChild(g);
    });
    vp.dataset.measurements = String(here.filter(function (m) { return m !== active; }).length);
  }

  function refresh(m) {
    const at = current();
    pixels.header(at.series, at.sop).then(function (h) { evaluate(m, h); draw(); }, function () { evaluate(m, null); draw(); });
  }

  /* --- input -------------------------------------------------------------------------------- */
  function toolMode() {
    const mode = viewer.state.mode;
    return TOOLS.some(function (t) { return t[0] === mode; }) ? mode : null;
  }

  let pointer = null;   // the pointer drawing, one at a time; a second finger is a pinch
  vp.addEventListener("pointerdown", function (e) {
    const mode = toolMode();
    if (!mode || (e.pointerType === "mouse" && e.button !== 0)) return;
    if (pointer !== null) { cancel(); return; }
    const q = toImage(e), at = current();
    if (!q || !at) return;
    pointer = e.pointerId;
    if (active && active.kind === "angle" && active.points.length === 2 && active.key === at.key) {
      active.points.push(q);
    } else {
      active = { kind: mode, key: at.key, points: mode === "probe" || mode === "freehand" ? [q] : [q, q.slice()], result: null, text: "" };
    }
    refresh(active);
  });

  vp.addEventListener("pointermove", function (e) {
    if (e.pointerId !== pointer || !active) return;
    const q = toImage(e);
    if (!q) return;
    if (active.kind === "freehand") {
      // One vertex per two screen pixels of travel keeps the outline smooth and short.
      const last = active.points[active.points.length - 1];
      if (Math.hypot(q[0] - last[0], q[1] - last[1]) < 2 * (viewer.state.px || 1)) return;
      active.points.push(q);
      draw();
      return;
    }
    active.points[active.points.length - 1] = q;
    refresh(active);
  });

  function finish(e) {
    if (e.pointerId !== pointer || !active) return;
    pointer = null;
    const m = active, p = m.points;
    const tiny = m.kind === "freehand" ? p.length < 3 || polygonArea(p) < 1 : p.length >= 2 && Math.hypot(p[p.length - 1][0] - p[p.length - 2][0], p[p.length - 1][1] - p[p.length - 2][1]) < 1;
    if (m.kind === "angle" && p.length === 2 && !tiny) { refresh(m); return; }   // now the second arm
    active = null;
    if (tiny && m.kind !== "probe") { draw(); return; }
    measurements.push(m);
    refresh(m);
    announce(m);
  }
  function cancel() { pointer = null; active = null; draw(); }
  vp.addEventListener("pointerup", finish);
  vp.addEventListener("pointercancel", function (e) { if (e.pointerId === pointer) cancel(); });

  const status = document.createElement("div");
  status.className = "visually-hidden";
  status.id = "measure-status";
  status.setAttribute("role", "status");
  vp.after(status);
  function announce(m) { setTimeout(function () { status.textContent = (m.text || "").replace(/\n/g, "; "); }, 0); }

  /* --- buttons ------------------------------------------------------------------------------ */
  /* The tools are a segmented group of their own next to "Drag does" (one group of seven buttons would not
     fit a phone's row); choosing one ends the other group's mode and the reverse. Like the drag modes they
     belong to the full toolbar ("tool-full": hidden in the simple one until "All tools"). */
  const dragModes = document.querySelector(".modes");
  const group = document.createElement("div");
  group.className = "modes measure-tools tool-full";
  group.setAttribute("role", "radiogroup");
  group.setAttribute("aria-label", window.cloudfilm.t("js.measure"));
  TOOLS.forEach(function (t) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "mode tool"; b.dataset.mode = t[0]; b.textContent = window.cloudfilm.t("js.tool." + t[0], null, t[1]);
    b.title = window.cloudfilm.t("js.tool." + t[0] + "_title", null, t[2]);
    b.setAttribute("aria-pressed", "false");
    b.addEventListener("click", function () {
      viewer.state.mode = t[0];
      document.querySelectorAll(".modes .mode").forEach(function (o) {
        o.classList.toggle("active", o === b); o.setAttribute("aria-pressed", String(o === b));
      });
      vp.classList.remove("mode-scroll", "mode-window", "mode-pan");
      vp.classList.add("mode-tool");
    });
    group.appendChild(b);
  });
  if (dragModes) {
    dragModes.addEventListener("click", function (e) {
      const b = e.target.closest && e.target.closest(".mode");
      if (b) { vp.classList.remove("mode-tool"); cancel(); }
    });
  }
  const clear = document.createElement("button");
  clear.type = "button"; clear.id = "measure-clear"; clear.className = "tool-full";
  clear.textContent = window.cloudfilm.t("js.clear"); clear.title = window.cloudfilm.t("js.clear_title");
  clear.addEventListener("click", function () {
    const at = current();
    for (let k = measurements.length - 1; k >= 0; k--) if (at && measurements[k].key === at.key) measurements.splice(k, 1);
    cancel();
  });
  if (dragModes) { dragModes.after(group); group.after(clear); }
  // The simple toolbar has no tools: viewer.js goes back to scrolling, a measurement being drawn is dropped.
  document.addEventListener("cloudfilm:tools", function (e) { if (e.detail === "simple") { vp.classList.remove("mode-tool"); cancel(); } });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape" && active) cancel(); });

  vp.addEventListener("cloudfilm:view", draw);
  vp.addEventListener("cloudfilm:painted", function () {
    // ROI and probe values wait for the decoded frame: fill them in once it is on screen.
    const at = current();
    measurements.forEach(function (m) { if (at && m.key === at.key && (ROI_KINDS.indexOf(m.kind) >= 0 || m.kind === "probe")) refresh(m); });
  });
  follow();

  window.cloudfilmTools = {
    measurements: function () { return measurements.map(function (m) { return { kind: m.kind, key: m.key, points: m.points, result: m.result, text: m.text }; }); },
    calibration: calibration,
  };
})();
