/* cloudfilm pixels: the viewer's frames decoded in the browser, so window/level, presets and invert
   are instant and lossless. The server's rendered JPEG (viewer.js) stays the first paint and the
   fallback; a canvas with the same CSS transform is drawn over it once the frame's pixels are here.

   Pixels: WADO-RS frames (PS3.18 10.4.1.1.3) asked for in the syntax they are stored in
   (multipart/related; type="application/octet-stream"; transfer-syntax=*), so the archive copies
   them out without transcoding. Native frames are used as they come; compressed ones (JPEG baseline
   and lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE) are decoded in a Web Worker (decode-worker.js) with
   the WebAssembly decoders the archive serves at /codecs/ (scripts/fetch_codecs.sh). A series whose
   frames cannot be decoded here (no decoders installed, 12-bit JPEG, JPEG 2000 part 2, a decoder
   error) keeps the server's rendered JPEG.
   Header: WADO-RS series metadata (DICOM JSON, PS3.18 F.2), also read by measure.js and overlays.js.
   Grey pipeline (PS3.3 C.11): stored value (BitsStored, PixelRepresentation) -> Modality LUT
   (RescaleSlope/Intercept) -> VOI linear window (C.11.2.1.2.1) -> MONOCHROME1 / invert -> 8 bit,
   folded into one lookup table per window. RGB frames pass through; YBR_FULL is converted.

   Listens to viewer.js's "cloudfilm:view" event on #viewport; publishes window.cloudfilmPixels. */
