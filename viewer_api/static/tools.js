/* cloudfilm viewer: simple or full toolbar. Patients and share visitors start with the tools they
   can use on a phone (window presets, fit, play, film, share); "All tools" adds drag modes
   (scroll, window/level, pan), the measuring tools (measure.js), zoom buttons, invert, reset, the
   orientation overlay switch (overlays.js), the DICOM ZIP and OHIF. The choice is kept in
   this browser (localStorage) per starting mode. Elements with class "tool-full" are the extras.
   Fires "cloudfilm:tools" on document with detail "simple" | "full". Plain JS, no build step. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("study-data").textContent);
  const start = data.tools === "simple" ? "simple" : "full";
  const KEY = "cloudfilm.tools." + start;
  const root = document.querySelector("main.viewer");
  const button = document.getElementById("tools-toggle");
  if (!root || !button) return;

  function stored() {
    try { return window.localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function store(mode) {
    try { window.localStorage.setItem(KEY, mode); } catch (e) { /* private mode: not kept */ }
  }

  function apply(mode) {
    root.classList.toggle("tools-simple", mode === "simple");
    button.setAttribute("aria-pressed", String(mode === "full"));
    root.dataset.tools = mode;
    document.dispatchEvent(new CustomEvent("cloudfilm:tools", { detail: mode }));
  }

  let mode = stored() === "simple" || stored() === "full" ? stored() : start;
  apply(mode);
  button.addEventListener("click", function () {
    mode = mode === "simple" ? "full" : "simple";
    store(mode);
    apply(mode);
  });
})();
