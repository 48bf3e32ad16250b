/* cloudfilm layouts: 1×1, 1×2 and 2×2 viewports, series side by side, synchronised scrolling, and
   a prior study of the same patient beside the current one.

   The first viewport is viewer.js's (all tools). The others show the server's rendered frames
   (PS3.18 8.3.5) of the series chosen in their menu: this study's series, or a series of a prior
   study of the same patient found by QIDO-RS (studies with the same PatientID, PS3.18 10.6;
   their series and instances likewise). A wheel notch or an arrow key is one slice; a drag pages.
   Synchronised scrolling ("Sync"): viewports showing a series of the same FrameOfReferenceUID
   with parallel slices follow the one scrolled to the slice nearest the same position along the
   slice normal (ImagePositionPatient · (row × column cosines), PS3.3 C.7.6.2.1.1), within half a
   slice spacing of it; series of another frame of reference (a prior study) keep their place.
   Publishes window.cloudfilmLayouts. */
(function () {
  "use strict";
  const viewer = window.cloudfilmViewer, pixels = window.cloudfilmPixels;
  const vp = document.getElementById("viewport");
  const dataEl = document.getElementById("study-data");
  if (!viewer || !pixels || !vp || !dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const dicomweb = data.urls.dicomweb, study = data.study;
  const G = window.cloudfilmGestures;
  const T = window.cloudfilm.t;  // the page's UI texts (common.js)
  const LAYOUTS = [["1x1", "1×1", 1], ["1x2", "1×2", 2], ["2x2", "2×2", 4]];
  const JSON_ACCEPT = { Accept: "application/dicom+json" };

  /* --- geometry ------------------------------------------------------------------------------- */
  function normal(o) {
    return o && o.length === 6 ? [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]] : null;
  }
  function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

  /** Per slice of a series of this study: its header (position, orientation, frame of reference). */
  function geometryOf(source) {
    if (!source.geometry) {
      source.geometry = pixels.meta(source.series)
        .then(function (headers) { return source.slices.map(function (sl) { return headers.get(sl.sop) || null; }); })
        .catch(function () { return source.slices.map(function () { return null; }); });
    }
    return source.geometry;
  }

  /** The index in ``target`` of the slice at the position of ``from``'s slice ``index``, or -1.
      A prior study has its own frame of reference: it is never matched. */
  function matching(from, index, target) {
    if (from.study !== study.study_uid || target.study !== study.study_uid) return Promise.resolve(-1);
    return Promise.all([geometryOf(from), geometryOf(target)]).then(function (g) {
      const h = g[0][index], n = h && normal(h.orientation);
      if (!h || !n || !h.position || !h.frameOfReference) return -1;
      const at = dot(h.position, n);
      let best = -1, bestD = Infinity;
      const locations = [];
      g[1].forEach(function (t, k) {
        const tn = t && normal(t.orientation);
        if (!t || !tn || !t.position || t.frameOfReference !== h.frameOfReference || Math.abs(dot(tn, n)) < 0.99) return;
        const loc = dot(t.position, n);
        locations.push(loc);
        if (Math.abs(loc - at) < bestD) { bestD = Math.abs(loc - at); best = k; }
      });
      locations.sort(function (a, b) { return a - b; });
      let spacing = Infinity;
      for (let k = 1; k < locations.length; k++) if (locations[k] - locations[k - 1] > 1e-3) spacing = Math.min(spacing, locations[k] - locations[k - 1]);
      const tolerance = Number.isFinite(spacing) ? spacing / 2 + 1e-3 : Math.max(1, (h.sliceThickness && h.sliceThickness[0]) || 1) / 2;
      return bestD <= tolerance ? best : -1;
    });
  }

  /* --- what a viewport shows ------------------------------------------------------------------ */
  function slicesOf(images) {
    const out = [];
    images.forEach(function (im) { for (let f = 1; f <= im.frames; f++) out.push({ sop: im.sop, frame: f }); });
    return out;
  }
  const ownSources = data.series.filter(function (s) { return s.modality !== "SEG"; }).map(function (s) {
    return { key: study.study_uid + "/" + s.uid, study: study.study_uid, series: s.uid, slices: slicesOf(s.images),
             title: (s.modality || "") + " " + (s.number != null ? s.number : "") + (s.description ? " · " + s.description : ""),
             label: T("js.series_short", { number: s.number != null ? s.number : "?" }) };
  });
  const sources = new Map(ownSources.map(function (s) { return [s.key, s]; }));

  function mainSource() {
    const s = data.series[viewer.state.s];
    return s ? sources.get(study.study_uid + "/" + s.uid) || null : null;
  }

  /* --- secondary viewports -------------------------------------------------------------------- */
  const panes = document.createElement("div");
  panes.className = "panes layout-1x1";
  panes.id = "panes";
  vp.before(panes);
  panes.appendChild(vp);
  const others = [];   // {el, img, label, select, source, i}

  function frameUrl(source, i) {
    const sl = source.slices[i];
    return dicomweb + "/studies/" + source.study + "/series/" + source.series + "/instances/" + sl.sop + "/frames/" + sl.frame + "/rendered";
  }

  function show(pane, index, quiet) {
    if (!pane.source || !pane.source.slices.length) return;
    pane.i = Math.max(0, Math.min(pane.source.slices.length - 1, index));
    const url = frameUrl(pane.source, pane.i);
    if (pane.img.getAttribute("src") !== url) pane.img.setAttribute("src", url);
    pane.el.dataset.index = String(pane.i);
    pane.el.dataset.series = pane.source.series;
    pane.label.textContent = pane.source.label + " · " + (pane.i + 1) + "/" + pane.source.slices.length +
      (pane.source.study !== study.study_uid ? " · " + pane.source.date : "");
    if (!quiet) follow(pane.source, pane.i, pane);
  }

  /** Everything synchronised follows ``source``'s slice ``index`` (scrolled in viewport ``origin``). */
  let following = 0;
  function follow(source, index, origin) {
    if (!syncOn) return;
    const mine = ++following;
    const targets = others.filter(function (p) { return p !== origin && p.source && !p.el.hidden; });
    targets.forEach(function (p) {
      matching(source, index, p.source).then(function (k) { if (mine === following && k >= 0 && k !== p.i) show(p, k, true); });
    });
    if (origin) {
      const main = mainSource();
      if (main) matching(source, index, main).then(function (k) {
        if (mine === following && k >= 0 && k !== viewer.state.i) { following++; viewer.go(k); }
      });
    }
  }

  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = value; o.textContent = text;
    select.appendChild(o);
    return o;
  }

  function choose(pane, key) {
    const source = sources.get(key);
    if (!source) return;
    pane.source = source;
    pane.select.value = key;
    const main = mainSource();
    show(pane, Math.floor(source.slices.length / 2), true);
    if (syncOn && main) matching(main, viewer.state.i, source).then(function (k) { if (k >= 0 && pane.source === source) show(pane, k, true); });
  }

  function makePane(n) {
    const el = document.createElement("div");
    el.className = "viewport pane";
    el.id = "pane-" + n;
    el.tabIndex = 0;
    el.setAttribute("aria-label", T("js.layout.viewport", { n: n + 1 }));
    const img = document.createElement("img");
    img.className = "pane-img";
    img.alt = "";
    img.draggable = false;
    const label = document.createElement("div");
    label.className = "corner bl pane-label";
    const select = document.createElement("select");
    select.className = "pane-series";
    select.setAttribute("aria-label", T("js.layout.series_in", { n: n + 1 }));
    el.append(img, label, select);
    const pane = { el: el, img: img, label: label, select: select, source: null, i: 0 };
    fillSelect(pane);
    select.addEventListener("change", function () {
      if (select.value === "priors") { loadPriors(); return; }
      choose(pane, select.value);
    });

    const wheel = new G.WheelStepper();
    el.addEventListener("wheel", function (e) {
      e.preventDefault();
      const k = wheel.steps(e.deltaY || e.deltaX, e.deltaMode, e.timeStamp);
      if (k) show(pane, pane.i + k);
    }, { passive: false });
    el.addEventListener("keydown", function (e) {
      const keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
      if (e.target !== el || !(e.key in keys)) return;
      e.preventDefault(); e.stopPropagation();
      show(pane, pane.i + keys[e.key]);
    });
    let drag = null;
    el.addEventListener("pointerdown", function (e) {
      if (e.target === select) return;
      el.setPointerCapture(e.pointerId);
      drag = { id: e.pointerId, index: pane.i, swipe: new G.Swipe(e.clientX, e.clientY, e.timeStamp, e.pointerType === "mouse" ? 8 : G.TOUCH_STEP_PX) };
    });
    el.addEventListener("pointermove", function (e) {
      if (!drag || drag.id !== e.pointerId) return;
      const k = drag.index + drag.swipe.move(e.clientX, e.clientY, e.timeStamp);
      if (k !== pane.i) show(pane, k);
    });
    const end = function (e) { if (drag && drag.id === e.pointerId) drag = null; };
    el.addEventListener("pointerup", end);
    el.addEventListener("pointercancel", end);
    panes.appendChild(el);
    return pane;
  }

  function fillSelect(pane) {
    const select = pane.select, keep = select.value;
    select.textContent = "";
    const here = document.createElement("optgroup");
    here.label = T("js.layout.this_study");
    select.appendChild(here);
    ownSources.forEach(function (s) { option(here, s.key, s.title); });
    if (priors.length) {
      priors.forEach(function (p) {
        const group = document.createElement("optgroup");
        group.label = (p.earlier ? T("js.layout.prior_study", { date: p.date }) : T("js.layout.other_study", { date: p.date })) +
          (p.description ? " · " + p.description : "");
        select.appendChild(group);
        p.sources.forEach(function (s) { option(group, s.key, s.title); });
      });
    } else if (priorsState !== "none") {
      option(select, "priors", priorsState === "loading" ? T("js.layout.looking") : T("js.layout.priors"));
    }
    if (keep && Array.from(select.options).some(function (o) { return o.value === keep; })) select.value = keep;
    else if (pane.source) select.value = pane.source.key;
  }

  /* --- prior studies (QIDO-RS by PatientID) --------------------------------------------------- */
  let priors = [], priorsState = study.patient_id ? "ask" : "none";
  function qido(path) {
    return fetch(dicomweb + path, { credentials: "same-origin", headers: JSON_ACCEPT })
      .then(function (r) { if (r.status === 204) return []; if (!r.ok) throw new Error("QIDO " + r.status); return r.json(); });
  }
  function v(item, tag) { const el = item && item[tag]; return el && el.Value && el.Value.length ? el.Value[0] : null; }
  function date(d) { return d && d.length === 8 ? d.slice(0, 4) + "-" + d.slice(4, 6) + "-" + d.slice(6) : (d || ""); }

  /** Earlier studies of this patient (newest first) and, per study, its image series and instances. */
  function loadPriors() {
    if (priorsState !== "ask") return Promise.resolve(priors);
    priorsState = "loading";
    others.forEach(fillSelect);
    return qido("/studies?PatientID=" + encodeURIComponent(study.patient_id) + "&limit=50")
      .then(function (studies) {
        const earlier = studies.filter(function (s) { return v(s, "0020000D") !== study.study_uid; })
          .sort(function (a, b) { return String(v(b, "00080020") || "").localeCompare(String(v(a, "00080020") || "")); });
        return Promise.all(earlier.map(function (s) {
          const uid = v(s, "0020000D");
          return qido("/studies/" + uid + "/series").then(function (series) {
            const images = series.filter(function (se) { return ["SEG", "SR", "PR", "KO", "DOC"].indexOf(v(se, "00080060")) < 0; });
            return Promise.all(images.map(function (se) {
              const seUid = v(se, "0020000E");
              return qido("/studies/" + uid + "/series/" + seUid + "/instances?includefield=00280008").then(function (inst) {
                inst.sort(function (a, b) { return (Number(v(a, "00200013")) || 0) - (Number(v(b, "00200013")) || 0); });
                const number = v(se, "00200011"), d = date(v(s, "00080020"));
                const source = { key: uid + "/" + seUid, study: uid, series: seUid, date: d,
                  slices: slicesOf(inst.map(function (i) { return { sop: v(i, "00080018"), frames: Number(v(i, "00280008")) || 1 }; })),
                  title: (v(se, "00080060") || "") + " " + (number != null ? number : "") + (v(se, "0008103E") ? " · " + v(se, "0008103E") : ""),
                  label: T("js.series_short", { number: number != null ? number : "?" }) };
                sources.set(source.key, source);
                return source;
              });
            })).then(function (list) {
              return { uid: uid, date: date(v(s, "00080020")), description: v(s, "00081030") || "",
                       earlier: String(v(s, "00080020") || "") < String(study.study_date || ""),
                       sources: list.filter(function (x) { return x.slices.length; }) };
            });
          });
        }));
      })
      .then(function (list) {
        priors = list.filter(function (p) { return p.sources.length; });
        priorsState = priors.length ? "loaded" : "none";
        others.forEach(fillSelect);
        return priors;
      }, function () { priorsState = "ask"; others.forEach(fillSelect); return priors; });
  }

  /* --- layout switch and sync ----------------------------------------------------------------- */
  let syncOn = true, layout = "1x1";
  function setLayout(name) {
    const spec = LAYOUTS.find(function (l) { return l[0] === name; });
    if (!spec) return;
    layout = name;
    panes.className = "panes layout-" + name;
    while (others.length < spec[2] - 1) {
      const pane = makePane(others.length + 1);
      others.push(pane);
      const main = mainSource();
      const used = [main].concat(others.map(function (p) { return p.source; }));
      const next = ownSources.find(function (s) { return used.indexOf(s) < 0; }) || ownSources[0];
      if (next) choose(pane, next.key);
    }
    others.forEach(function (p, k) { p.el.hidden = k >= spec[2] - 1; });
    group.querySelectorAll("button[data-layout]").forEach(function (b) { b.setAttribute("aria-pressed", String(b.dataset.layout === name)); });
    document.body.classList.toggle("multi-viewport", spec[2] > 1);
    vp.dataset.layout = name;
  }

  const group = document.createElement("div");
  group.className = "layouts tool-full";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", T("js.layout.group"));
  LAYOUTS.forEach(function (l) {
    const b = document.createElement("button");
    b.type = "button"; b.dataset.layout = l[0]; b.textContent = l[1]; b.title = T("js.layout.title", { layout: l[1] });
    b.setAttribute("aria-pressed", String(l[0] === layout));
    b.addEventListener("click", function () { setLayout(l[0]); });
    group.appendChild(b);
  });
  const syncButton = document.createElement("button");
  syncButton.type = "button"; syncButton.id = "sync"; syncButton.textContent = T("js.layout.sync");
  syncButton.title = T("js.layout.sync_title");
  syncButton.setAttribute("aria-pressed", "true");
  syncButton.addEventListener("click", function () {
    syncOn = !syncOn;
    syncButton.setAttribute("aria-pressed", String(syncOn));
    if (syncOn) follow(mainSource(), viewer.state.i, null);
  });
  group.appendChild(syncButton);

  /* Compare: the newest prior study beside this one, its series most like the one shown. */
  const compareButton = document.createElement("button");
  compareButton.type = "button"; compareButton.id = "compare"; compareButton.textContent = T("js.layout.prior");
  compareButton.title = T("js.layout.prior_title");
  compareButton.hidden = priorsState === "none";
  compareButton.addEventListener("click", function () {
    compareButton.disabled = true;
    loadPriors().then(function (list) {
      compareButton.disabled = false;
      const prior = list.filter(function (p) { return p.earlier; })[0] || list[0];
      if (!prior) { compareButton.disabled = true; compareButton.title = T("js.layout.no_prior"); return; }
      if (layout === "1x1") setLayout("1x2");
      const main = mainSource(), shown = data.series[viewer.state.s] || {};
      const score = function (src) {
        return (main && src.title.split(" ")[0] === main.title.split(" ")[0] ? 2 : 0) +
               (shown.description && src.title.indexOf(shown.description) >= 0 ? 1 : 0);
      };
      const best = prior.sources.slice().sort(function (a, b) { return score(b) - score(a); })[0];
      choose(others[0], best.key);
      others[0].el.dataset.study = prior.uid;
    });
  });
  group.appendChild(compareButton);
  const anchor = document.getElementById("fit");
  if (anchor) anchor.before(group);
  else if (document.querySelector(".toolbar")) document.querySelector(".toolbar").appendChild(group);

  /* The main viewport scrolled (or changed series): the others follow. */
  let lastMain = "";
  vp.addEventListener("cloudfilm:view", function () {
    const main = mainSource();
    if (!main || !others.length) return;
    const now = main.key + "#" + viewer.state.i;
    if (now === lastMain) return;   // a window change, not a scroll
    lastMain = now;
    follow(main, viewer.state.i, null);
  });

  window.cloudfilmLayouts = {
    set: setLayout,
    sync: function (on) { if (on !== syncOn) syncButton.click(); },
    panes: function () { return others.map(function (p) { return { series: p.source && p.source.series, study: p.source && p.source.study, index: p.i, hidden: p.el.hidden }; }); },
    choose: function (n, key) { if (others[n - 1]) choose(others[n - 1], key); },
    scroll: function (n, steps) { const p = others[n - 1]; if (p) show(p, p.i + steps); },
    priors: loadPriors,
  };
})();
