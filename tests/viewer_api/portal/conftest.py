"""Fixtures for accounts, share links, the viewer pages and the audit trail over HTTP.

``site`` is one archive (SQLite + filesystem) with an account of each role, studies of several
patients (one owned by the patient account, one whose PatientName holds markup) and share links,
plus a client for each kind of caller, each authenticated the way that caller really is: the admin
and the patient by session cookie (+ CSRF header), the physician by an OAuth2 bearer token, the
vendor by an API key, a visitor by opening a share link, and a clinician elsewhere by the DICOMweb
bearer token of a clinician share.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from pacs.accounts.api_keys import create_api_key
from pacs.accounts.patients import link_patient
from pacs.accounts.shares import ShareInfo, create_share
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.settings import Settings
from tests.factories import PATIENTS, PatientSpec, make_ct_study, to_bytes
from tests.net import free_port
from viewer_api.app import create_app

PASSWORD = "correct horse battery"
XSS_NAME = "<script>alert(1)</script>^Evil"
XSS_PATIENT = PatientSpec(XSS_NAME, "CF-XSS", "19700101", "O")
OWNER = PATIENTS[1]  # has an IssuerOfPatientID: links must match it
OTHER = PATIENTS[0]
HOSPITAL = "St. Example Hospital"  # CLOUDFILM_INSTITUTION_NAME of the live site
KINDS = ("anonymous", "admin", "physician", "patient", "vendor", "share", "clinician")


def portal_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "http_port": 0, "dicom_port": 0,
                              "secret_key": "test-secret-key-0123456789"}
    values.update(overrides)
    return Settings(**values)


def store(archive: Archive, datasets: list[Dataset]) -> None:
    for ds in datasets:
        result = archive.ingest.store_bytes(to_bytes(ds))
        assert result.ok, result.reason


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]*)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the login form; the CSRF token of the new session."""
    response = client.post("/login", data={"username": username, "password": password, "next": "/viewer/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return session_csrf(client)


def session_csrf(client: TestClient) -> str:
    """The CSRF token pages of this session carry (the landing page after ``/login``)."""
    return csrf_of(client.get("/login?next=/viewer/", follow_redirects=True).text)


def bearer(client: TestClient, username: str, password: str = PASSWORD) -> str:
    response = client.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@dataclass
class Site:
    archive: Archive
    app: FastAPI
    owned: list[Dataset]  # the patient account's study
    other: list[Dataset]  # another patient's study
    xss: list[Dataset]
    share: ShareInfo  # a link to the owned study, no PIN, no download
    clinician: ShareInfo  # a clinician share of the owned study: its DICOMweb token
    clients: dict[str, TestClient] = field(default_factory=dict)
    csrf: dict[str, str] = field(default_factory=dict)

    @property
    def owned_uid(self) -> str:
        return str(self.owned[0].StudyInstanceUID)

    @property
    def other_uid(self) -> str:
        return str(self.other[0].StudyInstanceUID)

    def client(self, kind: str) -> TestClient:
        return self.clients[kind]

    def headers(self, kind: str) -> dict[str, str]:
        """What a browser page of this caller sends with a change (the CSRF token)."""
        token = self.csrf.get(kind)
        return {"X-CSRF-Token": token} if token else {}

    def new_client(self, **kwargs: Any) -> TestClient:
        return TestClient(self.app, **kwargs)


def job_client(site: Site, job_id: int) -> TestClient:
    """A vendor-hosted plugin working on job ``job_id`` of the owned study, holding its job token."""
    from ai_plugins.runner.tokens import issue_job_token

    token, _ = issue_job_token(site.app.state.authenticator.key, study_uid=site.owned_uid, job_id=job_id,
                               plugin="acme@1.0", lifetime=timedelta(minutes=5))
    return site.new_client(headers={"Authorization": f"Bearer {token}"})


def frame_url(ds: Dataset, frame: int = 1) -> str:
    return (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/frames/{frame}/rendered")


def build_site(tmp_path: Path, **overrides: Any) -> Iterator[Site]:
    with Archive.open(portal_settings(tmp_path, **overrides)) as archive:
        engine = archive.engine
        owned = make_ct_study(OWNER, n_slices=4, rows=32, cols=32, seed=501)
        other = make_ct_study(OTHER, n_slices=4, rows=32, cols=32, seed=502)
        xss = make_ct_study(XSS_PATIENT, n_slices=2, rows=32, cols=32, seed=503,
                            study_description="</script><img src=x onerror=alert(2)>")
        for datasets in (owned, other, xss):
            store(archive, datasets)
        admin = create_user(engine, "admin", PASSWORD, "admin")
        create_user(engine, "doc", PASSWORD, "physician")
        create_user(engine, "pat", PASSWORD, "patient")
        create_user(engine, "pat2", PASSWORD, "patient")
        create_user(engine, "acme", PASSWORD, "vendor")
        link_patient(engine, "pat", OWNER.patient_id, OWNER.issuer or "")
        app = create_app(archive)
        key = app.state.authenticator.key
        share = create_share(engine, key, str(owned[0].StudyInstanceUID), created_by=admin.id, expires_in_days=7,
                             max_days=365)
        clinician = create_share(engine, key, str(owned[0].StudyInstanceUID), created_by=admin.id,
                                 expires_in_days=7, max_days=365, clinician=True, recipient="Dr. Elsewhere")
        site = Site(archive, app, owned, other, xss, share, clinician)
        site.clients["anonymous"] = TestClient(app)
        for kind, user in (("admin", "admin"), ("patient", "pat")):
            c = TestClient(app)
            site.csrf[kind] = login(c, user)
            site.clients[kind] = c
        doc = TestClient(app)
        doc.headers["Authorization"] = f"Bearer {bearer(doc, 'doc')}"
        site.clients["physician"] = doc
        vendor = TestClient(app)
        vendor.headers["Authorization"] = f"Bearer {create_api_key(engine, 'acme', 'tests')[1]}"
        site.clients["vendor"] = vendor
        visitor = TestClient(app)
        page = visitor.get(f"/s/{share.token}")
        assert page.status_code == 200, page.text
        site.clients["share"] = visitor
        site.csrf["share"] = csrf_of(page.text)
        site.clients["clinician"] = TestClient(app, headers={"Authorization": f"Bearer {clinician.dicomweb_token}"})
        try:
            yield site
        finally:
            for c in site.clients.values():
                c.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One populated archive shared by a module's tests (tests must not depend on each other's changes)."""
    yield from build_site(Path(tmp_path_factory.mktemp("portal")))


@pytest.fixture
def fresh_site(tmp_path: Path) -> Iterator[Site]:
    """A populated archive of one's own, for tests that change state (lockouts, revocations)."""
    yield from build_site(tmp_path, login_max_failures=3)


# --- a real server on loopback (browser tests) ---------------------------------------------------



@dataclass
class Server:
    url: str
    site: Site


@pytest.fixture(scope="module")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``site`` behind uvicorn on a free loopback port."""
    for built in build_site(Path(tmp_path_factory.mktemp("live")), institution_name=HOSPITAL):
        yield from serve_site(built)


def serve_site(built: Site) -> Iterator[Server]:
    """``built`` behind uvicorn on a free loopback port, until the generator is closed."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(built.app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, name=f"portal-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", built)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def http(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, follow_redirects=False)

