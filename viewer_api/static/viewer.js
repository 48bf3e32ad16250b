/* cloudfilm study viewer: slices by wheel, drag, swipe, slider and arrow keys; window/level presets
   and drag; zoom (buttons, ctrl+wheel, pinch), pan, fit (button, double-click, double-tap), reset;
   cine; prefetching; series thumbnails; AI findings overlay. One wheel notch is one slice; a swipe
   moves slices in proportion to its travel and a fling keeps running (gestures.js). Panels fold
   behind bars on phones (panels.js); patients start with the simple toolbar (tools.js).
   Images are DICOMweb rendered frames (PS3.18 8.3.5) from this server. Plain JS, no build step.

   Findings: GET model.urls.findings (viewer_api/routes/findings.py, from the study's TID 1500 SRs)
   answers {"findings": [{"kind": "finding"|"classification", "label", "text", "plugin", "superseded",
                          "series_uid", "sop_uid", "frame", "shape", "points": [[col, row], ...]}, ...]},
   newest report first, in image pixel coordinates ((0, 0) = top-left corner of the top-left pixel).
   Shapes: "point" [c]; "multipoint" [p...]; "polyline" / "polygon" [p...] (closing vertex implied);
   "circle" [centre, a point on the circle]; "ellipse" [major axis end, end, minor axis end, end];
   "box" [corner, opposite corner]. No points: listed, not drawn. An empty list or a 404 hides the panel.
   Staff (model.urls.reviews set) accept, reject or edit each current finding; "review" holds the
   current decision. Patients and share visitors get only reviewed findings ("reviewed": true).
   Texts come from the page's catalogue (cloudfilm.t, common.js). Keyboard: arrows/PageUp/PageDown/
   Home/End change slice, +/- zoom, 0 fits, Shift+arrows adjust the window (W/L mode) or pan (Pan mode),
   space plays; a polite live region (#slice-live) announces the slice once scrolling pauses. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("study-data").textContent);
  const study = data.study;
  const urls = data.urls;
  const seriesList = data.series;
  const $ = function (id) { return document.getElementById(id); };
  const T = window.cloudfilm.t, TN = window.cloudfilm.tn;
  const vp = $("viewport"), img = $("frame"), overlay = $("overlay"), slider = $("slider");
  const PREFETCH = 16, MAX_INFLIGHT = 6, CACHE_MAX = 600;

  const state = {
    s: 0, i: 0, slices: [], window: null, zoom: 1, panX: 0, panY: 0, mode: "scroll",
    natW: 0, natH: 0, cine: null, findings: [], px: 1, selected: -1,
  };

  function slicesOf(series) {
    const out = [];
    series.images.forEach(function (im) {
      for (let f = 1; f <= im.frames; f++) out.push({ sop: im.sop, frame: f });
    });
    return out;
  }

  function series() { return seriesList[state.s]; }

  function frameUrl(index, win) {
    const sl = state.slices[index];
    let u = urls.dicomweb + "/studies/" + study.study_uid + "/series/" + series().uid + "/instances/" +
      sl.sop + "/frames/" + sl.frame + "/rendered";
    if (win && !clientPixels()) u += "?window=" + Math.round(win.c) + "," + Math.max(1, Math.round(win.w)) + ",linear";
    return u;
  }

  /* Frames decoded in the browser (pixels.js) take the window: the rendered JPEG keeps the default one. */
  function clientPixels() { return !!(window.cloudfilmPixels && window.cloudfilmPixels.active()); }

  /* --- loading and prefetching -------------------------------------------------------------- */
  const cache = new Map();   // url -> Image (loading or loaded)
  const queue = [];
  let inflight = 0;

  function load(url, urgent) {
    let im = cache.get(url);
    if (im) { cache.delete(url); cache.set(url, im); return im; }
    im = new Image();
    im.decoding = "async";
    im._started = false;
    cache.set(url, im);
    if (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value);
    if (urgent) start(im, url); else queue.push([im, url]);
    pump();
    return im;
  }

  function start(im, url) {
    im._started = true;
    inflight++;
    const done = function () { inflight--; pump(); };
    im.addEventListener("load", done, { once: true });
    im.addEventListener("error", function () { cache.delete(url); done(); }, { once: true });
    im.src = url;
  }

  function pump() {
    while (inflight < MAX_INFLIGHT && queue.length) {
      const next = queue.shift();
      if (!next[0]._started && cache.get(next[1]) === next[0]) start(next[0], next[1]);
    }
  }

  function prefetch() {
    queue.length = 0;
    if (clientPixels()) return;  // pixels.js prefetches frames; JPEGs would compete with them
    const n = state.slices.length;
    for (let d = 1; d <= PREFETCH; d++) {
      [state.i + d, state.i - d].forEach(function (k) { if (k >= 0 && k < n) load(frameUrl(k, state.window), false); });
    }
  }

  /* --- showing ------------------------------------------------------------------------------ */
  let wanted = "";

  function show(options) {
    const url = frameUrl(state.i, state.window);
    wanted = url;
    vp.dataset.index = String(state.i);
    slider.value = String(state.i + 1);
    labels();
    drawFindings();
    const im = load(url, true);
    if (im.complete && im.naturalWidth) {
      present(url, im);
    } else {
      $("spinner").hidden = false;
      im.addEventListener("load", function () { if (wanted === url) present(url, im); }, { once: true });
    }
    if (!options || !options.noPrefetch) prefetch();
    updateLinks();
  }

  function present(url, im) {
    $("spinner").hidden = true;
    if (img.getAttribute("src") !== url) img.setAttribute("src", url);
    if (im.naturalWidth !== state.natW || im.naturalHeight !== state.natH) {
      state.natW = im.naturalWidth; state.natH = im.naturalHeight;
      layout();
    }
    vp.dataset.loaded = url;
  }

  function fitScale() {
    if (!state.natW) return 1;
    return Math.min(vp.clientWidth / state.natW, vp.clientHeight / state.natH);
  }

  function layout() {
    if (!state.natW) return;
    const scale = fitScale() * state.zoom;
    const tx = state.panX - (state.natW * scale) / 2, ty = state.panY - (state.natH * scale) / 2;
    const t = "translate(" + tx + "px," + ty + "px) scale(" + scale + ")";
    img.style.width = state.natW + "px"; img.style.height = state.natH + "px";
    img.style.transform = t;
    overlay.setAttribute("width", state.natW); overlay.setAttribute("height", state.natH);
    overlay.setAttribute("viewBox", "0 0 " + state.natW + " " + state.natH);
    overlay.style.transform = t;
    state.px = 1 / scale;
    overlay.style.setProperty("--px", String(state.px));
    drawFindings();
    $("zoom-label").textContent = Math.abs(state.zoom - 1) < 0.01 ? "" : state.zoom.toFixed(1) + "×";
  }

  function currentWindow() {
    if (state.window) return state.window;
    const w = series().window;
    return w ? { c: w[0], w: w[1] } : null;
  }

  function labels() {
    const s = series();
    $("slice-label").textContent = (s.modality || "") + (s.number != null ? " " + s.number : "") + " · " +
      (state.i + 1) + "/" + state.slices.length;
    const w = currentWindow();
    $("window-label").textContent = w ? "C " + Math.round(w.c) + "  W " + Math.round(w.w) : T("js.auto_window");
    announceSlice();
    vp.dataset.window = w ? Math.round(w.c) + "," + Math.round(w.w) : "";
    vp.dispatchEvent(new CustomEvent("cloudfilm:view"));  // pixels.js, measure.js, overlays.js redraw
  }

  /* Screen readers hear the slice once it settles (not every step of a drag or a fling). */
  let announceTimer = 0;
  function announceSlice() {
    clearTimeout(announceTimer);
    announceTimer = setTimeout(function () {
      const live = $("slice-live");
      if (live) live.textContent = T("js.slice_of", { index: state.i + 1, total: state.slices.length });
    }, 400);
  }

  function go(index) {
    const n = state.slices.length;
    const next = Math.max(0, Math.min(n - 1, index));
    if (next !== state.i) { state.i = next; show(); }
  }

  function setWindow(win) {
    state.window = win ? { c: win.c, w: Math.max(1, win.w) } : null;
    show();
  }

  function selectSeries(index, sliceIndex) {
    stopCine();
    state.s = index;
    state.slices = slicesOf(series());
    state.i = sliceIndex != null ? sliceIndex : Math.floor(state.slices.length / 2);
    state.window = null;
    state.natW = 0; state.natH = 0;
    slider.max = String(state.slices.length);
    slider.hidden = state.slices.length < 2;
    fillPresets();
    document.querySelectorAll(".series-strip button").forEach(function (b, k) {
      b.classList.toggle("active", k === index);
      b.setAttribute("aria-pressed", String(k === index));
    });
    $("cine").hidden = state.slices.length < 2;
    show();
  }

  /* --- presets ------------------------------------------------------------------------------ */
  function fillPresets() {
    const sel = $("preset");
    sel.textContent = "";
    const add = function (value, text) { const o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o); };
    add("", T("js.default_window"));
    add("custom", T("js.custom_window"));
    sel.options[1].hidden = true;
    (series().presets || []).forEach(function (p, k) { add(String(k), T("js.preset." + p.name, null, p.name) + " (" + p.center + "/" + p.width + ")"); });
    sel.hidden = !(series().presets || []).length && !series().window;
  }

  $("preset").addEventListener("change", function () {
    const v = this.value;
    if (v === "") { setWindow(null); return; }
    if (v === "custom") return;
    const p = series().presets[Number(v)];
    setWindow({ c: p.center, w: p.width });
  });

  /* --- pointer, touch, wheel, keys (gestures.js turns travel and notches into slices) -------- */
  const G = window.cloudfilmGestures;
  const pointers = new Map();
  const wheel = new G.WheelStepper(), taps = new G.DoubleTap();
  let drag = null, pinch = null, wlTimer = 0, fling = null;

  /* Finger travel per slice; a mouse drag keeps the whole series within about the image height. */
  function stepPx(pointerType) {
    if (pointerType !== "mouse") return G.TOUCH_STEP_PX;
    return Math.max(4, Math.min(14, vp.clientHeight / Math.max(state.slices.length, 1)));
  }

  function stopFling() { if (fling) { cancelAnimationFrame(fling.raf); fling = null; } }

  function startFling(velocity, step) {
    stopFling();
    const run = new G.Fling(velocity, step, performance.now());
    fling = { raf: 0 };
    const tick = function (now) {
      if (!fling) return;
      const n = run.frame(now);
      const end = state.i + (n || 0);
      if (n === null || end < 0 || end >= state.slices.length) { if (n) go(end); fling = null; vp.dataset.fling = ""; return; }
      if (n) go(end);
      fling.raf = requestAnimationFrame(tick);
    };
    vp.dataset.fling = "1";
    fling.raf = requestAnimationFrame(tick);
  }

  /* The offset of a screen point from the viewport centre (where pan 0 puts the image centre). */
  function fromCentre(p) {
    const r = vp.getBoundingClientRect();
    return { x: p.x - (r.left + r.width / 2), y: p.y - (r.top + r.height / 2) };
  }

  vp.addEventListener("pointerdown", function (e) {
    stopFling();
    vp.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (pointers.size === 1) {
      drag = { x: e.clientX, y: e.clientY, win: currentWindow(), index: state.i, type: e.pointerType,
        swipe: new G.Swipe(e.clientX, e.clientY, e.timeStamp, stepPx(e.pointerType)) };
    } else if (pointers.size === 2) {
      drag = null;
      const p = Array.from(pointers.values());
      pinch = { d: dist(p[0], p[1]), m: fromCentre(mid(p[0], p[1])), zoom: state.zoom, panX: state.panX, panY: state.panY };
    }
  });

  vp.addEventListener("pointermove", function (e) {
    if (!pointers.has(e.pointerId)) return;
    pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (pinch && pointers.size >= 2) {
      /* The image point under the fingers' midpoint stays under it while they spread or close. */
      const p = Array.from(pointers.values());
      const m = fromCentre(mid(p[0], p[1]));
      state.zoom = clamp(pinch.zoom * dist(p[0], p[1]) / Math.max(pinch.d, 1), 0.25, 16);
      const k = state.zoom / pinch.zoom;
      state.panX = m.x - (pinch.m.x - pinch.panX) * k;
      state.panY = m.y - (pinch.m.y - pinch.panY) * k;
      layout();
      return;
    }
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (state.mode === "scroll") {
      go(drag.index + drag.swipe.move(e.clientX, e.clientY, e.timeStamp));
    } else if (state.mode === "window" && drag.win) {
      const k = Math.max(drag.win.w / 400, 0.5);
      const win = { c: drag.win.c - dy * k, w: Math.max(1, drag.win.w + dx * k) };
      clearTimeout(wlTimer);
      state.window = win; labels();
      const sel = $("preset");
      sel.options[1].hidden = false; sel.value = "custom";
      wlTimer = setTimeout(function () { show({ noPrefetch: true }); }, 30);
    } else if (state.mode === "pan") {
      state.panX += dx - (drag.px || 0); state.panY += dy - (drag.py || 0);
      drag.px = dx; drag.py = dy;
      layout();
    }
  });

  function release(e) {
    pointers.delete(e.pointerId);
    if (pointers.size < 2 && pinch) { pinch = null; drag = null; }
    if (pointers.size === 0) {
      if (drag && state.mode === "window") { clearTimeout(wlTimer); show(); }
      if (drag && e.type === "pointerup") {
        const swipe = drag.swipe;
        if (drag.type !== "mouse" && swipe.isTap(e.timeStamp)) {
          if (taps.tap(e.clientX, e.clientY, e.timeStamp)) resetView();   // double-tap: fit
        } else if (state.mode === "scroll" && drag.type !== "mouse") {
          const v = swipe.velocity(e.timeStamp);
          if (G.Fling.starts(v)) startFling(v, swipe.step);
        }
      }
      drag = null;
    }
  }
  vp.addEventListener("pointerup", release);
  vp.addEventListener("pointercancel", release);

  vp.addEventListener("wheel", function (e) {
    e.preventDefault();
    stopFling();
    if (e.ctrlKey || e.metaKey) {
      state.zoom = clamp(state.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1), 0.25, 16); layout(); return;
    }
    const n = wheel.steps(e.deltaY || e.deltaX, e.deltaMode, e.timeStamp);
    if (n) go(state.i + n);
  }, { passive: false });

  vp.addEventListener("dblclick", resetView);

  document.addEventListener("keydown", function (e) {
    if (e.target && /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName) && e.target !== slider) return;
    const keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (e.target && e.target.closest && e.target.closest("dialog")) return;
    if (e.shiftKey && e.key in ARROWS && (state.mode === "window" || state.mode === "pan")) {
      e.preventDefault(); nudge(ARROWS[e.key]); return;
    }
    if (e.key in keys && e.target !== slider) { e.preventDefault(); go(state.i + keys[e.key]); }
    else if (e.key === "Home") go(0);
    else if (e.key === "End") go(state.slices.length - 1);
    else if (e.key === "+" || e.key === "=") zoomBy(1.25);
    else if (e.key === "-") zoomBy(0.8);
    else if (e.key === "0") resetView();
    else if (e.key === " " && (e.target === document.body || e.target === vp)) { e.preventDefault(); toggleCine(); }
  });

  slider.addEventListener("input", function () { go(Number(slider.value) - 1); });

  /* Shift+arrows: the keyboard's drag in W/L mode (left/right width, up/down level) and Pan mode. */
  const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  function nudge(d) {
    if (state.mode === "pan") { state.panX += d[0] * 20; state.panY += d[1] * 20; layout(); return; }
    const w = currentWindow() || { c: 40, w: 400 };
    const step = Math.max(1, Math.round(w.w / 20));
    $("preset").value = "custom";
    setWindow({ c: w.c - d[1] * step, w: w.w + d[0] * step });
  }

  function dist(a, b) { return Math.hypot(a.x - b.x, a.y - b.y); }
  function mid(a, b) { return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 }; }
  function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
  function zoomBy(f) { state.zoom = clamp(state.zoom * f, 0.25, 16); layout(); }
  function resetView() { state.zoom = 1; state.panX = 0; state.panY = 0; layout(); }

  /* --- toolbar ------------------------------------------------------------------------------ */
  document.querySelectorAll(".modes .mode").forEach(function (b) {
    b.addEventListener("click", function () { setMode(b.dataset.mode); });
  });
  $("zoom-in").addEventListener("click", function () { zoomBy(1.25); });
  $("zoom-out").addEventListener("click", function () { zoomBy(0.8); });
  $("fit").addEventListener("click", resetView);
  $("reset").addEventListener("click", function () { $("preset").value = ""; resetView(); setWindow(null); });

  function toggleCine() { if (state.cine) stopCine(); else startCine(); }
  function startCine() {
    $("cine").setAttribute("aria-pressed", "true"); $("cine").setAttribute("aria-label", T("js.pause")); $("cine").firstElementChild.textContent = "❚❚";
    state.cine = setInterval(function () {
      const next = (state.i + 1) % state.slices.length;
      const im = cache.get(frameUrl(next, state.window));
      if (!im || (im.complete && im.naturalWidth)) { state.i = next; show(); }
    }, 100);
  }
  function stopCine() {
    if (!state.cine) return;
    clearInterval(state.cine); state.cine = null;
    $("cine").setAttribute("aria-pressed", "false"); $("cine").setAttribute("aria-label", T("js.play")); $("cine").firstElementChild.textContent = "▶";
  }
  $("cine").addEventListener("click", toggleCine);

  function filmUrl(kind) {
    const params = new URLSearchParams({ series: series().uid, count: "12" });
    const w = state.window;
    if (w) params.set("window", Math.round(w.c) + "," + Math.max(1, Math.round(w.w)));
    return urls.film + "." + kind + "?" + params.toString();
  }
  function updateLinks() {
    if (urls.film && $("film-pdf")) $("film-pdf").href = filmUrl("pdf");
  }
  if (urls.film && $("film")) $("film").addEventListener("click", function () { window.open(filmUrl("png"), "_blank", "noopener"); });

  /* --- series strip ------------------------------------------------------------------------- */
  const strip = $("series-strip");
  seriesList.forEach(function (s, k) {
    const b = document.createElement("button");
    b.type = "button";
    b.title = (s.description || T("js.series_n", { number: s.number != null ? s.number : k + 1 }));
    const t = document.createElement("img");
    t.loading = k < 6 ? "eager" : "lazy";
    t.alt = "";
    t.src = urls.dicomweb + "/studies/" + study.study_uid + "/series/" + s.uid + "/thumbnail";
    const label = document.createElement("span");
    label.textContent = (s.modality || "") + " " + (s.number != null ? s.number : "") + " · " +
      s.images.reduce(function (a, im) { return a + im.frames; }, 0);
    const desc = document.createElement("span");
    desc.textContent = s.description || "";
    b.append(t, label, desc);
    b.addEventListener("click", function () { selectSeries(k); });
    strip.appendChild(b);
  });
  strip.hidden = seriesList.length < 2;

  /* --- findings (AI) ------------------------------------------------------------------------ */
  const SVG = "http://www.w3.org/2000/svg";
  const MARKER_PX = 7, LABEL_PX = 13;   // screen pixels, whatever the zoom

  function svg(name, attrs) {
    const el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    return el;
  }

  function onSlice(f, sl) {
    return f.sop_uid === sl.sop && (f.frame || 1) === sl.frame && f.points && f.points.length > 0;
  }

  function shapeOf(f) {
    const p = f.points, n = p.length;
    const pts = p.map(function (q) { return q[0] + "," + q[1]; }).join(" ");
    if (f.shape === "circle" && n >= 2) {
      return svg("circle", { cx: p[0][0], cy: p[0][1], r: Math.hypot(p[1][0] - p[0][0], p[1][1] - p[0][1]) });
    }
    if (f.shape === "ellipse" && n >= 4) {
      const cx = (p[0][0] + p[1][0]) / 2, cy = (p[0][1] + p[1][1]) / 2;
      const rx = Math.hypot(p[1][0] - p[0][0], p[1][1] - p[0][1]) / 2;
      const ry = Math.hypot(p[3][0] - p[2][0], p[3][1] - p[2][1]) / 2;
      const angle = Math.atan2(p[1][1] - p[0][1], p[1][0] - p[0][0]) * 180 / Math.PI;
      return svg("ellipse", { cx: cx, cy: cy, rx: rx, ry: ry, transform: "rotate(" + angle + " " + cx + " " + cy + ")" });
    }
    if (f.shape === "box" && n === 2) {
      return svg("rect", { x: Math.min(p[0][0], p[1][0]), y: Math.min(p[0][1], p[1][1]),
        width: Math.abs(p[1][0] - p[0][0]), height: Math.abs(p[1][1] - p[0][1]) });
    }
    if (f.shape === "point" || f.shape === "multipoint" || n === 1) {
      const g = svg("g", {});
      p.forEach(function (q) { g.appendChild(svg("circle", { cx: q[0], cy: q[1], r: MARKER_PX, "data-marker": "" })); });
      return g;
    }
    if (f.shape === "polyline") return svg("polyline", { points: pts });
    return svg("polygon", { points: pts });
  }

  function sizeMarkers() {
    overlay.querySelectorAll("[data-marker]").forEach(function (c) { c.setAttribute("r", MARKER_PX * state.px); });
  }

  /* Labels at the top right of their shapes, moved down until they overlap no other label (screen-sized). */
  function placeLabels(labels) {
    const size = LABEL_PX * state.px, placed = [];
    labels.forEach(function (l) {
      const w = (l.text.length * 0.62 + 0.5) * size, h = size * 1.2;
      let x = l.x + 3 * state.px, y = l.y - 3 * state.px;
      for (let n = 0; n < 12 && placed.some(function (b) {
        return x < b.x + b.w && b.x < x + w && y - h < b.y && b.y - b.h < y;
      }); n++) y += h;
      placed.push({ x: x, y: y, w: w, h: h });
      const t = svg("text", { x: x, y: y, "font-size": size, "stroke-width": 3 * state.px, class: "finding-label" });
      t.textContent = l.text;
      overlay.appendChild(t);
    });
  }

  function labelAnchor(f) {
    const p = f.points;
    if (f.shape === "circle" && p.length >= 2) {
      const r = Math.hypot(p[1][0] - p[0][0], p[1][1] - p[0][1]);
      return { x: p[0][0] + r * 0.71, y: p[0][1] - r * 0.71 };
    }
    return { x: Math.max.apply(null, p.map(function (q) { return q[0]; })),
             y: Math.min.apply(null, p.map(function (q) { return q[1]; })) };
  }

  /* The current reports' findings on this slice; an earlier report's only while it is the chosen one. */
  function drawFindings() {
    overlay.textContent = "";
    const items = $("findings-list").children;
    if (!state.findings.length || !state.slices.length) return;
    const sl = state.slices[state.i];
    const labels = [];
    state.findings.forEach(function (f, k) {
      const here = onSlice(f, sl);
      if (items[k]) {
        items[k].classList.toggle("here", here && (!f.superseded || k === state.selected));
        items[k].classList.toggle("selected", k === state.selected);
      }
      if (!here || (f.superseded && k !== state.selected)) return;
      const el = shapeOf(f);
      el.setAttribute("class", "finding" + (f.superseded ? " superseded" : "") + (k === state.selected ? " selected" : ""));
      el.dataset.index = String(k);
      const title = document.createElementNS(SVG, "title");
      title.textContent = [f.label, f.text].filter(Boolean).join(": ");
      el.appendChild(title);
      overlay.appendChild(el);
      labels.push({ text: f.label || "", x: labelAnchor(f).x, y: labelAnchor(f).y });
    });
    placeLabels(labels);
    sizeMarkers();
    vp.dataset.findingsShown = String(overlay.querySelectorAll(".finding").length);
  }

  function findingRow(f) {
    const li = document.createElement("li");
    const drawable = !!(f.points && f.points.length && f.sop_uid);
    li.className = (f.superseded ? "superseded " : "") + (f.reviewed ? "reviewed " : "") + (drawable ? "drawable" : "static");
    const b = document.createElement("b");
    b.textContent = f.label || T("js.finding");
    const p = document.createElement("div");
    p.className = "small";
    p.textContent = f.text || "";
    const by = document.createElement("div");
    by.className = "small by";
    by.textContent = f.plugin || "";
    li.append(b, p, by);
    if (urls.reviews && !f.superseded) li.appendChild(reviewControls(f));
    if (drawable) {
      li.tabIndex = 0;
      li.title = T("js.show_on_image");
      li.addEventListener("click", function () { jumpTo(f); showImage(); });
      li.addEventListener("keydown", function (e) { if (e.key === "Enter" && e.target === li) { jumpTo(f); showImage(); } });
    }
    return li;
  }

  function loadFindings() {
    if (!urls.findings) return;
    fetch(urls.findings, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body || !Array.isArray(body.findings) || !body.findings.length) return;
        state.findings = body.findings;
        const list = $("findings-list");
        list.textContent = "";
        body.findings.forEach(function (f) { list.appendChild(findingRow(f)); });
        if ($("findings-heading")) $("findings-heading").hidden = false;
        $("findings").hidden = false;
        findingsSummary(body.findings);
        drawFindings();
      })
      .catch(function () { /* no findings service */ });
  }

  /* --- physicians review AI findings (POST urls.reviews; viewer_api/routes/findings.py) ------ */
  function reviewControls(f) {
    const box = document.createElement("div");
    box.className = "review";
    box.addEventListener("click", function (e) { e.stopPropagation(); });
    box.addEventListener("keydown", function (e) { e.stopPropagation(); });
    const status = document.createElement("div");
    status.className = "small review-status" + (f.review ? " " + f.review.decision : "");
    status.textContent = f.review ? T("js.decided." + f.review.decision, { reviewer: f.review.reviewer }) +
      (f.review.decision === "edited" ? ": " + describeChanges(f.review.changes) : "") : T("js.not_reviewed");
    const buttons = document.createElement("div");
    buttons.className = "review-buttons";
    const form = editForm(f, status);
    [["accepted", T("js.accept")], ["rejected", T("js.reject")], ["edit", T("js.edit")]].forEach(function (d) {
      const btn = document.createElement("button");
      btn.type = "button"; btn.className = "review-" + d[0]; btn.textContent = d[1];
      btn.addEventListener("click", function () {
        if (d[0] === "edit") { form.hidden = !form.hidden; return; }
        decide(f, { decision: d[0] }, status);
      });
      buttons.appendChild(btn);
    });
    box.append(status, buttons, form);
    return box;
  }

  function describeChanges(changes) {
    const out = [];
    if (changes.label) out.push(T("js.review.changed_label", { label: changes.label[1] }));
    if (changes.diameter_mm) out.push(T("js.review.changed_diameter", { mm: changes.diameter_mm[1] }));
    if (changes.centre) out.push(T("js.review.moved"));
    return out.join(", ");
  }

  function editForm(f, status) {
    const form = document.createElement("form");
    form.className = "review-edit"; form.hidden = true;
    const diameter = (f.measurements || []).filter(function (m) { return /diameter/i.test(m.name) && m.unit === "mm"; })[0];
    // Catalogue texts only (trusted, no markup); the finding's own values are set as properties below.
    form.innerHTML = '<label>' + T("js.review.label") + ' <input name="label"></label>' +
      '<label>' + T("js.review.diameter") + ' <input name="diameter_mm" type="number" step="0.1" min="0.1" inputmode="decimal"></label>' +
      '<div class="row"><button type="button" class="review-place">' + T("js.review.place") + '</button><span class="small place"></span></div>' +
      '<div class="row"><button type="submit" class="primary">' + T("js.review.save") + '</button></div>';
    form.label.value = f.label || "";
    if (diameter) form.diameter_mm.value = diameter.value; else form.diameter_mm.disabled = f.kind !== "finding";
    let centre = null;
    const place = form.querySelector(".review-place");
    if (!f.points || !f.points.length) place.disabled = true;
    place.addEventListener("click", function () {
      jumpTo(f);
      form.querySelector(".place").textContent = T("js.tap_image");
      vp.addEventListener("click", function (e) {
        const r = img.getBoundingClientRect();
        if (!r.width || !state.natW) return;
        centre = [(e.clientX - r.left) / r.width * state.natW, (e.clientY - r.top) / r.height * state.natH];
        form.querySelector(".place").textContent = T("js.at", { position: centre.map(function (v) { return v.toFixed(1); }).join(", ") });
      }, { once: true });
    });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      const body = { decision: "edited" };
      if (form.label.value && form.label.value !== f.label) body.label = form.label.value;
      if (form.diameter_mm.value && (!diameter || Number(form.diameter_mm.value) !== diameter.value)) body.diameter_mm = Number(form.diameter_mm.value);
      if (centre) body.centre = centre;
      decide(f, body, status);
    });
    return form;
  }

  function decide(f, body, status) {
    body.report_uid = f.report_uid;
    body.finding_key = f.finding_key;
    status.textContent = T("js.saving");
    window.cloudfilm.fetch(urls.reviews, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    }).then(function (r) {
      if (!r.ok) return r.text().then(function (t) { throw new Error(t); });
      return r.json();
    }).then(function () { loadFindings(); })
      .catch(function (err) { status.textContent = err.message; status.classList.add("error"); });
  }
  /* The panel bar says what is behind it while it is folded (report status first, where there is one). */
  function findingsSummary(findings) {
    const current = findings.filter(function (f) { return !f.superseded; }).length;
    const count = TN("js.findings", current);
    const sum = $("panel-sum");
    if (!sum) return;
    sum.dataset.findings = String(current);
    sum.textContent = $("report-status") ? $("report-status").textContent + " · " + count : count;
  }

  /* On a phone the open panel leaves the image little room: a chosen finding folds it to show the image. */
  function showImage() { if (window.cloudfilmPanels) window.cloudfilmPanels.foldOnPhone($("findings")); }

  function jumpTo(f) {
    state.selected = state.findings.indexOf(f);
    const k = seriesList.findIndex(function (s) { return s.uid === f.series_uid; });
    if (k < 0) return;
    const idx = slicesOf(seriesList[k]).findIndex(function (sl) { return sl.sop === f.sop_uid && sl.frame === (f.frame || 1); });
    if (k !== state.s) selectSeries(k, Math.max(idx, 0)); else go(Math.max(idx, 0));
    drawFindings();
  }

  /* --- sharing ------------------------------------------------------------------------------ */
  const dialog = $("share-dialog");
  function renderShares() {
    window.cloudfilm.fetch(urls.shares).then(function (r) { return r.ok ? r.json() : []; }).then(function (items) {
      const ul = $("share-list");
      ul.textContent = "";
      items.forEach(function (s) {
        const li = document.createElement("li");
        li.textContent = T("js.share.row", { id: s.id, status: T("js.share.status." + s.status, null, s.status),
                                             date: window.cloudfilm.date(s.expires_at) }) + " · " + TN("js.views", s.views) +
          (s.has_pin ? " · PIN" : "") + (s.allow_download ? " · " + T("js.share.row_download") : "") +
          (s.for_clinician ? " · DICOMweb" + (s.recipient ? " " + T("js.share.row_for", { recipient: s.recipient }) : "") : "") + " ";
        if (s.status === "active") {
          const b = document.createElement("button");
          b.type = "button"; b.className = "linkish revoke"; b.dataset.url = urls.shares + "/" + s.id; b.textContent = T("js.revoke");
          li.appendChild(b);
        }
        ul.appendChild(li);
      });
    });
  }
  if (dialog && urls.shares) {
    /* A modal <dialog> keeps Tab inside it and closes on Esc; focus goes back to the Share button. */
    let opener = null;
    $("share").addEventListener("click", function () {
      opener = document.activeElement;
      $("share-result").hidden = true; renderShares(); dialog.showModal();
    });
    $("share-close").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () { (opener && opener.isConnected ? opener : $("share")).focus(); });
    $("share-form").addEventListener("submit", function (e) {
      e.preventDefault();
      const form = e.target;
      const body = { allow_download: form.allow_download.checked, for_clinician: form.for_clinician.checked,
                     recipient: form.recipient.value };
      if (form.expires_in_days.value) body.expires_in_days = Number(form.expires_in_days.value);
      if (form.pin.value) body.pin = form.pin.value;
      if (form.email && form.email.value) body.email = form.email.value;
      $("share-error").hidden = true;
      $("share-warning").hidden = true;
      window.cloudfilm.fetch(urls.shares, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      }).then(function (r) {
        if (!r.ok) return r.text().then(function (t) { throw new Error(t); });
        return r.json();
      }).then(function (share) {
        $("share-url").value = share.url;
        $("share-qr").src = share.qr_svg;
        $("share-dicomweb").hidden = !share.dicomweb_token;
        $("share-dicomweb-url").value = share.dicomweb_url || "";
        $("share-dicomweb-token").value = share.dicomweb_token || "";
        $("share-ohif").hidden = !share.ohif_url;
        if (share.ohif_url) $("share-ohif").href = share.ohif_url;
        $("share-result").hidden = false;
        // A link this machine alone can open (no CLOUDFILM_PUBLIC_URL on loopback): say so before it is sent.
        $("share-warning").textContent = (share.warnings || []).join(" ");
        $("share-warning").hidden = !(share.warnings && share.warnings.length);
        $("share-sent").textContent = body.email ? T("js.share.sent", { email: body.email }) : "";
        $("share-sent").hidden = !body.email;
        renderShares();
      }).catch(function (err) { $("share-error").textContent = err.message; $("share-error").hidden = false; });
    });
    $("share-copy").addEventListener("click", function () {
      const u = $("share-url");
      if (navigator.clipboard) navigator.clipboard.writeText(u.value); else { u.select(); document.execCommand("copy"); }
      $("share-sent").textContent = T("js.share.copied"); $("share-sent").hidden = false;
    });
  }

  /* --- tools: the simple toolbar has no drag modes, so a drag scrolls (tools.js) --------------- */
  function setMode(mode) {
    state.mode = mode;
    document.querySelectorAll(".modes .mode").forEach(function (o) {
      o.classList.toggle("active", o.dataset.mode === mode); o.setAttribute("aria-pressed", String(o.dataset.mode === mode));
    });
    vp.classList.remove("mode-scroll", "mode-window", "mode-pan", "mode-tool");
    vp.classList.add("mode-" + mode);
  }
  document.addEventListener("cloudfilm:tools", function (e) { if (e.detail === "simple") setMode("scroll"); });

  /* --- start -------------------------------------------------------------------------------- */
  /* The image is fitted to the viewport whenever its box changes (panels folding, rotation, resize). */
  if (window.ResizeObserver) new ResizeObserver(function () { layout(); }).observe(vp);
  else window.addEventListener("resize", layout);
  img.addEventListener("load", function () {
    if (img.naturalWidth && (img.naturalWidth !== state.natW || img.naturalHeight !== state.natH)) {
      state.natW = img.naturalWidth; state.natH = img.naturalHeight; layout();
    }
    $("spinner").hidden = true;
    vp.dataset.loaded = img.getAttribute("src");
  });
  if (!seriesList.length) {
    $("slice-label").textContent = T("js.no_images");
    slider.hidden = true;
    return;
  }
  const first = data.start || { series: 0, index: null };
  selectSeries(first.series || 0, first.index);
  if (img.complete && img.naturalWidth) { state.natW = img.naturalWidth; state.natH = img.naturalHeight; layout(); vp.dataset.loaded = img.getAttribute("src"); }
  setMode("scroll");
  loadFindings();
  /** The image on screen: what a report cites as a key image (viewer_api/static/report.js). */
  function current() {
    const sl = state.slices[state.i];
    return { series_uid: series().uid, sop_uid: sl.sop, series_number: series().number, index: state.i + 1 };
  }
  /** The image's size in pixels, from whichever arrives first: the rendered JPEG or the decoded frame (pixels.js). */
  function setImageSize(w, h) {
    if (w > 0 && h > 0 && (w !== state.natW || h !== state.natH)) { state.natW = w; state.natH = h; layout(); }
  }
  window.cloudfilmViewer = { state: state, go: go, setWindow: setWindow, selectSeries: selectSeries, current: current,
                             setImageSize: setImageSize };
})();
