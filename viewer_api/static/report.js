/* cloudfilm: the physician's report of the study (staff viewer only). Plain JS, no build step.

   GET urls.reports (viewer_api/routes/reports.py) answers {versions: [...newest first], template:
   {modality, title, sections}, citable_findings: [{document_uid, label, decision, reviewer, plugin}]}.
   A version: {id, status: "draft"|"signed"|"superseded", version, supersedes_id, superseded_by_id,
   title, sections: {clinical_information, technique, findings, impression}, key_images: [{series_uid,
   sop_uid}], ai_findings: [...], signer_name, signed_at}. With no draft: "Write report" (POST
   urls.reports) or, once signed, "Amend" (POST …/{id}/amend); a draft is saved with PUT …/{id} and
   signed with POST …/{id}/sign. */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("study-data").textContent);
  const url = data.urls.reports;
  if (!url) return;
  const $ = function (id) { return document.getElementById(id); };
  const T = window.cloudfilm.t;
  const form = $("report-form");
  const SECTIONS = ["clinical_information", "technique", "findings", "impression"].map(function (k) {
    return [k, T("js.report.section." + k)];
  });
  let state = { versions: [], template: null, citable: [], draft: null, keyImages: [] };

  function message(text, bad) {
    $("report-message").textContent = text;
    $("report-message").classList.toggle("error", !!bad);
  }

  function call(method, path, body) {
    const opts = { method: method, headers: { "Content-Type": "application/json" } };
    if (body !== undefined) opts.body = JSON.stringify(body);
    return window.cloudfilm.fetch(path, opts).then(function (r) {
      if (r.ok) return r.json();
      return r.text().then(function (t) { throw new Error(t.trim() || ("HTTP " + r.status)); });
    });
  }

  function when(iso) { return iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : ""; }

  function versionBlock(v) {
    const box = document.createElement("details");
    box.className = "report-version " + v.status;
    box.dataset.id = String(v.id);
    box.open = v.status === "signed";
    const summary = document.createElement("summary");
    summary.textContent = (v.status === "draft" ? T("js.report.draft") : T("js.report.version", { version: v.version })) +
      (v.signer_name ? " · " + T("js.report.signed_by", { name: v.signer_name, when: when(v.signed_at) }) : "");
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = v.status === "superseded" ? T("js.report.superseded") : v.status === "signed" ?
      (v.amended ? T("js.report.current_amended") : T("js.report.current")) : T("js.report.not_signed");
    summary.appendChild(badge);
    box.appendChild(summary);
    SECTIONS.forEach(function (s) {
      const text = v.sections[s[0]];
      if (!text) return;
      const h = document.createElement("h3"); h.textContent = s[1];
      const p = document.createElement("p"); p.textContent = text;
      box.append(h, p);
    });
    v.ai_findings.forEach(function (f) {
      const p = document.createElement("p"); p.className = "small"; p.textContent = T("js.report.cited", { label: f.label, decision: f.decision });
      box.appendChild(p);
    });
    if (v.status !== "draft") {
      const a = document.createElement("a");
      a.className = "button"; a.href = url + "/" + v.id + "/pdf"; a.target = "_blank"; a.rel = "noopener";
      a.textContent = "PDF";
      box.appendChild(a);
    }
    box.classList.add("report-text");
    return box;
  }

  function renderKeyImages() {
    const ul = $("report-key-images");
    ul.textContent = "";
    state.keyImages.forEach(function (k, n) {
      const li = document.createElement("li");
      li.textContent = T("js.report.key_image", { n: n + 1, label: k.label || k.sop_uid }) + " ";
      const b = document.createElement("button");
      b.type = "button"; b.className = "linkish"; b.textContent = T("js.report.remove");
      b.addEventListener("click", function () { state.keyImages.splice(n, 1); renderKeyImages(); });
      li.appendChild(b);
      ul.appendChild(li);
    });
  }

  function renderCitable(draft) {
    const box = $("report-ai");
    box.querySelectorAll("label").forEach(function (l) { l.remove(); });
    state.citable.forEach(function (f) {
      const label = document.createElement("label");
      label.className = "check";
      const input = document.createElement("input");
      input.type = "checkbox"; input.value = f.document_uid; input.name = "ai_finding";
      input.checked = draft.ai_findings.some(function (c) { return c.document_uid === f.document_uid; });
      label.append(input, " " + f.label + " (" + f.decision + " by " + f.reviewer + ")");
      box.appendChild(label);
    });
    box.hidden = !state.citable.length;
  }

  function render() {
    const list = $("report-versions");
    list.textContent = "";
    state.versions.filter(function (v) { return v.status !== "draft"; }).forEach(function (v) { list.appendChild(versionBlock(v)); });
    const draft = state.versions.find(function (v) { return v.status === "draft"; }) || null;
    const current = state.versions.find(function (v) { return v.status === "signed"; }) || null;
    state.draft = draft;
    $("report-title").textContent = (state.template ? state.template.title : T("js.report.title"));
    $("report-new").hidden = !!draft || !!current;
    $("report-amend").hidden = !!draft || !current;
    form.hidden = !draft;
    if (!draft) return;
    $("report-draft-of").textContent = draft.supersedes_id ? T("js.report.amendment_note") : T("js.report.draft_note");
    SECTIONS.forEach(function (s) { form.elements[s[0]].value = draft.sections[s[0]] || ""; });
    state.keyImages = draft.key_images.map(function (k) { return { series_uid: k.series_uid, sop_uid: k.sop_uid }; });
    renderKeyImages();
    renderCitable(draft);
  }

  function load() {
    return window.cloudfilm.fetch(url).then(function (r) { return r.json(); }).then(function (body) {
      state.versions = body.versions; state.template = body.template; state.citable = body.citable_findings || [];
      render();
    });
  }

  function draftBody() {
    const sections = {};
    SECTIONS.forEach(function (s) { sections[s[0]] = form.elements[s[0]].value; });
    const cited = Array.from(form.querySelectorAll("input[name=ai_finding]:checked")).map(function (i) { return i.value; });
    return { sections: sections, key_images: state.keyImages.map(function (k) { return { series_uid: k.series_uid, sop_uid: k.sop_uid }; }),
      ai_findings: cited };
  }

  function save() {
    return call("PUT", url + "/" + state.draft.id, draftBody());
  }

  $("report-new").addEventListener("click", function () {
    const t = state.template || { modality: "", sections: {} };
    call("POST", url, { modality: t.modality, sections: t.sections }).then(load).then(function () { message(T("js.report.started")); })
      .catch(function (e) { message(e.message, true); });
  });
  $("report-amend").addEventListener("click", function () {
    const current = state.versions.find(function (v) { return v.status === "signed"; });
    call("POST", url + "/" + current.id + "/amend").then(load).then(function () { message(T("js.report.amend_started", { version: current.version })); })
      .catch(function (e) { message(e.message, true); });
  });
  $("report-save").addEventListener("click", function () {
    save().then(function (v) { message(T("js.report.saved", { when: when(v.updated_at) })); }).catch(function (e) { message(e.message, true); });
  });
  $("report-sign").addEventListener("click", function () {
    if (!window.confirm(T("js.report.sign_confirm"))) return;
    save().then(function (v) { return call("POST", url + "/" + v.id + "/sign"); })
      .then(function (v) { return load().then(function () { message(T("js.report.signed", { version: v.version })); }); })
      .catch(function (e) { message(e.message, true); });
  });
  $("report-key-image").addEventListener("click", function () {
    const viewer = window.cloudfilmViewer;
    if (!viewer) { message(T("js.report.no_image"), true); return; }
    const image = viewer.current();
    if (state.keyImages.some(function (k) { return k.sop_uid === image.sop_uid; })) return;
    state.keyImages.push({ series_uid: image.series_uid, sop_uid: image.sop_uid,
      label: "series " + (image.series_number != null ? image.series_number : "") + ", image " + image.index });
    renderKeyImages();
  });
  load().catch(function () { message(T("js.report.load_failed"), true); });
})();
