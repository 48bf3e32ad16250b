/* cloudfilm image overlays: orientation markers and slice position on the viewport, togglable.

   Markers (PS3.3 C.7.6.2.1.1): the patient direction each screen edge points to, from
   ImageOrientationPatient: the row cosines point to the right edge, the column cosines to the
   bottom; x+ is L, y+ is P, z+ is H (opposites R, A, F); an oblique edge gets up to three letters,
   the strongest first. Corner: slice location (SliceLocation, else ImagePositionPatient along the
   normal) and SliceThickness. The "Info" button hides markers and corner texts. */
(function () {
  "use strict";
  const viewer = window.cloudfilmViewer, pixels = window.cloudfilmPixels;
  const vp = document.getElementById("viewport");
  const dataEl = document.getElementById("study-data");
  if (!viewer || !pixels || !vp || !dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const OBLIQUE = 0.25;   // a direction cosine counts towards a letter from this size on

  function letters(v) {
    const names = [["L", "R"], ["P", "A"], ["H", "F"]];
    return [0, 1, 2]
      .filter(function (k) { return Math.abs(v[k]) >= OBLIQUE; })
      .sort(function (a, b) { return Math.abs(v[b]) - Math.abs(v[a]); })
      .map(function (k) { return names[k][v[k] > 0 ? 0 : 1]; })
      .join("");
  }

  /** Letters at the left, right, top and bottom edges, or null without a valid orientation. */
  function markers(iop) {
    if (!iop || iop.length !== 6 || iop.some(function (x) { return !Number.isFinite(x); })) return null;
    const row = iop.slice(0, 3), col = iop.slice(3, 6);
    const neg = function (v) { return v.map(function (x) { return -x; }); };
    return { left: letters(neg(row)), right: letters(row), top: letters(neg(col)), bottom: letters(col) };
  }

  function location(h) {
    if (h.sliceLocation != null && Number.isFinite(h.sliceLocation)) return h.sliceLocation;
    const o = h.orientation, p = h.position;
    if (!o || o.length !== 6 || !p || p.length !== 3) return null;
    const n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    return p[0] * n[0] + p[1] * n[1] + p[2] * n[2];
  }

  const edges = {};
  ["left", "right", "top", "bottom"].forEach(function (side) {
    const el = document.createElement("div");
    el.className = "orient " + side;
    el.id = "orient-" + side;
    vp.appendChild(el);
    edges[side] = el;
  });
  const corner = document.createElement("div");
  corner.className = "corner br";
  corner.id = "position-label";
  vp.appendChild(corner);

  let generation = 0;
  function update() {
    const st = viewer.state, s = data.series[st.s], sl = st.slices[st.i];
    if (!s || !sl) return;
    const mine = ++generation;
    pixels.header(s.uid, sl.sop).then(function (h) {
      if (mine !== generation) return;
      const m = h && markers(h.orientation);
      Object.keys(edges).forEach(function (side) { edges[side].textContent = m ? m[side] : ""; });
      const parts = [];
      const loc = h && location(h);
      if (loc != null) parts.push(window.cloudfilm.t("js.slice_location", { value: loc.toFixed(1) }));
      if (h && h.sliceThickness && h.sliceThickness[0] > 0) parts.push(window.cloudfilm.t("js.slice_thickness", { value: h.sliceThickness[0].toFixed(1) }));
      corner.textContent = parts.join("  ");
    }, function () { /* no metadata: no markers */ });
  }

  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.id = "info-toggle";
  toggle.className = "tool-full";
  toggle.textContent = window.cloudfilm.t("js.info");
  toggle.title = window.cloudfilm.t("js.info_title");
  toggle.setAttribute("aria-pressed", "true");
  toggle.addEventListener("click", function () {
    const off = vp.classList.toggle("info-off");
    toggle.setAttribute("aria-pressed", String(!off));
  });
  const anchor = document.getElementById("reset");
  if (anchor) anchor.after(toggle);

  vp.addEventListener("cloudfilm:view", update);
  update();
  window.cloudfilmOverlays = { markers: markers };
})();
