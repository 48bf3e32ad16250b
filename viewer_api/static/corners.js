/* cloudfilm patient and study corner: patient name, ID, study date and the series shown, written
   on the image (top right) so a screenshot or a glance at a wall screen says whose image it is.
   Hidden with the other image texts by the "Info" switch (overlays.js: .viewport.info-off). */
(function () {
  "use strict";
  const viewer = window.cloudfilmViewer;
  const vp = document.getElementById("viewport");
  const dataEl = document.getElementById("study-data");
  if (!viewer || !vp || !dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  const study = data.study || {};
  const nameEl = document.getElementById("patient-name");

  /* A DICOM DA (YYYYMMDD) the way the page's language writes dates (common.js: 2024-01-15 / 2024年1月15日). */
  function date(v) { return v && v.length === 8 ? window.cloudfilm.date(v.slice(0, 4) + "-" + v.slice(4, 6) + "-" + v.slice(6)) : (v || ""); }

  const corner = document.createElement("div");
  corner.className = "corner tr patient-corner";
  corner.id = "patient-corner";
  const lines = ["name", "id", "date", "series"].map(function (k) {
    const line = document.createElement("div");
    line.className = "pc-" + k;
    corner.appendChild(line);
    return line;
  });
  lines[0].textContent = nameEl ? nameEl.textContent.trim() : (study.patient_name || "").replace(/\^/g, " ").trim();
  lines[1].textContent = study.patient_id ? "ID " + study.patient_id : "";
  lines[2].textContent = [date(study.study_date), study.description || ""].filter(Boolean).join(" · ");
  vp.appendChild(corner);
  vp.classList.add("has-patient-corner");

  function update() {
    const s = data.series[viewer.state.s];
    lines[3].textContent = s ? [s.number != null ? window.cloudfilm.t("js.series_short", { number: s.number }) : "", s.description || ""].filter(Boolean).join(" · ") : "";
  }
  vp.addEventListener("cloudfilm:view", update);
  update();
})();
