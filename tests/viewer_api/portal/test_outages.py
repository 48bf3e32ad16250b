"""Outages answer "retry later": every route, authentication included, says 503 with ``Retry-After``
and one sentence when the index database or the object store cannot be used, never 500."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, text

from pacs.storage.s3 import S3Store
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.pg import PG_ADMIN_URL, temporary_database
from tests.s3server import S3Server
from tests.viewer_api.portal.conftest import PASSWORD, Site, build_site, frame_url, job_client
from viewer_api.auth.routing import AppRoute, app_routes

SENTENCE = re.compile(r"^[^\n]+\.\n$")


@pytest.fixture
def pg_site(tmp_path: Path, pg_template: str) -> Iterator[Site]:
    with temporary_database(template=pg_template) as url:
        yield from build_site(tmp_path, database_url=url)


@contextmanager
def database_refusing_connections(database_url: str) -> Iterator[None]:
    """The archive's PostgreSQL database stops accepting connections and loses those it had."""
    name = database_url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        admin.dispose()


def assert_retry_later(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text[:200]}"
    assert response.headers["retry-after"] == "30", what
    assert response.request.method == "HEAD" or SENTENCE.match(response.text), f"{what}: {response.text!r}"


def _concrete(route: AppRoute, site: Site) -> str:
    ds = site.owned[0]
    values = {"study": site.owned_uid, "study_uid": site.owned_uid, "series": str(ds.SeriesInstanceUID),
              "instance": str(ds.SOPInstanceUID), "frames": "1", "tag": "7FE00010", "rest": "x",
              "token": site.share.token or "", "share_id": str(site.share.id), "kind": "png", "key_id": "1",
              "name": "test-echo", "version": "1.0", "ref": "1", "evaluation_id": "1", "job_id": "1", "path": "x",
              "webhook_id": "1", "delivery_id": "1", "forward_id": "1", "sha256": "0" * 64}

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), "1")  # ids of anything else (reports, worklist, notifications …)

    return re.sub(r"\{(\w+)(?::\w+)?\}", fill, route.path)


def _stow_body(ds: Dataset) -> bytes:
    return b"--b\r\nContent-Type: application/dicom\r\n\r\n" + to_bytes(ds) + b"\r\n--b--\r\n"


@pytest.mark.postgres
def test_every_route_answers_retry_later_while_the_database_is_down(pg_site: Site) -> None:
    site = pg_site
    callers = {kind: site.client(kind) for kind in ("admin", "physician", "patient", "vendor", "share")}
    callers["job"] = job_client(site, 9)
    for client in callers.values():  # every credential works while the database is up
        assert client.get(f"/dicomweb/studies/{site.owned_uid}/series").status_code in (200, 403)
    routes = [r for r in app_routes(site.app) if r.rule is not None and r.rule.name != "open"]
    assert len(routes) > 150
    stow_body = _stow_body(make_ct_study(PATIENTS[2], n_slices=1, rows=8, cols=8, seed=31)[0])
    with database_refusing_connections(str(site.archive.engine.url.render_as_string(hide_password=False))):
        for kind, client in callers.items():
            for route in routes:
                for method in sorted(route.methods):
                    path = _concrete(route, site)
                    response = client.request(method, path, headers=site.headers(kind), follow_redirects=False)
                    assert_retry_later(response, f"{method} {path} as {kind}")
            stow = client.post(f"/dicomweb/studies/{site.owned_uid}", content=stow_body,
                               headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
            assert_retry_later(stow, f"STOW-RS as {kind}")
        anonymous = site.new_client()
        assert_retry_later(anonymous.post("/api/auth/token", data={"username": "doc", "password": PASSWORD}),
                           "OAuth2 token")
        assert_retry_later(anonymous.post("/login", data={"username": "doc", "password": PASSWORD}), "sign-in form")
        assert_retry_later(anonymous.get(f"/s/{site.share.token}"), "share link")
        assert_retry_later(anonymous.post(f"/s/{site.share.token}", data={"pin": "1234"}), "share link PIN")
        assert anonymous.get("/login").status_code == 200  # nothing to look up yet
        assert anonymous.get("/dicomweb/studies").status_code == 401  # refusing needs no database
        assert anonymous.get("/healthz").status_code == 200  # the process is alive
        assert anonymous.get("/static/app.css").status_code == 200
        assert anonymous.get("/readyz").status_code == 503
    assert callers["physician"].get("/dicomweb/studies").status_code == 200  # back without a restart


def _break_filesystem(site: Site) -> None:
    """The volume under the object store is gone (an unmounted or failed disk)."""
    root = site.archive.settings.data_dir / "objects"
    shutil.move(root, root.with_name("objects.lost"))
    root.write_bytes(b"")


def deny_objects(store: S3Store, actions: tuple[str, ...]) -> None:
    """A bucket policy refusing ``actions`` on every object (a locked or misconfigured bucket)."""
    statement = {"Effect": "Deny", "Principal": "*", "Action": list(actions),
                 "Resource": [f"arn:aws:s3:::{store.bucket}/*"]}
    store._client.set_bucket_policy(store.bucket, json.dumps({"Version": "2012-10-17", "Statement": [statement]}))


def _break_bucket(site: Site) -> None:
    """The bucket refuses every object read and write."""
    store = site.archive.store
    assert isinstance(store, S3Store)
    deny_objects(store, ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"))


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.s3)])
def failing_store_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    overrides: dict[str, object] = {}
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        overrides = {"storage_url": f"s3://outage-{uuid.uuid4().hex[:16]}", "s3_endpoint": server.endpoint,
                     "s3_access_key": server.access_key, "s3_secret_key": server.secret_key}
    for site in build_site(tmp_path, **overrides):
        (_break_bucket if request.param == "s3" else _break_filesystem)(site)
        yield site


def test_a_failing_object_store_answers_retry_later(failing_store_site: Site) -> None:
    site = failing_store_site
    doc = site.client("physician")
    ds = site.owned[0]
    instance = f"/dicomweb/studies/{site.owned_uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    new = make_ct_study(PATIENTS[2], n_slices=1, rows=8, cols=8, seed=32)[0]
    stow = doc.post("/dicomweb/studies", content=_stow_body(new),
                    headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert stow.status_code == 503 and stow.headers["retry-after"] == "30"
    for path in (instance, f"{instance}/frames/1", frame_url(ds), f"/dicomweb/studies/{site.owned_uid}/thumbnail",
                 f"{instance}/bulk/7FE00010", f"/api/studies/{site.owned_uid}/archive.zip",
                 f"/api/studies/{site.owned_uid}/film.png"):
        assert_retry_later(doc.get(path), path)
    wado = doc.get("/wado", params={"requestType": "WADO", "studyUID": site.owned_uid,
                                    "seriesUID": str(ds.SeriesInstanceUID), "objectUID": str(ds.SOPInstanceUID)})
    assert_retry_later(wado, "WADO-URI")
    assert doc.get(f"/dicomweb/studies/{site.owned_uid}/metadata").status_code == 200  # the index alone
    assert site.new_client().get("/readyz").status_code == 503
