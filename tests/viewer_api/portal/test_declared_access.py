"""Access declared on every route: the app refuses undeclared routes, and a rule admits a caller
before the method, the body or the parameters are looked at, with no database work of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from pacs.accounts.audit import AuditQuery
from pacs.accounts.audit import query as audit_query
from pacs.archive import Archive
from tests.viewer_api.portal.conftest import Site, frame_url, job_client
from viewer_api.app import create_app
from viewer_api.auth.access import ADMIN, OPEN
from viewer_api.auth.routing import DeclaredRoute, UndeclaredAccess, app_routes, check_declared


async def _endpoint() -> dict[str, str]:
    return {}


def test_every_route_of_the_app_declares_one_rule(site: Site) -> None:
    routes = list(app_routes(site.app))
    assert len(routes) > 150
    assert [str(r) for r in routes if r.rule is None] == []
    rules = {str(r): r.rule.name for r in routes if r.rule is not None}
    assert rules["GET /dicomweb/studies"] == "searchers+search"
    assert rules["POST /dicomweb/studies/{study}"] == "staff-or-job+stow"
    assert rules["HEAD /dicomweb/studies/{study}/metadata"] == "study-readers+view"
    assert rules["DELETE /dicomweb/studies/{study}/metadata"] == "admin+delete"  # the 405 guard
    assert rules["GET /openapi.json"] == rules["GET /docs"] == "accounts"
    assert rules["/static"] == rules["GET /healthz"] == "open"
    assert rules["POST /api/plugins/packages"] == rules["GET /api/plugins/packages"] == "vendor-or-admin"
    assert rules["POST /api/plugins/packages/{name}/{version}/admit"] == "admin"


def test_a_route_without_a_rule_cannot_be_built() -> None:
    router = APIRouter(route_class=DeclaredRoute)
    with pytest.raises(UndeclaredAccess, match=r"GET /x must declare exactly one access rule \(found: none\)"):
        router.add_api_route("/x", _endpoint)
    with pytest.raises(UndeclaredAccess, match="found: admin, open"):
        router.add_api_route("/y", _endpoint, dependencies=[Depends(OPEN), Depends(ADMIN)])
    router.add_api_route("/z", _endpoint, dependencies=[Depends(OPEN)])
    assert router.routes[0].rule is OPEN  # type: ignore[attr-defined]


@pytest.mark.parametrize("add", ["app-route", "plain-router", "mount"])
def test_the_app_refuses_to_start_with_an_undeclared_route(local_archive: Archive, add: str) -> None:
    app = create_app(local_archive)
    check_declared(app)
    if add == "app-route":
        app.add_api_route("/api/new", _endpoint)
        expected = "GET /api/new"
    elif add == "plain-router":
        plain = APIRouter(prefix="/api/extra")
        plain.add_api_route("/things", _endpoint, methods=["POST"])
        app.include_router(plain)
        expected = "POST /api/extra/things"
    else:
        app.mount("/files", StaticFiles(directory=str(local_archive.settings.data_dir)))
        expected = "/files"
    with pytest.raises(UndeclaredAccess, match=f"declare no access rule: {expected}$"):
        check_declared(app)


def test_the_fallback_for_unknown_paths_is_declared(local_archive: Archive) -> None:
    app = create_app(local_archive)
    app.router.default = APIRoute("/", _endpoint)  # type: ignore[assignment]
    with pytest.raises(UndeclaredAccess, match="paths that match no route"):
        check_declared(app)


def test_refusal_comes_before_the_body_the_method_and_the_parameters(site: Site) -> None:
    anonymous = site.new_client()
    bad_json = anonymous.post(f"/api/studies/{site.owned_uid}/shares", content=b"{not json",
                              headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 401
    assert anonymous.put("/api/auth/me").status_code == 401  # not 405
    assert anonymous.get("/api/jobs", params={"limit": "many"}).status_code == 401  # not 400
    patient = site.client("patient")
    assert patient.delete(f"/dicomweb/studies/{site.owned_uid}/metadata", headers=site.headers("patient")) \
        .status_code == 403
    admin = site.client("admin")
    guarded = admin.delete(f"/dicomweb/studies/{site.owned_uid}/metadata", headers=site.headers("admin"))
    assert guarded.status_code == 405 and guarded.headers["allow"] == "GET, HEAD"
    assert site.client("physician").put("/dicomweb/studies").status_code == 405
    assert site.client("vendor").put("/dicomweb/studies").status_code == 403


def test_unknown_paths_answer_404_to_accounts_only(site: Site) -> None:
    assert site.client("anonymous").get("/nowhere").status_code == 401
    page = site.new_client().get("/nowhere", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'name="password"' in page.text
    assert site.client("admin").get("/nowhere").status_code == 404
    assert site.client("vendor").get("/dicomweb/nothing/here").status_code == 404
    assert site.client("share").get("/nowhere").status_code == 403
    share_in_study = site.client("share").get(f"/dicomweb/studies/{site.owned_uid}/nothing")
    assert share_in_study.status_code == 404  # its own study's DICOMweb tree, as for the real routes
    assert site.new_client().get("/favicon.ico", follow_redirects=True).headers["content-type"] == "image/svg+xml"


def test_job_tokens_reach_their_study_through_head_and_guards_too(site: Site) -> None:
    job = job_client(site, 8)
    assert job.head(f"/dicomweb/studies/{site.owned_uid}/metadata").status_code == 200
    assert job.head(f"/dicomweb/studies/{site.other_uid}/metadata").status_code == 403
    assert job.get(frame_url(site.owned[0])).status_code == 200
    assert job.get(f"/dicomweb/studies/{site.owned_uid}/unknown").status_code == 404
    assert job.put(f"/dicomweb/studies/{site.owned_uid}").status_code == 403  # only STOW-RS writes
    refused = job.get("/wado", params={"requestType": "WADO", "studyUID": site.owned_uid})
    assert refused.status_code == 403 and "job token" in refused.text


def test_audit_records_what_the_rule_declares_and_not_head(fresh_site: Site) -> None:
    doc = fresh_site.client("physician")
    ds = fresh_site.owned[1]
    wado = {"requestType": "WADO", "studyUID": fresh_site.owned_uid, "seriesUID": str(ds.SeriesInstanceUID),
            "objectUID": str(ds.SOPInstanceUID)}
    assert doc.head(f"/dicomweb/studies/{fresh_site.owned_uid}").status_code == 200
    assert doc.get("/wado", params=wado | {"contentType": "image/jpeg"}).status_code == 200
    assert doc.get("/wado", params=wado | {"contentType": "application/dicom"}).status_code == 200
    events = audit_query(fresh_site.archive.engine, AuditQuery(username="doc", study_uid=fresh_site.owned_uid))
    assert [(e.action, e.detail) for e in events] == [("download", "WADO-URI application/dicom")]


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_admission_costs_no_database_work_beyond_authentication(site: Site) -> None:
    engine = site.archive.engine
    with _statements(engine) as health:
        assert site.client("physician").get("/healthz").status_code == 200
        assert site.client("admin").get("/static/app.css").status_code == 200
    assert health == []  # open routes do not even read the credentials
    auth = site.app.state.authenticator
    bearer = site.client("physician").headers["Authorization"]
    with _statements(engine) as resolving:
        auth.resolve(bearer, None, None)
    url = frame_url(site.owned[0])
    open_settings = site.archive.settings.model_copy(update={"auth_disabled": True})
    bare_app = TestClient(create_app(Archive(open_settings, engine, site.archive.store, site.archive.ingest)))
    for client in (site.client("physician"), bare_app):  # warm-up: compiled statements, decoded headers
        assert client.get(url).status_code == 200
    with _statements(engine) as signed_in:
        assert site.client("physician").get(url).status_code == 200
    with _statements(engine) as bare:
        assert bare_app.get(url).status_code == 200
    assert len(signed_in) == len(resolving) + len(bare)

