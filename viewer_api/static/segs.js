/* cloudfilm segmentation overlays: the study's DICOM SEG masks drawn in colour over the image, and
   one legend that switches each segment and the AI findings' regions on and off.

   SEG (PS3.3 A.51, C.8.20): WADO-RS series metadata gives the Segment Sequence (number, label,
   RecommendedDisplayCIELabValue) and, per frame, the segment (Segment Identification Sequence)
   and the image it was derived from (Derivation Image → Source Image Sequence: Referenced SOP
   Instance UID and frame) and its plane position (ImagePositionPatient). Mask pixels come from
   WADO-RS bulk data (PS3.18 10.4.1.1.5, 7FE00010) as native bytes: BitsAllocated 1 is bit-packed,
   least significant bit first (PS3.5 8.1.1); a fractional SEG's 8-bit values count from half
   their maximum. A frame is drawn on the slice it references; a slice of another series is matched
   by position when it shares the frame of reference, orientation, size and spacing.
   The SEG series leave the series strip: they are layers, not images to page through.
   AI regions stay drawn by viewer.js (the findings overlay); the legend only shows or hides them.
   Publishes window.cloudfilmSegs. */
(function () {
  "use strict";
  const viewer = window.cloudfilmViewer, pixels = window.cloudfilmPixels;
  const vp = document.getElementById("viewport"), img = document.getElementById("frame");
  const findingsLayer = document.getElementById("overlay");
  const dataEl = document.getElementById("study-data");
  if (!viewer || !pixels || !vp || !img || !findingsLayer || !dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const base = data.urls.dicomweb + "/studies/" + data.study.study_uid + "/series/";
  const ALPHA = 0.45, POSITION_MM = 0.05;
  const PALETTE = [[60, 180, 75], [230, 25, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                   [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]];

  /* --- DICOM JSON ---------------------------------------------------------------------------- */
  function values(item, tag) { const el = item && item[tag]; return el && el.Value ? el.Value : null; }
  function one(item, tag) { const v = values(item, tag); return v && v.length ? v[0] : null; }
  function path(item, tags) {
    let at = item;
    for (let k = 0; k < tags.length - 1 && at; k++) at = one(at, tags[k]);
    return at ? values(at, tags[tags.length - 1]) : null;
  }

  /** sRGB (0–255) of a RecommendedDisplayCIELabValue (PS3.3 C.10.7.1.1: scaled CIELab, D65). */
  function labToRgb(scaled) {
    const L = scaled[0] * 100 / 65535, a = scaled[1] * 255 / 65535 - 128, b = scaled[2] * 255 / 65535 - 128;
    const fy = (L + 16) / 116, fx = fy + a / 500, fz = fy - b / 200;
    const inv = function (t) { return t > 6 / 29 ? t * t * t : 3 * (6 / 29) * (6 / 29) * (t - 4 / 29); };
    const X = 0.95047 * inv(fx), Y = inv(fy), Z = 1.08883 * inv(fz);
    const lin = [3.2406 * X - 1.5372 * Y - 0.4986 * Z, -0.9689 * X + 1.8758 * Y + 0.0415 * Z,
                 0.0557 * X - 0.2040 * Y + 1.0570 * Z];
    return lin.map(function (c) {
      const v = c <= 0.0031308 ? 12.92 * c : 1.055 * Math.pow(c, 1 / 2.4) - 0.055;
      return Math.max(0, Math.min(255, Math.round(v * 255)));
    });
  }

  /** One SEG instance: its segments and, per frame, which segment it holds and where it lies. */
  function describe(item, seriesUid, palette) {
    const shared = one(item, "52009229");
    const perFrame = values(item, "52009230") || [];
    const orientation = (shared && path(shared, ["00209116", "00200037"])) || null;
    const spacing = (shared && path(shared, ["00289110", "00280030"])) || null;
    const segments = (values(item, "00620002") || []).map(function (s) {
      const lab = values(s, "0062000D");
      return { number: Number(one(s, "00620004")), label: one(s, "00620005") || window.cloudfilm.t("js.segment"),
               color: lab && lab.length === 3 ? labToRgb(lab.map(Number)) : PALETTE[palette.next++ % PALETTE.length],
               visible: true, series: seriesUid };
    });
    const frames = perFrame.map(function (f, k) {
      const seg = path(f, ["0062000A", "0062000B"]);
      const source = one(one(f, "00089124"), "00082112");
      const refFrame = source && values(source, "00081160");
      return {
        index: k, segment: seg ? Number(seg[0]) : (segments.length === 1 ? segments[0].number : null),
        sop: source ? one(source, "00081155") : null, frame: refFrame ? Number(refFrame[0]) : 1,
        position: (path(f, ["00209113", "00200032"]) || []).map(Number),
      };
    });
    return {
      sop: one(item, "00080018"), series: seriesUid, rows: Number(one(item, "00280010")), cols: Number(one(item, "00280011")),
      bits: Number(one(item, "00280100") || 1), maxFractional: Number(one(item, "00620014") || 255),
      frameOfReference: one(item, "00200052") || "", orientation: orientation ? orientation.map(Number) : null,
      spacing: spacing ? spacing.map(Number) : null, segments: segments, frames: frames, masks: null,
    };
  }

  /** The instance's frames as 0/1 bytes, one Uint8Array per frame. */
  function unpack(seg, bytes) {
    const n = seg.rows * seg.cols, count = seg.frames.length, out = [];
    if (seg.bits === 1) {
      // Frames as the archive sends them: each frame starts on a byte; contiguous bits otherwise.
      const padded = bytes.length >= count * Math.ceil(n / 8);
      for (let f = 0; f < count; f++) {
        const mask = new Uint8Array(n), startBit = padded ? f * Math.ceil(n / 8) * 8 : f * n;
        for (let i = 0; i < n; i++) {
          const bit = startBit + i;
          mask[i] = (bytes[bit >> 3] >> (bit & 7)) & 1;
        }
        out.push(mask);
      }
    } else {
      const half = seg.maxFractional / 2;
      for (let f = 0; f < count; f++) {
        const src = bytes.subarray(f * n, (f + 1) * n), mask = new Uint8Array(n);
        for (let i = 0; i < n; i++) mask[i] = src[i] >= half ? 1 : 0;
        out.push(mask);
      }
    }
    return out;
  }

  function loadMasks(seg) {
    const url = base + seg.series + "/instances/" + seg.sop + "/bulk/7FE00010";
    return fetch(url, { credentials: "same-origin", headers: {
      Accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1' } })
      .then(function (r) {
        if (!r.ok) throw new Error("SEG pixel data " + r.status);
        const ct = r.headers.get("Content-Type");
        return r.arrayBuffer().then(function (b) { return pixels.firstPart(b, ct); });
      })
      .then(function (bytes) { seg.masks = unpack(seg, bytes); return seg; });
  }

  /* --- which mask frames belong on the slice shown -------------------------------------------- */
  function sameGeometry(seg, h) {
    if (!h || !seg.frameOfReference || h.frameOfReference !== seg.frameOfReference) return false;
    if (h.rows !== seg.rows || h.cols !== seg.cols || !h.position || !h.orientation || !seg.orientation) return false;
    const close = function (a, b, tol) { return a && b && a.length === b.length && a.every(function (v, k) { return Math.abs(v - b[k]) <= tol; }); };
    return close(h.orientation, seg.orientation, 1e-3) && (!seg.spacing || close(h.pixelSpacing, seg.spacing, 1e-3));
  }

  function framesFor(seg, sl, h) {
    const byRef = seg.frames.filter(function (f) { return f.sop === sl.sop && f.frame === sl.frame; });
    if (byRef.length || !sameGeometry(seg, h)) return byRef;
    return seg.frames.filter(function (f) {
      return f.position.length === 3 && Math.max(Math.abs(f.position[0] - h.position[0]),
        Math.abs(f.position[1] - h.position[1]), Math.abs(f.position[2] - h.position[2])) <= POSITION_MM;
    });
  }

  /* --- drawing ------------------------------------------------------------------------------ */
  const canvas = document.createElement("canvas");
  canvas.id = "seg-layer";
  canvas.className = "frame seg-layer";
  canvas.setAttribute("aria-hidden", "true");
  findingsLayer.before(canvas);
  const ctx = canvas.getContext("2d");

  function follow() {
    canvas.style.transform = img.style.transform;
    canvas.style.width = img.style.width;
    canvas.style.height = img.style.height;
  }
  new MutationObserver(follow).observe(img, { attributes: true, attributeFilter: ["style"] });
  follow();

  const segs = [];
  let generation = 0;

  function draw() {
    const st = viewer.state, s = data.series[st.s], sl = st.slices[st.i];
    const mine = ++generation;
    if (!s || !sl || !segs.some(function (g) { return g.masks; })) { clear(); return; }
    pixels.header(s.uid, sl.sop).then(function (h) { if (mine === generation) paint(sl, h); },
                                      function () { if (mine === generation) paint(sl, null); });
  }

  function clear() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    vp.dataset.segments = "0";
  }

  function paint(sl, h) {
    const shown = [];
    segs.forEach(function (seg) {
      if (!seg.masks) return;
      framesFor(seg, sl, h).forEach(function (f) {
        const segment = seg.segments.find(function (x) { return x.number === f.segment; });
        if (segment && segment.visible) shown.push({ seg: seg, mask: seg.masks[f.index], color: segment.color });
      });
    });
    if (!shown.length) { clear(); return; }
    const rows = shown[0].seg.rows, cols = shown[0].seg.cols;
    if (canvas.width !== cols || canvas.height !== rows) { canvas.width = cols; canvas.height = rows; }
    const out = ctx.createImageData(cols, rows), px = out.data;
    shown.forEach(function (m) {
      if (m.seg.rows !== rows || m.seg.cols !== cols) return;
      for (let i = 0; i < m.mask.length; i++) {
        if (!m.mask[i]) continue;
        const o = i * 4;
        px[o] = m.color[0]; px[o + 1] = m.color[1]; px[o + 2] = m.color[2]; px[o + 3] = Math.round(ALPHA * 255);
      }
    });
    ctx.putImageData(out, 0, 0);
    vp.dataset.segments = String(shown.length);
  }

  /* --- legend: one switch per segment, one for the AI regions --------------------------------- */
  const legend = document.createElement("fieldset");
  legend.className = "layers";
  legend.id = "layers";
  legend.hidden = true;
  const caption = document.createElement("legend");
  caption.textContent = window.cloudfilm.t("js.overlays");
  legend.appendChild(caption);
  const toolbar = document.querySelector(".toolbar");
  if (toolbar) toolbar.after(legend);

  function addSwitch(id, text, color, checked, onChange) {
    const label = document.createElement("label");
    label.className = "layer";
    const box = document.createElement("input");
    box.type = "checkbox"; box.id = id; box.checked = checked;
    box.addEventListener("change", function () { onChange(box.checked); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    label.append(box, swatch, document.createTextNode(" " + text));
    legend.appendChild(label);
    legend.hidden = false;
  }

  /* AI regions: shown once viewer.js has findings to draw. */
  let regionsSwitch = false;
  function offerRegions() {
    if (regionsSwitch || !(viewer.state.findings || []).length) return;
    regionsSwitch = true;
    addSwitch("layer-regions", window.cloudfilm.t("js.ai_regions"), "#ffd34d", true, function (on) { vp.classList.toggle("regions-off", !on); });
  }
  new MutationObserver(offerRegions).observe(findingsLayer, { childList: true });

  const segSeries = data.series.map(function (s, k) { return { s: s, k: k }; })
    .filter(function (x) { return x.s.modality === "SEG"; });
  const buttons = document.querySelectorAll(".series-strip button");
  segSeries.forEach(function (x) { if (buttons[x.k]) buttons[x.k].hidden = true; });
  const strip = document.getElementById("series-strip");
  if (strip && data.series.length - segSeries.length < 2) strip.hidden = true;

  const palette = { next: 0 };
  segSeries.forEach(function (x) {
    fetch(base + x.s.uid + "/metadata", { credentials: "same-origin", headers: { Accept: "application/dicom+json" } })
      .then(function (r) { if (!r.ok) throw new Error("SEG metadata " + r.status); return r.json(); })
      .then(function (items) {
      return Promise.all(items.filter(function (item) { return values(item, "52009230"); }).map(function (item) {
        const seg = describe(item, x.s.uid, palette);
        segs.push(seg);
        return loadMasks(seg).then(function () {
          seg.segments.forEach(function (segment) {
            const css = "rgb(" + segment.color.join(",") + ")";
            addSwitch("layer-seg-" + seg.sop + "-" + segment.number, segment.label, css, true, function (on) {
              segment.visible = on; draw();
            });
          });
        });
      }));
    }).then(draw, function () { /* a SEG that cannot be read stays a series in the strip */
      const b = document.querySelectorAll(".series-strip button")[x.k];
      if (b) b.hidden = false;
    });
  });

  vp.addEventListener("cloudfilm:view", function () { offerRegions(); draw(); });
  window.cloudfilmSegs = {
    segments: function () {
      return segs.reduce(function (out, seg) {
        return out.concat(seg.segments.map(function (s) { return { label: s.label, color: s.color, visible: s.visible, series: s.series }; }));
      }, []);
    },
    labToRgb: labToRgb,
  };
})();
