"""The access matrix: each kind of caller × every route → the expected status.

Callers: nobody, an admin (session cookie), a physician (OAuth2 bearer), the patient who owns the
"owned" study (session cookie), an AI vendor (API key) and a visitor holding a share link of the
owned study (share cookie, no downloads), and a clinician elsewhere holding the DICOMweb bearer token of
a clinician share of the owned study (QIDO-RS and WADO-RS of that study only). 401: not signed in;
403: the role may not; 404: the study is outside the caller's scope (its existence does not leak).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import insert, select

from ai_plugins.runner.models import PluginRecord
from ai_plugins.sdk import Classification, Findings, PluginInfo, codes
from ai_plugins.sr import build_measurement_report
from pacs.accounts.edge_workers import add_edge_worker
from pacs.accounts.principal import Principal
from pacs.index.db import utcnow
from pacs.index.models import Instance, Series
from pacs.reports import service as reports
from pacs.reports.models import ReportRow
from pacs.reports.types import DraftRequest, ReportSections
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.viewer_api.portal.conftest import KINDS, Site, frame_url, store

BOUNDARY = "matrix-boundary"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: Callable[[Site], str]
    expect: dict[str, int]  # kind -> status
    body: Callable[[Site, str], dict[str, object]] | None = None


def row(anonymous: int, admin: int, physician: int, patient: int, vendor: int, share: int,
        clinician: int) -> dict[str, int]:
    return dict(zip(KINDS, (anonymous, admin, physician, patient, vendor, share, clinician), strict=True))


def _owned(s: Site) -> str:
    return s.owned_uid


def _other(s: Site) -> str:
    return s.other_uid


def _wado(ds_of: Callable[[Site], object]) -> Callable[[Site], str]:
    def path(s: Site) -> str:
        ds = ds_of(s)
        return (f"/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"  # type: ignore[attr-defined]
                f"&objectUID={ds.SOPInstanceUID}&contentType=image/jpeg")  # type: ignore[attr-defined]
    return path


def _stow_body(_s: Site, kind: str) -> dict[str, object]:
    ds = make_ct_study(PATIENTS[3], n_slices=1, rows=16, cols=16, seed=900 + KINDS.index(kind))[0]
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(ds)
            + f"\r\n--{BOUNDARY}--\r\n".encode())
    return {"content": body,
            "headers": {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}}


def _share_body(_s: Site, _kind: str) -> dict[str, object]:
    return {"json": {"expires_in_days": 3}}


def _throwaway(s: Site) -> str:
    ds = make_ct_study(PATIENTS[4], n_slices=1, rows=16, cols=16, seed=950)
    store(s.archive, ds)
    return f"/dicomweb/studies/{ds[0].StudyInstanceUID}"


_AI_SR: dict[int, tuple[str, str]] = {}


def _ai_sr(s: Site) -> tuple[str, str]:
    """An AI Measurement Report SR in the owned study, stored once per site: (series, SOP) UIDs."""
    if id(s) not in _AI_SR:
        plugin = PluginInfo(name="matrix-ai", version="1", vendor="tests")
        findings = Findings(evaluated_series=[str(s.owned[0].SeriesInstanceUID)],
                            classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=0.9)])
        sr = build_measurement_report(findings, s.owned, plugin)
        store(s.archive, [sr])
        _AI_SR[id(s)] = (str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID))
    return _AI_SR[id(s)]


def _ai_sr_path(suffix: str = "") -> Callable[[Site], str]:
    def path(s: Site) -> str:
        series, sop = _ai_sr(s)
        return f"/dicomweb/studies/{s.owned_uid}/series/{series}/instances/{sop}{suffix}"
    return path


def _plugin_reviews(s: Site) -> str:
    """The review counts of the plugin that made the matrix SR (registered as a vendor's once)."""
    _ai_sr(s)
    with s.archive.engine.begin() as conn:
        if conn.execute(select(PluginRecord.id).where(PluginRecord.name == "matrix-ai")).first() is None:
            conn.execute(insert(PluginRecord).values(name="matrix-ai", version="1", source="remote",
                                                     registered_by="acme", created_at=utcnow(), updated_at=utcnow()))
    return "/api/plugins/matrix-ai/1/reviews"


def _review_body(s: Site, _kind: str) -> dict[str, object]:
    """Accept the matrix SR's classification (each staff caller records its own decision)."""
    _series, sop = _ai_sr(s)
    return {"json": {"report_uid": sop, "finding_key": "Classification 1", "decision": "accepted"}}


_REPORTS: dict[int, tuple[int, int]] = {}
_REPORT_TEXT = ReportSections(findings="No focal lesion.", impression="Normal study.")


def _doctor(s: Site) -> Principal:
    return Principal(user_id=None, username="doc", role="physician", via="bearer")


def _owned_reports(s: Site) -> tuple[int, int]:
    """The owned study's report, signed and then amended once per site: (superseded, current) ids."""
    if id(s) not in _REPORTS:
        doc = _doctor(s)
        first = reports.sign_draft(s.archive, doc, s.owned_uid, reports.create_draft(
            s.archive, doc, s.owned_uid, DraftRequest(sections=_REPORT_TEXT), citable=[]).id)
        second = reports.sign_draft(s.archive, doc, s.owned_uid,
                                    reports.start_amendment(s.archive, doc, s.owned_uid, first.id).id)
        _REPORTS[id(s)] = (first.id, second.id)
    return _REPORTS[id(s)]


def _fresh_study(s: Site, seed: int) -> str:
    ds = make_ct_study(PATIENTS[5], n_slices=1, rows=16, cols=16, seed=seed)
    store(s.archive, ds)
    return str(ds[0].StudyInstanceUID)


_SEEDS = itertools.count(2000)


def _fresh_draft(s: Site, signed: bool = False) -> str:
    """A new study with a draft (``signed``: a signed version) of its report: its report URL."""
    study_uid = _fresh_study(s, next(_SEEDS))
    doc = _doctor(s)
    report = reports.create_draft(s.archive, doc, study_uid, DraftRequest(sections=_REPORT_TEXT), citable=[])
    if signed:
        report = reports.sign_draft(s.archive, doc, study_uid, report.id)
    return f"/api/studies/{study_uid}/reports/{report.id}"


def _owned_amendment(s: Site) -> str:
    """Drafts of the owned study's signed report: the first caller starts one, the next finds it there."""
    _owned_reports(s)
    return f"/api/studies/{s.owned_uid}/reports"


def _report_pdf(which: int) -> Callable[[Site], str]:
    """WADO-RS of the PDF of the owned study's superseded (0) or current (1) report version."""
    def path(s: Site) -> str:
        report_id = _owned_reports(s)[which]
        with s.archive.engine.connect() as conn:
            pdf_uid = conn.execute(select(ReportRow.pdf_uid).where(ReportRow.id == report_id)).scalar_one()
            series_uid = conn.execute(select(Series.series_uid).join(Instance, Instance.series_fk == Series.id)
                                      .where(Instance.sop_uid == pdf_uid)).scalar_one()
        return f"/dicomweb/studies/{s.owned_uid}/series/{series_uid}/instances/{pdf_uid}"
    return path


def _correction_body(s: Site, _kind: str) -> dict[str, object]:
    return {"json": {"kind": "update-study", "study_uid": _fresh_study(s, next(_SEEDS)),
                     "study_description": "Corrected by the matrix"}}


def _draft_body(_s: Site, _kind: str) -> dict[str, object]:
    return {"json": {"sections": {"findings": "Saved by the matrix."}}}

EDGE_BODIES: dict[str, dict[str, object]] = {
    "lease": {"worker_id": "matrix", "plugins": []},
    "heartbeat": {"worker_id": "matrix", "attempt": 1},
    "complete": {"worker_id": "matrix", "attempt": 1, "findings": {}},
    "fail": {"worker_id": "matrix", "attempt": 1, "error": "x"},
    "release": {"worker_id": "matrix", "attempt": 1},
}
#: What an edge worker's token gets from its own routes: a lease answer, and 409 for a job it does not hold.
#: No admitted package has that SHA-256: 404 (tests/viewer_api/test_edge_packages.py has the rest).
EDGE_OWN = {"edge-lease": 200, "edge-heartbeat": 409, "edge-complete": 409, "edge-fail": 409, "edge-release": 409,
            "edge-package": 404}
NO_PACKAGE = "0" * 64

CASES: list[Case] = [
    # DICOMweb and WADO-URI
    Case("qido-studies", "GET", lambda s: "/dicomweb/studies", row(401, 200, 200, 200, 200, 403, 200)),
    Case("qido-series", "GET", lambda s: "/dicomweb/series", row(401, 200, 200, 200, 200, 403, 200)),
    Case("qido-series-of-owned", "GET", lambda s: f"/dicomweb/studies/{_owned(s)}/series",
         row(401, 200, 200, 200, 200, 200, 200)),
    Case("metadata-owned", "GET", lambda s: f"/dicomweb/studies/{_owned(s)}/metadata",
         row(401, 200, 200, 200, 404, 200, 200)),
    Case("metadata-other", "GET", lambda s: f"/dicomweb/studies/{_other(s)}/metadata",
         row(401, 200, 200, 404, 404, 404, 404)),
    Case("retrieve-owned", "GET", lambda s: f"/dicomweb/studies/{_owned(s)}", row(401, 200, 200, 200, 404, 200, 200)),
    Case("retrieve-other", "GET", lambda s: f"/dicomweb/studies/{_other(s)}", row(401, 200, 200, 404, 404, 404, 404)),
    Case("rendered-owned", "GET", lambda s: frame_url(s.owned[0]), row(401, 200, 200, 200, 404, 200, 200)),
    Case("rendered-other", "GET", lambda s: frame_url(s.other[0]), row(401, 200, 200, 404, 404, 404, 404)),
    Case("thumbnail-other", "GET", lambda s: f"/dicomweb/studies/{_other(s)}/thumbnail",
         row(401, 200, 200, 404, 404, 404, 404)),
    Case("wado-uri-owned", "GET", _wado(lambda s: s.owned[1]), row(401, 200, 200, 200, 404, 200, 403)),
    Case("wado-uri-other", "GET", _wado(lambda s: s.other[1]), row(401, 200, 200, 404, 404, 404, 403)),
    # AI results: only physicians' released (reviewed) ones reach patients and share links (issue 13)
    Case("ai-sr-owned", "GET", _ai_sr_path(), row(401, 200, 200, 404, 404, 404, 404)),
    Case("ai-sr-metadata-owned", "GET", _ai_sr_path("/metadata"), row(401, 200, 200, 404, 404, 404, 404)),
    Case("stow", "POST", lambda s: "/dicomweb/studies", row(401, 200, 200, 403, 403, 403, 403), _stow_body),
    Case("delete-study", "DELETE", _throwaway, row(401, 204, 403, 403, 403, 403, 403)),
    # Pages
    Case("worklist", "GET", lambda s: "/viewer/worklist", row(401, 200, 200, 403, 403, 403, 403)),
    Case("patient-home", "GET", lambda s: "/viewer/home", row(401, 403, 403, 200, 403, 403, 403)),
    Case("viewer-owned", "GET", lambda s: f"/viewer/studies/{_owned(s)}", row(401, 200, 200, 200, 403, 200, 403)),
    Case("viewer-other", "GET", lambda s: f"/viewer/studies/{_other(s)}", row(401, 200, 200, 404, 403, 404, 403)),
    Case("share-page", "GET", lambda s: f"/s/{s.share.token}", row(200, 200, 200, 200, 200, 200, 200)),
    Case("login-page", "GET", lambda s: "/login", row(200, 303, 303, 303, 303, 200, 200)),
    Case("static", "GET", lambda s: "/static/app.css", row(200, 200, 200, 200, 200, 200, 200)),
    Case("healthz", "GET", lambda s: "/healthz", row(200, 200, 200, 200, 200, 200, 200)),
    # JSON API
    Case("me", "GET", lambda s: "/api/auth/me", row(401, 200, 200, 200, 200, 200, 403)),
    Case("shares-owned", "GET", lambda s: f"/api/studies/{_owned(s)}/shares", row(401, 200, 200, 200, 403, 403, 403)),
    Case("shares-other", "GET", lambda s: f"/api/studies/{_other(s)}/shares", row(401, 200, 200, 404, 403, 403, 403)),
    Case("share-create-owned", "POST", lambda s: f"/api/studies/{_owned(s)}/shares",
         row(401, 201, 201, 201, 403, 403, 403), _share_body),
    Case("share-create-other", "POST", lambda s: f"/api/studies/{_other(s)}/shares",
         row(401, 201, 201, 404, 403, 403, 403), _share_body),
    Case("findings-owned", "GET", lambda s: f"/api/studies/{_owned(s)}/findings",
         row(401, 200, 200, 200, 404, 200, 403)),
    Case("findings-other", "GET", lambda s: f"/api/studies/{_other(s)}/findings",
         row(401, 200, 200, 404, 404, 404, 403)),
    Case("review-owned", "POST", lambda s: f"/api/studies/{_owned(s)}/findings/reviews",
         row(401, 201, 201, 403, 403, 403, 403), _review_body),
    Case("plugin-reviews", "GET", _plugin_reviews, row(401, 200, 200, 403, 403, 403, 403)),
    # Reports (issue 13): staff write; patients and share links read the latest signed version only
    Case("reports-owned", "GET", lambda s: f"/api/studies/{_owned(s)}/reports", row(401, 200, 200, 200, 403, 200, 403)),
    Case("reports-other", "GET", lambda s: f"/api/studies/{_other(s)}/reports", row(401, 200, 200, 404, 403, 404, 403)),
    Case("report-current", "GET", lambda s: f"/api/studies/{_owned(s)}/reports/{_owned_reports(s)[1]}",
         row(401, 200, 200, 200, 403, 200, 403)),
    Case("report-superseded", "GET", lambda s: f"/api/studies/{_owned(s)}/reports/{_owned_reports(s)[0]}",
         row(401, 200, 200, 404, 403, 404, 403)),
    Case("report-current-pdf", "GET", lambda s: f"/api/studies/{_owned(s)}/reports/{_owned_reports(s)[1]}/pdf",
         row(401, 200, 200, 200, 403, 200, 403)),
    Case("report-superseded-pdf", "GET", lambda s: f"/api/studies/{_owned(s)}/reports/{_owned_reports(s)[0]}/pdf",
         row(401, 200, 200, 404, 403, 404, 403)),
    # Superseded report documents are withheld from patients and share links in DICOMweb too (issue 17)
    Case("report-superseded-pdf-wado", "GET", _report_pdf(0), row(401, 200, 200, 404, 404, 404, 404)),
    Case("report-current-pdf-wado", "GET", _report_pdf(1), row(401, 200, 200, 200, 404, 200, 200)),
    Case("report-create", "POST", lambda s: f"/api/studies/{_fresh_study(s, next(_SEEDS))}/reports",
         row(401, 201, 201, 403, 403, 403, 403), _draft_body),
    Case("report-create-owned", "POST", _owned_amendment,
         row(401, 201, 409, 403, 403, 403, 403), _draft_body),  # admin starts an amendment draft: then there is one
    Case("report-save", "PUT", lambda s: _fresh_draft(s), row(401, 200, 200, 403, 403, 403, 403), _draft_body),
    Case("report-sign", "POST", lambda s: _fresh_draft(s) + "/sign", row(401, 200, 200, 403, 403, 403, 403)),
    Case("report-amend", "POST", lambda s: _fresh_draft(s, signed=True) + "/amend",
         row(401, 201, 201, 403, 403, 403, 403)),
    Case("audit", "GET", lambda s: "/api/audit", row(401, 200, 403, 200, 403, 403, 403)),
    Case("api-keys", "GET", lambda s: "/api/auth/keys", row(401, 200, 200, 200, 200, 403, 403)),
    # Telling patients (issue 13): an account's own address; the message log and re-sends for admins
    Case("my-email", "PUT", lambda s: "/api/auth/me/email", row(401, 200, 200, 200, 200, 403, 403),
         lambda _s, kind: {"json": {"email": f"{kind}@matrix.example"}}),
    Case("notifications", "GET", lambda s: "/api/notifications", row(401, 200, 403, 403, 403, 403, 403)),
    Case("notification-resend", "POST", lambda s: "/api/notifications/999/resend",
         row(401, 404, 403, 403, 403, 403, 403)),
    # The deployment watch (issue 15): staff, as the review counts it shows
    Case("plugin-watch", "GET", lambda s: _plugin_reviews(s).replace("/reviews", "/watch"),
         row(401, 200, 200, 403, 403, 403, 403)),
    Case("plugins-watch", "GET", lambda s: "/api/plugins/watch", row(401, 200, 200, 403, 403, 403, 403)),
    Case("plugins-page", "GET", lambda s: "/viewer/plugins", row(401, 200, 200, 403, 403, 403, 403)),
    # Downloads
    Case("film-owned", "GET", lambda s: f"/api/studies/{_owned(s)}/film.png", row(401, 200, 200, 200, 403, 403, 403)),
    Case("film-other", "GET", lambda s: f"/api/studies/{_other(s)}/film.pdf", row(401, 200, 200, 404, 403, 404, 403)),
    Case("zip-owned", "GET", lambda s: f"/api/studies/{_owned(s)}/archive.zip", row(401, 200, 200, 200, 403, 403, 403)),
    Case("zip-other", "GET", lambda s: f"/api/studies/{_other(s)}/archive.zip", row(401, 200, 200, 404, 403, 404, 403)),
    # Integration (issue 17): admins only
    Case("changefeed", "GET", lambda s: "/api/changefeed?since=0", row(401, 200, 403, 403, 403, 403, 403)),
    Case("changefeed-latest", "GET", lambda s: "/api/changefeed/latest", row(401, 200, 403, 403, 403, 403, 403)),
    Case("webhooks", "GET", lambda s: "/api/webhooks", row(401, 200, 403, 403, 403, 403, 403)),
    Case("webhook-create", "POST", lambda s: "/api/webhooks", row(401, 201, 403, 403, 403, 403, 403),
         lambda _s, _k: {"json": {"url": "http://127.0.0.1:9/hook"}}),
    Case("webhook-deliveries", "GET", lambda s: "/api/webhooks/999/deliveries", row(401, 404, 403, 403, 403, 403, 403)),
    Case("webhook-delete", "DELETE", lambda s: "/api/webhooks/999", row(401, 404, 403, 403, 403, 403, 403)),
    Case("webhook-redeliver", "POST", lambda s: "/api/webhooks/999/deliveries/1/redeliver",
         row(401, 404, 403, 403, 403, 403, 403)),
    # Algorithm packages (issue 15): vendors upload (a bad file is a 400 once admitted), admins admit
    Case("packages", "GET", lambda s: "/api/plugins/packages", row(401, 200, 403, 403, 200, 403, 403)),
    Case("package-upload", "POST", lambda s: "/api/plugins/packages?filename=x.zip",
         row(401, 400, 403, 403, 400, 403, 403),
         lambda _s, _k: {"content": b"not a package"}),
    Case("package-admit", "POST", lambda s: "/api/plugins/packages/nope/1.0/admit",
         row(401, 404, 403, 403, 403, 403, 403)),
    Case("routing", "GET", lambda s: "/api/routing", row(401, 200, 403, 403, 403, 403, 403)),
    Case("routing-forwards", "GET", lambda s: "/api/routing/forwards", row(401, 200, 403, 403, 403, 403, 403)),
    Case("routing-resend", "POST", lambda s: "/api/routing/forwards/999/resend",
         row(401, 404, 403, 403, 403, 403, 403)),
    Case("routing-resend-dead", "POST", lambda s: "/api/routing/destinations/nowhere/resend",
         row(401, 404, 403, 403, 403, 403, 403)),
    Case("corrections", "GET", lambda s: "/api/corrections", row(401, 200, 403, 403, 403, 403, 403)),
    Case("correction-create", "POST", lambda s: "/api/corrections", row(401, 201, 403, 403, 403, 403, 403),
         _correction_body),
    Case("correction-read", "GET", lambda s: "/api/corrections/999", row(401, 404, 403, 403, 403, 403, 403)),
    Case("correction-revert", "POST", lambda s: "/api/corrections/999/revert",
         row(401, 404, 403, 403, 403, 403, 403)),
    Case("rejections", "GET", lambda s: "/api/rejections", row(401, 200, 403, 403, 403, 403, 403)),
    Case("worklist-list", "GET", lambda s: "/api/worklist", row(401, 200, 403, 403, 403, 403, 403)),
    Case("worklist-schedule", "POST", lambda s: "/api/worklist", row(401, 201, 403, 403, 403, 403, 403),
         lambda _s, k: {"json": {"accession_number": f"MX{KINDS.index(k)}", "patient_id": "P1", "modality": "CT"}}),
    Case("worklist-entry", "GET", lambda s: "/api/worklist/NOPE", row(401, 404, 403, 403, 403, 403, 403)),
    Case("worklist-cancel", "DELETE", lambda s: "/api/worklist/NOPE", row(401, 404, 403, 403, 403, 403, 403)),
    # Edge workers (issue 15): their tokens only (see test_edge_worker_reaches_only_the_edge_routes)
    *[Case(f"edge-{action}", "POST", lambda s, a=action: f"/api/edge/jobs/{a if a == 'lease' else '1/' + a}",
           row(401, 403, 403, 403, 403, 403, 403), lambda _s, _k, b=body: {"json": b})
      for action, body in EDGE_BODIES.items()],
    Case("edge-package", "GET", lambda s: f"/api/edge/packages/{NO_PACKAGE}", row(401, 403, 403, 403, 403, 403, 403)),
    # Retention (issue 17): the plan and legal holds, admins only
    Case("retention-plan", "GET", lambda s: "/api/retention/plan", row(401, 200, 403, 403, 403, 403, 403)),
    Case("retention-holds", "GET", lambda s: "/api/retention/holds", row(401, 200, 403, 403, 403, 403, 403)),
    Case("hold-set", "PUT", lambda s: f"/api/studies/{_other(s)}/hold", row(401, 200, 403, 403, 403, 403, 403),
         lambda _s, _k: {"json": {"reason": "matrix"}}),
    Case("hold-clear", "DELETE", lambda s: "/api/studies/1.2.826.0.1.999/hold",
         row(401, 404, 403, 403, 403, 403, 403)),
    # Operations
    Case("metrics", "GET", lambda s: "/metrics", row(401, 200, 403, 403, 403, 403, 403)),
    Case("openapi", "GET", lambda s: "/openapi.json", row(401, 200, 200, 200, 200, 403, 403)),
]


@pytest.mark.parametrize(("case", "kind"), list(itertools.product(CASES, KINDS)),
                         ids=[f"{c.name}-{k}" for c, k in itertools.product(CASES, KINDS)])
def test_access(site: Site, case: Case, kind: str) -> None:
    original = site.client(kind)
    client = site.new_client(headers=dict(original.headers), cookies=dict(original.cookies))  # no state leaks
    kwargs: dict[str, object] = case.body(site, kind) if case.body else {}
    headers = dict(kwargs.pop("headers", {}))  # type: ignore[call-overload]
    headers.update(site.headers(kind))
    response = client.request(case.method, case.path(site), headers=headers, follow_redirects=False,
                              **kwargs)  # type: ignore[arg-type]
    client.close()
    assert response.status_code == case.expect[kind], f"{case.method} {case.name} as {kind}: {response.text[:200]}"


@pytest.fixture(scope="module")
def edge_token(site: Site) -> str:
    return add_edge_worker(site.archive.engine, "matrix-edge", created_by="admin")[1]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_edge_worker_reaches_only_the_edge_routes(site: Site, edge_token: str, case: Case) -> None:
    """An edge worker's token: its own routes, and a 403 wherever a signed-in caller is needed."""
    client = site.new_client(headers={"Authorization": f"Bearer {edge_token}"})
    kwargs: dict[str, object] = case.body(site, "anonymous") if case.body else {}
    response = client.request(case.method, case.path(site), follow_redirects=False, **kwargs)  # type: ignore[arg-type]
    client.close()
    if case.name in EDGE_OWN:
        assert response.status_code == EDGE_OWN[case.name], response.text[:200]
    elif case.expect["anonymous"] == 401:
        assert response.status_code == 403, f"{case.method} {case.name} as an edge worker: {response.text[:200]}"


def test_lists_hold_only_what_the_caller_may_see(site: Site) -> None:
    def studies(kind: str) -> set[str]:
        response = site.client(kind).get("/dicomweb/studies", params={"limit": "1000"})
        return {item["0020000D"]["Value"][0] for item in response.json()}

    everything = studies("admin")
    assert {site.owned_uid, site.other_uid} <= everything
    assert studies("physician") == everything
    assert studies("patient") == {site.owned_uid}
    assert studies("vendor") == set()
    assert studies("clinician") == {site.owned_uid}