(function () {
  "use strict";
  const viewer = window.cloudfilmViewer;
  const vp = document.getElementById("viewport"), img = document.getElementById("frame");
  const dataEl = document.getElementById("study-data");
  if (!viewer || !vp || !img || !dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const base = data.urls.dicomweb + "/studies/" + data.study.study_uid + "/series/";
  const ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';
  const NATIVE = "1.2.840.10008.1.2.1";
  const MAX_INFLIGHT = 6, CACHE_BYTES = 320 * 1024 * 1024;

  /* The server's rendered JPEG is the first paint: no metadata or frame is asked for (here, nor by
     measure.js and overlays.js, which read headers through meta()) before the page's first image is in. */
  const firstImage = new Promise(function (resolve) {
    if (img.complete && img.getAttribute("src")) { resolve(); return; }
    img.addEventListener("load", function () { resolve(); }, { once: true });
    img.addEventListener("error", function () { resolve(); }, { once: true });
  });

  /* --- DICOM JSON metadata ------------------------------------------------------------------ */
  const metaBySeries = new Map();   // series uid -> Promise<Map<sop, Header>>

  function value(item, tag) {
    const el = item && item[tag];
    return el && el.Value ? el.Value : null;
  }
  function first(item, tag, fallback) {
    const v = value(item, tag);
    return v && v.length ? v[0] : fallback;
  }
  function numbers(item, tag) {
    const v = value(item, tag);
    return v ? v.map(Number) : null;
  }
  /* An attribute at the top level, else in the shared functional groups (enhanced multi-frame, C.7.6.16). */
  function inGroups(item, tag, macro) {
    const top = numbers(item, tag);
    if (top) return top;
    const shared = first(item, "52009229", null);
    const group = shared && first(shared, macro, null);
    return group ? numbers(group, tag) : null;
  }

  /** The attributes the viewer's pixels and tools need, from one instance's DICOM JSON. */
  function header(item) {
    return {
      sop: first(item, "00080018", ""),
      modality: first(item, "00080060", ""),
      rows: Number(first(item, "00280010", 0)),
      cols: Number(first(item, "00280011", 0)),
      samples: Number(first(item, "00280002", 1)),
      planar: Number(first(item, "00280006", 0)),
      photometric: first(item, "00280004", "MONOCHROME2"),
      bitsAllocated: Number(first(item, "00280100", 16)),
      bitsStored: Number(first(item, "00280101", first(item, "00280100", 16))),
      signed: Number(first(item, "00280103", 0)) === 1,
      slope: Number(first(item, "00281053", 1)) || 1,
      intercept: Number(first(item, "00281052", 0)) || 0,
      rescaleType: first(item, "00281054", ""),
      frames: Number(first(item, "00280008", 1)) || 1,
      pixelSpacing: inGroups(item, "00280030", "00289110"),
      imagerPixelSpacing: numbers(item, "00181164"),
      magnification: Number(first(item, "00181114", 0)) || null,
      orientation: inGroups(item, "00200037", "00209116"),
      position: numbers(item, "00200032"),
      sliceLocation: value(item, "00201041") ? Number(first(item, "00201041", 0)) : null,
      sliceThickness: inGroups(item, "00180050", "00289110"),
      frameOfReference: first(item, "00200052", ""),
    };
  }

  function meta(seriesUid) {
    let p = metaBySeries.get(seriesUid);
    if (!p) {
      p = firstImage
        .then(function () {
          return fetch(base + seriesUid + "/metadata", { credentials: "same-origin", headers: { Accept: "application/dicom+json" } });
        })
        .then(function (r) { if (!r.ok) throw new Error("metadata " + r.status); return r.json(); })
        .then(function (items) {
          const out = new Map();
          items.forEach(function (item) { const h = header(item); out.set(h.sop, h); });
          return out;
        });
      p.catch(function () { metaBySeries.delete(seriesUid); });
      metaBySeries.set(seriesUid, p);
    }
    return p;
  }

  function decodable(h) {
    if (!h || !h.rows || !h.cols) return false;
    if (h.samples === 3) return h.bitsAllocated === 8;
    return h.samples === 1 && /^MONOCHROME[12]$/.test(h.photometric) && [8, 16, 32].indexOf(h.bitsAllocated) >= 0;
  }

  /* --- frames over WADO-RS ------------------------------------------------------------------ */
  /** The first part's body of a multipart/related answer (PS3.18 8.6.1.2; RFC 2046 5.1). */
  function firstPart(buffer, contentType) {
    const bytes = new Uint8Array(buffer);
    const m = /boundary="?([^";]+)"?/i.exec(contentType || "");
    if (!m) return bytes;  // a single-part answer
    const delimiter = "--" + m[1];
    const start = indexOf(bytes, ascii("\r\n\r\n"), indexOf(bytes, ascii(delimiter), 0));
    if (start < 0) throw new Error("malformed multipart answer");
    const end = indexOf(bytes, ascii("\r\n" + delimiter), start + 4);
    if (end < 0) throw new Error("malformed multipart answer");
    return bytes.subarray(start + 4, end);
  }
  function ascii(s) { const a = new Uint8Array(s.length); for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i); return a; }
  function indexOf(hay, needle, from) {
    const n = needle.length, last = hay.length - n, c0 = needle[0];
    outer: for (let i = Math.max(0, from); i <= last; i++) {
      if (hay[i] !== c0) continue;
      for (let k = 1; k < n; k++) if (hay[i + k] !== needle[k]) continue outer;
      return i;
    }
    return -1;
  }

  /** The first part of a multipart/related answer and its transfer syntax (the part's Content-Type
      parameter, else the answer's; native Explicit VR Little Endian when neither names one). */
  function firstPartWithSyntax(buffer, contentType) {
    const bytes = firstPart(buffer, contentType);
    let ts = null;
    const whole = new Uint8Array(buffer);
    if (bytes.byteOffset > 0) {
      const head = String.fromCharCode.apply(null, whole.subarray(Math.max(0, bytes.byteOffset - 1024), bytes.byteOffset));
      const parts = head.split("\r\n\r\n");
      const m = /transfer-syntax="?([0-9.]+)/i.exec(parts.length > 1 ? parts[parts.length - 2] : head);
      if (m) ts = m[1];
    }
    if (!ts) { const m = /transfer-syntax="?([0-9.]+)/i.exec(contentType || ""); if (m) ts = m[1]; }
    return { bytes: bytes, ts: ts || NATIVE };
  }

  /* --- the decode worker -------------------------------------------------------------------- */
  const WORKERS = Math.max(1, Math.min(2, (navigator.hardwareConcurrency || 2) - 1));
  const workers = [], waiting = new Map();
  let nextId = 1, turn = 0, workerBroken = false;

  function worker() {
    if (workerBroken || !data.urls.decoder) return null;
    if (workers.length < WORKERS) {
      try {
        const w = new Worker(data.urls.decoder);
        w.onmessage = function (event) {
          const msg = event.data, job = waiting.get(msg.id);
          if (!job) return;
          waiting.delete(msg.id);
          if (msg.error) job.reject(new Error(msg.error)); else job.resolve(msg);
        };
        w.onerror = function () { workerBroken = true; waiting.forEach(function (j) { j.reject(new Error("decode worker failed")); }); waiting.clear(); };
        workers.push(w);
      } catch (err) { workerBroken = true; return null; }
    }
    return workers[(turn++) % workers.length];
  }

  /** A compressed frame decoded off the main thread: {pixels, header} with the decoded layout. */
  function decodeCompressed(bytes, ts, h) {
    const w = worker();
    if (!w) return Promise.reject(new Error("no decode worker"));
    const id = nextId++, copy = bytes.slice();
    return new Promise(function (resolve, reject) {
      waiting.set(id, { resolve: resolve, reject: reject });
      w.postMessage({ id: id, ts: ts, bytes: copy.buffer, codecs: data.urls.codecs,
                      h: { rows: h.rows, cols: h.cols, samples: h.samples, bitsAllocated: h.bitsAllocated, photometric: h.photometric } },
                    [copy.buffer]);
    }).then(function (msg) {
      const out = Object.assign({}, h, { photometric: msg.photometric, planar: msg.planar, bitsAllocated: msg.bits, ts: ts, decodeMs: msg.ms });
      return { header: out, pixels: typed(new Uint8Array(msg.buffer), out) };
    });
  }

  /** Typed view of a native little-endian frame (copied when the part is not aligned for it). */
  function typed(bytes, h) {
    const n = h.rows * h.cols * h.samples;
    const size = h.bitsAllocated / 8;
    if (bytes.length < n * size) throw new Error("short frame: " + bytes.length + " bytes for " + n + " samples");
    let buf = bytes.buffer, off = bytes.byteOffset;
    if (off % size) { const copy = bytes.slice(0, n * size); buf = copy.buffer; off = 0; }
    if (h.bitsAllocated === 8) return new Uint8Array(buf, off, n);
    if (h.bitsAllocated === 16) return new Uint16Array(buf, off, n);
    return h.signed ? new Int32Array(buf, off, n) : new Uint32Array(buf, off, n);
  }

  const disabled = new Set();  // series whose frames are not decoded here: the rendered JPEG shows
  const frames = new Map();   // "sop/frame" -> {header, pixels, bytes} | Promise
  let cachedBytes = 0, inflight = 0;
  const queue = [];

  function key(sop, frame) { return sop + "/" + frame; }

  function frameUrl(seriesUid, sop, frame) {
    return base + seriesUid + "/instances/" + sop + "/frames/" + frame;
  }

  function request(seriesUid, sop, frame, h, urgent) {
    const k = key(sop, frame);
    const have = frames.get(k);
    if (have) { frames.delete(k); frames.set(k, have); return have instanceof Promise ? have : Promise.resolve(have); }
    let resolve, reject;
    const p = new Promise(function (a, b) { resolve = a; reject = b; });
    frames.set(k, p);
    const job = function () {
      if (disabled.has(seriesUid)) { frames.delete(k); reject(new Error("not decodable here")); pump(); return; }
      inflight++;
      fetch(frameUrl(seriesUid, sop, frame), { credentials: "same-origin", headers: { Accept: ACCEPT } })
        .then(function (r) {
          if (!r.ok) throw new Error("frame " + r.status);
          const ct = r.headers.get("Content-Type");
          return r.arrayBuffer().then(function (b) { return firstPartWithSyntax(b, ct); });
        })
        .then(function (part) {
          if (part.ts === NATIVE) return { header: h, pixels: typed(part.bytes, h) };
          return decodeCompressed(part.bytes, part.ts, h);
        })
        .then(function (decoded) {
          const entry = { header: decoded.header, pixels: decoded.pixels, bytes: decoded.pixels.byteLength, range: null };
          frames.set(k, entry);
          cachedBytes += entry.bytes;
          evict();
          resolve(entry);
        })
        .catch(function (err) { frames.delete(k); reject(err); })
        .finally(function () { inflight--; pump(); });
    };
    if (urgent) queue.unshift(job); else queue.push(job);
    pump();
    return p;
  }

  function pump() { while (inflight < MAX_INFLIGHT && queue.length) queue.shift()(); }

  function evict() {
    for (const [k, v] of frames) {
      if (cachedBytes <= CACHE_BYTES) break;
      if (v instanceof Promise) continue;
      frames.delete(k); cachedBytes -= v.bytes;
    }
  }

  /* --- the display pipeline ----------------------------------------------------------------- */
  /** Stored value of a raw sample (BitsStored masked, sign-extended when PixelRepresentation is 1). */
  function storedValueFn(h) {
    const bits = Math.min(h.bitsStored, h.bitsAllocated);
    if (bits >= 32) return function (v) { return v; };
    const mask = Math.pow(2, bits) - 1, half = Math.pow(2, bits - 1);
    return h.signed ? function (v) { const m = v & mask; return m >= half ? m - 2 * half : m; }
                    : function (v) { return v & mask; };
  }

  /** Modality value (e.g. HU) of pixel ``index`` of a decoded frame. */
  function modalityAt(entry, index) {
    const h = entry.header;
    return storedValueFn(h)(entry.pixels[index]) * h.slope + h.intercept;
  }

  function modalityRange(entry) {
    if (entry.range) return entry.range;
    const px = entry.pixels, h = entry.header, sv = storedValueFn(h);
    let lo = Infinity, hi = -Infinity;
    if (h.bitsAllocated <= 16) {
      const seen = new Uint8Array(1 << h.bitsAllocated);
      for (let i = 0; i < px.length; i++) seen[px[i]] = 1;
      for (let v = 0; v < seen.length; v++) if (seen[v]) { const s = sv(v); if (s < lo) lo = s; if (s > hi) hi = s; }
    } else {
      for (let i = 0; i < px.length; i++) { const s = sv(px[i]); if (s < lo) lo = s; if (s > hi) hi = s; }
    }
    const a = lo * h.slope + h.intercept, b = hi * h.slope + h.intercept;
    entry.range = { lo: Math.min(a, b), hi: Math.max(a, b) };
    return entry.range;
  }

  /** 8-bit display level of a modality value through the linear VOI window (PS3.3 C.11.2.1.2.1). */
  function voi(x, c, w) {
    if (w <= 1) return x <= c - 0.5 ? 0 : 255;
    const y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
    return y <= 0 ? 0 : y >= 255 ? 255 : y;
  }

  let invert = false;
  const canvas = document.createElement("canvas");
  canvas.id = "pixels";
  canvas.className = "frame pixels";
  canvas.hidden = true;
  canvas.setAttribute("aria-hidden", "true");
  img.after(canvas);
  const ctx = canvas.getContext("2d", { alpha: false });
  let imageData = null;

  function windowFor(entry) {
    const w = viewer.state.window;
    if (w) return w;
    const s = data.series[viewer.state.s];
    if (s && s.window) return { c: s.window[0], w: s.window[1] };
    const r = modalityRange(entry);
    return { c: (r.lo + r.hi) / 2, w: Math.max(1, r.hi - r.lo) };
  }

  /** Draws ``entry`` on the canvas in the current window; the time it took in ms. */
  function paint(entry) {
    const t0 = performance.now();
    const h = entry.header, px = entry.pixels, n = h.rows * h.cols;
    if (canvas.width !== h.cols || canvas.height !== h.rows) { canvas.width = h.cols; canvas.height = h.rows; imageData = null; }
    if (!imageData) imageData = ctx.createImageData(h.cols, h.rows);
    const out = new Uint32Array(imageData.data.buffer);
    const flip = (h.photometric === "MONOCHROME1") !== invert;
    if (h.samples === 3) {
      rgb(px, out, h, n);
    } else {
      const win = windowFor(entry), sv = storedValueFn(h);
      const grey = function (x) {
        const g = Math.round(voi(x * h.slope + h.intercept, win.c, win.w));
        const v = flip ? 255 - g : g;
        return 0xff000000 | (v << 16) | (v << 8) | v;
      };
      if (h.bitsAllocated <= 16) {
        const lut = new Uint32Array(1 << h.bitsAllocated);
        for (let v = 0; v < lut.length; v++) lut[v] = grey(sv(v));
        for (let i = 0; i < n; i++) out[i] = lut[px[i]];
      } else {
        for (let i = 0; i < n; i++) out[i] = grey(sv(px[i]));
      }
    }
    ctx.putImageData(imageData, 0, 0);
    return performance.now() - t0;
  }

  function rgb(px, out, h, n) {
    const planar = h.planar === 1, ybr = h.photometric === "YBR_FULL";
    for (let i = 0; i < n; i++) {
      let r, g, b;
      if (planar) { r = px[i]; g = px[i + n]; b = px[i + 2 * n]; } else { r = px[3 * i]; g = px[3 * i + 1]; b = px[3 * i + 2]; }
      if (ybr) {  // PS3.3 C.7.6.3.1.2
        const y = r, cb = g - 128, cr = b - 128;
        r = clamp8(y + 1.402 * cr); g = clamp8(y - 0.344136 * cb - 0.714136 * cr); b = clamp8(y + 1.772 * cb);
      }
      if (invert) { r = 255 - r; g = 255 - g; b = 255 - b; }
      out[i] = 0xff000000 | (b << 16) | (g << 8) | r;
    }
  }
  function clamp8(v) { return v < 0 ? 0 : v > 255 ? 255 : Math.round(v); }

  /* --- following the viewer ----------------------------------------------------------------- */
  const PREFETCH = 24;
  let shownKey = "", lastPaintMs = 0, generation = 0;

  function current() {
    const st = viewer.state;
    const s = data.series[st.s], sl = st.slices[st.i];
    return s && sl ? { series: s.uid, sop: sl.sop, frame: sl.frame } : null;
  }

  function hide() {
    canvas.hidden = true;
    vp.dataset.pixels = "rendered";
    img.classList.toggle("inverted", invert);
  }

  function update() {
    const at = current();
    if (!at || disabled.has(at.series)) { hide(); return; }
    // Another slice or series than the canvas holds: the rendered JPEG shows until this one is decoded.
    if (shownKey !== key(at.sop, at.frame)) hide();
    const mine = ++generation;
    meta(at.series).then(function (headers) {
      if (mine !== generation) return null;   // the viewer has moved on
      const h = headers.get(at.sop);
      if (!decodable(h)) { disabled.add(at.series); hide(); return null; }
      const k = key(at.sop, at.frame), have = frames.get(k);
      if (have && !(have instanceof Promise)) { show(k, have); prefetch(at.series, headers); return null; }
      if (shownKey !== k) hide();
      // The neighbours are asked for once this frame is drawn: they do not compete with it.
      return request(at.series, at.sop, at.frame, h, true).then(function (entry) {
        if (mine !== generation) return;
        show(k, entry);
        prefetch(at.series, headers);
      });
    }).catch(function (err) {
      // Frames not decodable here (no decoder for their syntax, a decoder error): the rendered JPEG stays.
      disabled.add(at.series);
      vp.dataset.pixelsError = String(err && err.message || err);
      hide();
      viewer.setWindow(viewer.state.window);
    });
  }

  function show(k, entry) {
    viewer.setImageSize(entry.header.cols, entry.header.rows);   // laid out even before the JPEG is in
    lastPaintMs = paint(entry);
    shownKey = k;
    canvas.hidden = false;
    vp.dataset.pixels = "decoded";
    vp.dataset.painted = k + "@" + (viewer.state.window ? Math.round(viewer.state.window.c) + "," + Math.round(viewer.state.window.w) : "") + (invert ? "!" : "");
    vp.dispatchEvent(new CustomEvent("cloudfilm:painted", { detail: { key: k, ms: lastPaintMs } }));
  }

  function prefetch(seriesUid, headers) {
    const st = viewer.state, n = st.slices.length;
    for (let d = 1; d <= PREFETCH; d++) {
      [st.i + d, st.i - d].forEach(function (j) {
        if (j < 0 || j >= n) return;
        const sl = st.slices[j], h = headers.get(sl.sop);
        if (decodable(h) && !frames.has(key(sl.sop, sl.frame))) request(seriesUid, sl.sop, sl.frame, h, false).catch(function () {});
      });
    }
  }

  /* The canvas moves and scales with the image: it copies the transform viewer.js gives the <img>. */
  function follow() {
    canvas.style.transform = img.style.transform;
    canvas.style.width = img.style.width;
    canvas.style.height = img.style.height;
  }
  new MutationObserver(follow).observe(img, { attributes: true, attributeFilter: ["style"] });
  follow();

  vp.addEventListener("cloudfilm:view", update);

  /* Invert: in the lookup table when decoded, a CSS filter on the rendered JPEG otherwise. */
  const toolbar = document.querySelector(".toolbar");
  const invertButton = document.createElement("button");
  invertButton.type = "button";
  invertButton.id = "invert";
  invertButton.className = "tool-full";
  invertButton.textContent = window.cloudfilm.t("js.invert");
  invertButton.title = window.cloudfilm.t("js.invert_title");
  invertButton.setAttribute("aria-pressed", "false");
  invertButton.addEventListener("click", function () {
    invert = !invert;
    invertButton.setAttribute("aria-pressed", String(invert));
    img.classList.toggle("inverted", invert && canvas.hidden);
    update();
  });
  if (toolbar) toolbar.insertBefore(invertButton, document.getElementById("reset"));

  window.cloudfilmPixels = {
    meta: meta,
    header: function (seriesUid, sop) { return meta(seriesUid).then(function (m) { return m.get(sop) || null; }); },
    /** The decoded frame on screen, or null while only the rendered JPEG is. */
    shown: function () {
      const at = current();
      if (!at || canvas.hidden) return null;
      const e = frames.get(key(at.sop, at.frame));
      return e && !(e instanceof Promise) && shownKey === key(at.sop, at.frame) ? e : null;
    },
    modalityAt: modalityAt,
    firstPart: firstPart,
    active: function () { const at = current(); return !!at && !disabled.has(at.series); },
    lastPaintMs: function () { return lastPaintMs; },
  };
  update();
})();
