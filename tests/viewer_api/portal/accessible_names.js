/* Controls without an accessible name (a small subset of axe's button-name, link-name and label rules,
   after the accessible-name computation of https://www.w3.org/TR/accname-1.2/): the visible buttons,
   links, fields, list boxes and focusable elements whose name is empty, as HTML snippets. */
(() => {
  function visible(el) {
    const s = getComputedStyle(el);
    return el.getClientRects().length > 0 && s.visibility !== "hidden" && s.display !== "none";
  }
  function name(el) {
    const by = el.getAttribute("aria-labelledby");
    if (by) return by.split(/\s+/).map(function (id) { const r = document.getElementById(id); return r ? r.textContent : ""; }).join(" ").trim();
    if ((el.getAttribute("aria-label") || "").trim()) return el.getAttribute("aria-label").trim();
    if (el.labels && el.labels.length) return Array.from(el.labels).map(function (l) { return l.textContent; }).join(" ").trim();
    if (el.tagName === "INPUT" && /^(submit|button|reset)$/.test(el.type) && el.value) return el.value;
    if (el.tagName === "IMG") return (el.getAttribute("alt") || "").trim();
    const text = Array.from(el.childNodes).map(function (n) {
      if (n.nodeType === 3) return n.textContent;
      if (n.nodeType !== 1 || n.getAttribute("aria-hidden") === "true") return "";
      return n.tagName === "IMG" ? (n.getAttribute("alt") || "") : name(n);
    }).join("").trim();
    return text || (el.getAttribute("title") || "").trim();
  }
  const controls = document.querySelectorAll("button, a[href], input:not([type=hidden]), select, textarea, [role=button], [tabindex]:not([tabindex='-1'])");
  return Array.from(controls).filter(visible).filter(function (el) { return !name(el); })
    .map(function (el) { return el.outerHTML.slice(0, 120); });
})()
