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

  /* UI texts of the page's language (the "js." keys of viewer_api/i18n/messages.json, embedded by base.html). */
  const textsEl = document.getElementById("i18n");
  const texts = textsEl ? JSON.parse(textsEl.textContent) : {};

  /** The text of ``key`` with ``{field}``s filled from ``fields``; ``fallback`` (or the key) when it is missing. */
  function t(key, fields, fallback) {
    const text = Object.prototype.hasOwnProperty.call(texts, key) ? texts[key] : (fallback != null ? fallback : key);
    return text.replace(/\{(\w+)\}/g, function (m, name) { return fields && name in fields ? String(fields[name]) : m; });
  }
  /** The ``key.one`` / ``key.other`` text for ``count``. */
  function tn(key, count, fields) {
    return t(key + (count === 1 ? ".one" : ".other"), Object.assign({ count: count }, fields || {}));
  }

  const lang = document.documentElement.lang || "en";
  /** An ISO date (or date-time) the way the page's language writes it, as the server does (i18n/catalogue.py). */
  function date(iso) {
    const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso || "");
    if (!m) return iso || "";
    return lang === "zh-CN" ? Number(m[1]) + "年" + Number(m[2]) + "月" + Number(m[3]) + "日" : m[0];
  }

  window.cloudfilm = { fetch: cfFetch, csrf: csrf, t: t, tn: tn, date: date, lang: lang };

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest("button.revoke");
    if (!button) return;
    if (!window.confirm(t("js.revoke_confirm"))) return;
    cfFetch(button.dataset.url, { method: "DELETE" }).then(function (r) {
      if (r.ok) window.location.reload();
      else r.text().then(function (t) { window.alert(t); });
    });
  });
})();
