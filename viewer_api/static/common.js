/* cloudfilm: helpers shared by the pages (plain JS, no build step). */
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  /** fetch() on this origin with the CSRF header that cookie-authenticated changes need. */
  function cfFetch(url, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = Object.assign({ "X-CSRF-Token": csrf, Accept: "application/json" }, opts.headers || {});
    return fetch(url, opts);
  }

  window.cloudfilm = { fetch: cfFetch, csrf: csrf };

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest("button.revoke");
    if (!button) return;
    if (!window.confirm("Revoke this link? Whoever holds it loses access at once.")) return;
    cfFetch(button.dataset.url, { method: "DELETE" }).then(function (r) {
      if (r.ok) window.location.reload();
      else r.text().then(function (t) { window.alert(t); });
    });
  });
})();
