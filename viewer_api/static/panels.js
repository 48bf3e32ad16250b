/* cloudfilm viewer: the report and findings panels fold behind a bar. On a phone (narrower than
   900 px) they start folded so the image has the screen; on wider screens they start open. A panel
   the user has opened or folded keeps that state when the screen turns. Plain JS, no build step.

   Markup: <X class="panel"><button class="panel-bar" aria-controls="BODY">…</button>
   <div class="panel-body" id="BODY">…</div></X>; app.css shows a panel's body only while it has class "open". */
(function () {
  "use strict";
  const PHONE = window.matchMedia("(max-width: 899px)");
  const panels = Array.prototype.slice.call(document.querySelectorAll(".panel"));

  function set(panel, open) {
    panel.classList.toggle("open", open);
    const bar = panel.querySelector(".panel-bar");
    if (bar) bar.setAttribute("aria-expanded", String(open));
  }

  function isOpen(panel) { return panel.classList.contains("open"); }

  panels.forEach(function (panel) {
    const bar = panel.querySelector(".panel-bar");
    set(panel, !PHONE.matches);
    if (!bar) return;
    bar.addEventListener("click", function () {
      panel.dataset.chosen = "1";
      set(panel, !isOpen(panel));
    });
  });

  PHONE.addEventListener("change", function () {
    panels.forEach(function (panel) { if (!panel.dataset.chosen) set(panel, !PHONE.matches); });
  });

  window.cloudfilmPanels = {
    /** Open ``panel`` (an element or its id), as when a finding is chosen from elsewhere. */
    open: function (panel) {
      const el = typeof panel === "string" ? document.getElementById(panel) : panel;
      if (el) set(el, true);
    },
    isOpen: isOpen,
    /** Fold ``panel`` on a phone (to give the image the screen); wider screens keep it open. */
    foldOnPhone: function (panel) { if (panel && PHONE.matches) set(panel, false); },
  };
})();
