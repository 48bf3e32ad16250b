"""The partition access matrix (issue 17): every route of the built app × accounts of every role in two
partitions (and their share visitors and clinician tokens) never reaches the other partition's data.

Partition A is the default one, B is ``north``. Both hold the same Study/Series/SOP Instance UIDs (the
"twin", under another PatientName in each) and a study of their own (the "solo"). For each route and
caller, a request aimed at data the caller may not see in the partition the request works in (the
other partition's solo study, and, for a partition the caller does not belong to, that partition's twin
and solo) must answer exactly as a request for UIDs and ids that were never stored: same status, and
for a JSON list the same length; no answer ever holds a patient name, a solo UID or a marker string of
a partition other than the one the caller may act in. The routes are read from the app's route table:
a route without a row in ``ROWS`` fails ``test_every_route_has_a_row``, and each row is a test.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pydicom.dataset import Dataset

from ai_plugins.runner.tokens import issue_job_token
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.patients import link_patient
from pacs.accounts.shares import ShareInfo, create_share
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.partitions import PartitionConfig
from pacs.settings import Settings
from tests.conftest import archive_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.viewer_api.conftest import STOW_TYPE, stow_body
from tests.viewer_api.portal.conftest import PASSWORD, bearer, csrf_of
from viewer_api.app import create_app
from viewer_api.auth.routing import app_routes
from viewer_api.dicomweb import PARTITION_PREFIX, PREFIX

A, B = "default", "north"
NAMES = {A: {"twin": "Alphaville^Twin", "solo": "Alphaville^Solo"},
         B: {"twin": "Northmoor^Twin", "solo": "Northmoor^Solo"}}
MARK = {A: "alphamark", B: "northmark"}  # in the things each partition's admin makes (webhooks, orders, holds)
PATIENT = PATIENTS[0]  # the twin's patient: a patient account in each partition is linked to it
#: The callers: (home partition, role or kind). ``admin`` is the default partition's, so global.
CALLERS: dict[str, tuple[str, str]] = {
    "admin": (A, "admin"), "a-doc": (A, "physician"), "a-pat": (A, "patient"), "a-vendor": (A, "vendor"),
    "a-share": (A, "share"), "a-clinician": (A, "clinician"), "a-job": (A, "job"),  # jobs: default partition only
    "n-admin": (B, "admin"), "n-doc": (B, "physician"), "n-pat": (B, "patient"), "n-vendor": (B, "vendor"),
    "n-share": (B, "share"), "n-clinician": (B, "clinician"),
}


@dataclass(frozen=True)
class Target:
    """The UIDs (and a share id) a request is aimed at."""

    study: str
    series: str
    sop: str
    share_id: int
    ids: dict[str, str] = field(default_factory=dict)  # path parameter -> the id of a thing of the partition

    def echoed(self) -> set[str]:
        """What the request itself sends: an answer may repeat it."""
        return {self.study, self.series, self.sop}


ABSENT = Target("1.2.826.0.1.3680043.8.498.1701", "1.2.826.0.1.3680043.8.498.1702",
                "1.2.826.0.1.3680043.8.498.1703", 999_999, {"accession": "NOPE"})


def _settings(tmp: Path, base: Settings | None = None) -> Settings:
    values = base.model_dump() if base is not None else {"data_dir": tmp / "data", "http_port": 0, "dicom_port": 0}
    return Settings(**(values | {"secret_key": SecretStr("test-secret-key-0123456789"),
                                 "partitions": {B: PartitionConfig(ae_titles=["NORTH"])}}))


def _named(datasets: list[Dataset], name: str) -> list[Dataset]:
    out = [copy.deepcopy(ds) for ds in datasets]
    for ds in out:
        ds.PatientName = name
    return out


def _target(ds: Dataset, share: ShareInfo) -> Target:
    return Target(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), share.id)


@dataclass
class Site:
    archive: Archive
    app: FastAPI
    twin: dict[str, Target] = field(default_factory=dict)  # partition -> the twin, with that partition's share
    solo: dict[str, Target] = field(default_factory=dict)
    markers: dict[str, set[str]] = field(default_factory=dict)  # partition -> what no other one may see
    auth: dict[str, dict[str, Any]] = field(default_factory=dict)  # caller -> TestClient kwargs
    csrf: dict[str, str] = field(default_factory=dict)
    clients: dict[str, TestClient] = field(default_factory=dict)

    def client(self, caller: str) -> TestClient:
        """The caller's client, holding only its own credentials (whatever an earlier answer set)."""
        if caller not in self.clients:
            self.clients[caller] = TestClient(self.app, headers=self.auth[caller].get("headers"))
        client = self.clients[caller]
        client.cookies.clear()
        for name, value in self.auth[caller].get("cookies", {}).items():
            client.cookies.set(name, value)
        return client


def _build(settings: Settings) -> Iterator[Site]:
    with Archive.open(settings) as archive:
        north = archive.partitions.by_slug(B)
        assert north is not None
        pid = {A: archive.partitions.default.id, B: north.id}
        where = {A: archive.partitions.default, B: north}
        twin = make_ct_study(PATIENT, n_slices=3, rows=16, cols=16, seed=5101)
        twins = {A: twin, B: twin[:2]}  # A's twin holds one more instance: counts differ, its SOP UID is A's alone
        solo = {A: make_ct_study(PATIENTS[1], n_slices=1, rows=16, cols=16, seed=5102),
                B: make_ct_study(PATIENTS[2], n_slices=1, rows=16, cols=16, seed=5103)}
        for part in (A, B):
            for ds in [*_named(twins[part], NAMES[part]["twin"]), *_named(solo[part], NAMES[part]["solo"])]:
                assert archive.ingest.store_bytes(to_bytes(ds), partition=where[part]).ok
        users = {}
        for caller, (part, role) in CALLERS.items():
            if role not in ("share", "clinician", "job"):
                users[caller] = create_user(archive.engine, caller, PASSWORD, role, partition=pid[part])
        for caller in ("a-pat", "n-pat"):
            link_patient(archive.engine, caller, PATIENT.patient_id, PATIENT.issuer or "")
        app = create_app(archive)
        key = app.state.authenticator.key
        site = Site(archive, app)
        shares: dict[str, dict[str, ShareInfo]] = {}
        for part in (A, B):
            creator = users["admin" if part == A else "n-admin"].id

            def share(ds: Dataset, *, clinician: bool = False, p: str = part, by: int = creator) -> ShareInfo:
                return create_share(archive.engine, key, str(ds.StudyInstanceUID), created_by=by, expires_in_days=7,
                                    max_days=365, clinician=clinician, recipient="Dr. Far", partition=pid[p])
            create_share(archive.engine, key, str(solo[part][0].StudyInstanceUID), created_by=creator,
                         expires_in_days=7, max_days=365, partition=pid[part],
                         notify=[("email", f"{MARK[part]}@patients.example")])  # a message owed: the log lists it
            shares[part] = {"twin": share(twin[0]), "solo": share(solo[part][0]),
                            "clinician": share(twin[0], clinician=True)}
            site.twin[part] = _target(twin[0], shares[part]["twin"])
            site.solo[part] = _target(solo[part][0], shares[part]["solo"])
            site.solo[part].ids.update(token=str(shares[part]["solo"].token), birth_date=solo[part][0].PatientBirthDate)
            site.markers[part] = {*NAMES[part].values(), MARK[part], site.solo[part].study, site.solo[part].series,
                                  site.solo[part].sop} | ({str(twin[2].SOPInstanceUID)} if part == A else set())
        for caller, (part, role) in CALLERS.items():
            if role == "share":
                visitor = TestClient(app)
                page = visitor.get(f"/s/{shares[part]['twin'].token}")
                assert page.status_code == 200, page.text
                site.csrf[caller] = csrf_of(page.text)
                site.auth[caller] = {"cookies": dict(visitor.cookies)}
                visitor.close()
            elif role == "job":  # a vendor-hosted plugin's job on the twin: reads it, stores results into it
                token, _ = issue_job_token(key, study_uid=site.twin[part].study, job_id=1, plugin="acme@1.0",
                                           lifetime=timedelta(hours=1))
                site.auth[caller] = {"headers": {"Authorization": f"Bearer {token}"}}
            elif role == "clinician":
                site.auth[caller] = {"headers": {"Authorization": f"Bearer {shares[part]['clinician'].dicomweb_token}"}}
            elif role == "vendor":
                api_key = create_api_key(archive.engine, caller)[1]
                site.auth[caller] = {"headers": {"Authorization": f"Bearer {api_key}"}}
            else:
                with TestClient(app) as c:
                    site.auth[caller] = {"headers": {"Authorization": f"Bearer {bearer(c, caller)}"}}
        _seed(site)
        try:
            yield site
        finally:
            for client in site.clients.values():
                client.close()


def _seed(site: Site) -> None:
    """What each partition's admin makes through the API (with its marker), and reads that fill the audit
    trail; features still on the default partition alone may refuse the other partition's (not asserted).
    Corrections of another partition's study are left to ``test_a_correction_stays_in_its_partition``
    (on main they write their change-feed events into the default partition)."""
    for part, admin in ((A, "admin"), (B, "n-admin")):
        c, mark, solo = site.client(admin), MARK[part], site.solo[part]
        ids = solo.ids
        ids["accession"] = mark.upper()
        made = c.post("/api/webhooks", json={"url": f"http://127.0.0.1:9/{mark}", "description": mark})
        if made.status_code == 201:
            ids["webhook_id"] = str(made.json()["id"])
        c.post("/api/worklist", json={"accession_number": mark.upper(), "patient_id": f"{mark}-p",
                                      "patient_name": f"{mark.title()}^Order", "modality": "CT"})
        c.put(f"/api/studies/{solo.study}/hold", json={"reason": mark})
        if part == A:
            made = c.post("/api/corrections", json={"kind": "update-study", "study_uid": solo.study,
                                                    "study_description": f"{mark} corrected"})
            assert made.status_code == 201, made.text
            ids["correction_id"] = str(made.json()["id"])
        made = c.post(f"/api/studies/{solo.study}/reports", json={"sections": {"findings": f"{mark} report"}})
        if made.status_code == 201:
            ids["report_id"] = str(made.json()["id"])
        base = PREFIX if part == A else PARTITION_PREFIX.replace("{partition}", B)
        assert c.get(f"{base}/studies/{solo.study}/metadata").status_code == 200  # audited: a view


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from _build(_settings(Path(tmp_path_factory.mktemp("partition-matrix"))))


@pytest.fixture(scope="module")
def pg_site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The same site on PostgreSQL + S3."""
    tmp = Path(tmp_path_factory.mktemp("partition-matrix-pg"))
    for base in archive_settings("postgres-s3", tmp, request):
        yield from _build(_settings(tmp, base))


# --- the rows: what to send to each route --------------------------------------------------------------

Params = Callable[[Target], dict[str, str]]
Body = Callable[[Target, str], dict[str, Any]]


@dataclass(frozen=True)
class Row:
    params: Params | None = None
    body: Body | None = None
    writes: bool = False  # stores what it is sent: only callers who may not act in the partition send it
    link: bool = False  # ``{token}`` is the target's share link (else no link: opening a link is open to all)
    xfail: str = ""


def _q(name: str) -> Params:
    return lambda t: {name: t.study, "limit": "1000"}


def _json(value: Callable[[Target], Any]) -> Body:
    return lambda t, _caller: {"json": value(t)}


def _stow(t: Target, _caller: str) -> dict[str, Any]:
    ds = make_ct_study(PATIENTS[3], n_slices=1, rows=16, cols=16, seed=5200)[0]
    ds.StudyInstanceUID = t.study
    return {"content": stow_body([ds]), "headers": {"Content-Type": STOW_TYPE}}


WADO = Row(params=lambda t: {"requestType": "WADO", "studyUID": t.study, "seriesUID": t.series, "objectUID": t.sop,
                             "contentType": "application/dicom"})
READ = Row()

_DW_READS = [
    "/studies/{study}/series", "/studies/{study}/instances", "/studies/{study}/series/{series}/instances",
    "/studies/{study}/metadata", "/studies/{study}/series/{series}/metadata",
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    "/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}",
    *[p + suffix for p in ("/studies/{study}", "/studies/{study}/series/{series}",
                           "/studies/{study}/series/{series}/instances/{instance}",
                           "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
      for suffix in ("/rendered", "/thumbnail")],
    "/studies/{study}", "/studies/{study}/series/{series}", "/studies/{study}/series/{series}/instances/{instance}",
]
_DW_SEARCHES = {"/studies": _q("StudyInstanceUID"), "/series": _q("StudyInstanceUID"),
                "/instances": _q("StudyInstanceUID")}
# Every DICOMweb resource answers the methods it does not serve with 405 (after the rule admitted the caller).
_DW_GUARDED = [*_DW_SEARCHES, *_DW_READS]

ROWS: dict[str, Row] = {
    **{f"{m} {PREFIX}{p}": READ for p in _DW_READS for m in ("GET", "HEAD")},
    **{f"{m} {PREFIX}{p}": Row(params=params) for p, params in _DW_SEARCHES.items() for m in ("GET", "HEAD")},
    f"POST {PREFIX}/studies": Row(body=_stow, writes=True),
    f"POST {PREFIX}/studies/{{study}}": Row(body=_stow, writes=True),
    **{f"DELETE {PREFIX}{p}": READ for p in ("/studies/{study}", "/studies/{study}/series/{series}",
                                               "/studies/{study}/series/{series}/instances/{instance}")},
    **{f"{m} {PREFIX}{p}": READ for p in _DW_GUARDED for m in ("POST", "PUT", "PATCH", "DELETE")
       if f"{m} {p}" not in ("POST /studies", "POST /studies/{study}", "DELETE /studies/{study}",
                             "DELETE /studies/{study}/series/{series}",
                             "DELETE /studies/{study}/series/{series}/instances/{instance}")},
    **{f"{m} {PREFIX}/{{rest:path}}": READ for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")},
    **{f"{m} {PREFIX}/studies/{{study}}/{{rest:path}}": READ for m in ("GET", "HEAD")},
    "GET /wado": WADO, "HEAD /wado": WADO,
    # pages, sign-in, share links
    **{f"GET {p}": READ for p in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                                  "/ohif", "/ohif/app-config.js", "/ohif/cloudfilm-inline.js", "/ohif/{path:path}",
                                  "/login", "/", "/viewer/", "/viewer/worklist", "/viewer/home",
                                  "/viewer/studies/{study_uid}", "/robots.txt", "/favicon.ico", "/static",
                                  "/codecs/{path:path}",
                                  "/s/{token}")},
    "POST /login": Row(body=lambda _t, _c: {"data": {"username": "nobody", "password": "wrong"}}),
    "POST /logout": READ,
    "POST /api/auth/token": Row(body=lambda _t, _c: {"data": {"username": "nobody", "password": "wrong"}}),
    "POST /s/{token}": Row(body=lambda _t, _c: {"data": {"pin": "0000"}}),
    "POST /s/{token}/claim": Row(body=lambda t, _c: {"data": {"birth_date": t.ids.get("birth_date", "19700101")}},
                                 link=True),
    "GET /api/auth/me": READ, "GET /api/auth/keys": READ, "POST /api/auth/keys": Row(body=_json(lambda t: {})),
    "DELETE /api/auth/keys/{key_id}": READ,
    "PUT /api/auth/me/email": Row(body=lambda _t, caller: {"json": {"email": f"{caller}@matrix.example"}}),
    # shares, downloads, audit, the change feed
    "POST /api/studies/{study_uid}/shares": Row(body=_json(lambda t: {"expires_in_days": 2})),
    "GET /api/studies/{study_uid}/shares": READ,
    "DELETE /api/studies/{study_uid}/shares/{share_id}": READ,
    "GET /api/studies/{study_uid}/shares/{share_id}/qr.{kind}": READ,
    "GET /api/studies/{study_uid}/film.{kind}": READ,
    "GET /api/studies/{study_uid}/archive.zip": READ,
    "GET /api/audit": Row(params=_q("study")),
    "GET /api/changefeed": Row(params=lambda t: {"since": "0", "limit": "1000", "includeMetadata": "true"}),
    "GET /api/changefeed/latest": READ,
    "GET /api/notifications": READ, "POST /api/notifications/{delivery_id}/resend": READ,
    "GET /api/rejections": READ,
    "GET /api/studies/{study_uid}/findings": READ,
    "POST /api/studies/{study_uid}/findings/reviews": Row(body=_json(
        lambda t: {"report_uid": t.sop, "finding_key": "Classification 1", "decision": "accepted"})),
    # AI: plugins, packages, jobs, benchmarks, edge workers (branch i17-part-jobs)
    "POST /api/plugins/packages": Row(params=lambda t: {"filename": "x.zip"}, body=lambda _t, _c: {"content": b"no"}),
    "GET /api/plugins/packages": READ, "POST /api/plugins/packages/{name}/{version}/admit": READ,
    "GET /api/plugins": READ,
    "POST /api/plugins": Row(body=_json(lambda t: {"name": "matrix-plugin", "version": "1", "url": "http://127.0.0.1:9/"})),
    "PATCH /api/plugins/{name}/{version}": Row(body=_json(lambda t: {"enabled": False})),
    "POST /api/studies/{study_uid}/plugins/{name}/run": READ,
    "GET /api/plugins/{name}/{version}/reviews": READ, "GET /api/plugins/watch": READ,
    "GET /api/plugins/{name}/{version}/watch": READ, "GET /viewer/plugins": READ,
    "GET /api/jobs": READ, "GET /api/jobs/{job_id}": READ,
    **{f"POST /api/edge/jobs/{p}": READ for p in ("lease", "{job_id}/heartbeat", "{job_id}/complete",
                                                  "{job_id}/fail", "{job_id}/release")},
    "GET /api/edge/packages/{sha256}": READ,
    **{f"GET /api/benchmarks{p}": READ for p in (
        "", "/evaluations/{evaluation_id}", "/evaluations/{evaluation_id}/report.json",
        "/evaluations/{evaluation_id}/curves.png", "/evaluations/{evaluation_id}/cases", "/{ref}", "/{ref}/cases",
        "/{ref}/dev", "/{ref}/leaderboard", "/{ref}/evaluations")},
    **{f"POST /api/benchmarks{p}": Row(body=_json(lambda t: {})) for p in (
        "", "/{ref}/studies", "/{ref}/labels", "/{ref}/split", "/{ref}/evaluations")},
    **{f"GET /viewer/benchmarks{p}": READ for p in ("", "/evaluations/{evaluation_id}", "/{ref}")},
    # integration: webhooks, routing, retention (branch i17-part-jobs); worklist, corrections, reports (lookups)
    "POST /api/webhooks": Row(body=_json(lambda t: {"url": "http://127.0.0.1:9/matrix"})),
    "GET /api/webhooks": READ, "GET /api/webhooks/{webhook_id}": READ,
    "DELETE /api/webhooks/{webhook_id}": READ, "GET /api/webhooks/{webhook_id}/deliveries": READ,
    "POST /api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver": READ,
    "GET /api/routing": READ, "GET /api/routing/forwards": READ,
    "POST /api/routing/forwards/{forward_id}/resend": READ, "POST /api/routing/destinations/{name}/resend": READ,
    "GET /api/retention/plan": READ, "GET /api/retention/holds": READ,
    "PUT /api/studies/{study}/hold": Row(body=_json(lambda t: {"reason": "matrix"})),
    "DELETE /api/studies/{study}/hold": READ,
    "POST /api/worklist": Row(body=_json(lambda t: {"accession_number": "MATRIX", "patient_id": "P",
                                                    "modality": "CT"})),
    "GET /api/worklist": READ, "GET /api/worklist/{accession}": READ,
    "DELETE /api/worklist/{accession}": READ,
    "POST /api/corrections": Row(body=_json(lambda t: {"kind": "update-study", "study_uid": t.study,
                                                       "study_description": "matrix"})),
    "GET /api/corrections": READ, "GET /api/corrections/{correction_id}": READ,
    "POST /api/corrections/{correction_id}/revert": READ,
    "GET /api/studies/{study_uid}/reports": READ,
    "GET /api/studies/{study_uid}/reports/{report_id}": READ,
    "GET /api/studies/{study_uid}/reports/{report_id}/pdf": READ,
    "POST /api/studies/{study_uid}/reports": Row(body=_json(lambda t: {"sections": {"findings": "matrix"}})),
    "PUT /api/studies/{study_uid}/reports/{report_id}": Row(body=_json(lambda t: {"sections": {"findings": "m"}})),
    "POST /api/studies/{study_uid}/reports/{report_id}/sign": READ,
    "POST /api/studies/{study_uid}/reports/{report_id}/amend": READ,
}


# --- the routes of the app -------------------------------------------------------------------------------

ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")  # what may change the archive last


def _route_keys(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route of ``app``; a mount (static files) answers GET."""
    keys = set()
    for route in app_routes(app):
        for method in sorted(route.methods) or ["GET"]:
            keys.add((method, route.path))
    return sorted(keys, key=lambda k: (ORDER.index(k[0]), k[1]))


def _row_key(method: str, path: str) -> str:
    return f"{method} {path.replace(PARTITION_PREFIX, PREFIX)}"


def _collect() -> list[tuple[str, str]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, Archive.open(_settings(Path(tmp))) as archive:
        return _route_keys(create_app(archive))


ROUTES = _collect()


def _param(method: str, path: str) -> Any:
    row = ROWS.get(_row_key(method, path))
    marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row and row.xfail else []
    return pytest.param(method, path, id=f"{method} {path}", marks=marks)


def test_every_route_has_a_row(site: Site) -> None:
    keys = _route_keys(site.app)
    assert len(keys) > 300 and any(PARTITION_PREFIX in p for _m, p in keys)
    assert [f"{m} {p}" for m, p in keys if _row_key(m, p) not in ROWS] == []
    assert sorted(set(ROWS) - {_row_key(m, p) for m, p in keys}) == []  # no row for a route that is gone
    assert [k for k in PG_SUBSET if k not in keys] == []


# --- the matrix --------------------------------------------------------------------------------------------

def _fill(path: str, t: Target, row: Row = READ) -> str:
    values = {"partition": B, "study": t.study, "study_uid": t.study, "series": t.series, "instance": t.sop,
              "frames": "1", "tag": "7FE00010", "share_id": str(t.share_id), "kind": "png", "token": "no-such-token",
              "rest:path": "nowhere", "path:path": "no-such-file.js", "sha256": "0" * 64, "name": "nope",
              "version": "1", "ref": "nope"} | {k: v for k, v in t.ids.items() if k != "token" or row.link}
    return re.sub(r"\{([\w:]+)\}", lambda m: values.get(m.group(1), "999999"), path)


def _partition_of(path: str, home: str) -> str:
    if path.startswith(PARTITION_PREFIX):
        return B
    return A if path.startswith(PREFIX + "/") else home


def _may_act(caller: str, partition: str) -> bool:
    home, role = CALLERS[caller]
    return home == partition or (role == "admin" and home == A)


def _home(caller: str) -> str:
    return CALLERS[caller][0]


@dataclass
class Answer:
    status: int
    body: bytes
    length: int | None  # of a JSON list


def _send(site: Site, caller: str, method: str, path: str, row: Row, t: Target) -> Answer:
    kwargs: dict[str, Any] = row.body(t, caller) if row.body else {}
    headers = dict(kwargs.pop("headers", {}))
    if caller in site.csrf:
        headers["X-CSRF-Token"] = site.csrf[caller]
    client = site.client(caller)
    response = client.request(method, _fill(path, t, row), params=row.params(t) if row.params else None,
                              headers=headers, follow_redirects=False, **kwargs)
    body = response.content + "".join(f"{k}: {v}\n" for k, v in response.headers.items()).encode()
    length = None
    if response.status_code == 200 and response.headers.get("content-type", "").startswith("application/"
                                                                                            "json"):
        value = json.loads(response.content or b"null")
        length = len(value) if isinstance(value, list) else None
    return Answer(response.status_code, body, length)


def _leaks(answer: Answer, forbidden: set[str], sent: Target) -> list[str]:
    return sorted(m for m in forbidden - sent.echoed() if m.encode() in answer.body)


def _aimed(path: str, row: Row) -> bool:
    """Whether what is sent depends on the target (else one request says all)."""
    if re.search(r"\{(?!partition\})", path):
        return True
    probe = Target("2.25.1", "2.25.2", "2.25.3", 1)
    return (row.params is not None and row.params(ABSENT) != row.params(probe)) or (
        row.body is not None and repr(row.body(ABSENT, "admin")) != repr(row.body(probe, "admin")))


@pytest.mark.parametrize(("method", "path"), [_param(m, p) for m, p in ROUTES])
def test_no_route_crosses_partitions(site: Site, method: str, path: str) -> None:
    failures = _cross(site, method, path)
    assert not failures, "\n".join(failures)


#: A representative subset on PostgreSQL + S3: searches, retrieves and frames through both base paths,
#: WADO-URI, shares and their claim, downloads, pages, the change feed, STOW and DELETE where one may not.
_INSTANCE = f"{PARTITION_PREFIX}/studies/{{study}}/series/{{series}}/instances/{{instance}}"
PG_SUBSET = [("GET", f"{PARTITION_PREFIX}/studies"), ("GET", f"{PREFIX}/studies/{{study}}/metadata"),
             ("GET", _INSTANCE), ("GET", _INSTANCE + "/frames/{frames}"),
             ("GET", "/wado"), ("GET", "/api/studies/{study_uid}/shares"),
             ("DELETE", "/api/studies/{study_uid}/shares/{share_id}"), ("POST", "/s/{token}/claim"),
             ("GET", "/api/studies/{study_uid}/archive.zip"), ("GET", "/viewer/studies/{study_uid}"),
             ("GET", "/api/changefeed"), ("POST", f"{PARTITION_PREFIX}/studies/{{study}}"),
             ("DELETE", f"{PREFIX}/studies/{{study}}")]


@pytest.mark.postgres
@pytest.mark.s3
@pytest.mark.parametrize(("method", "path"), PG_SUBSET)
def test_no_route_crosses_partitions_on_postgres(pg_site: Site, method: str, path: str) -> None:
    failures = _cross(pg_site, method, path)
    assert not failures, "\n".join(failures)


def _cross(site: Site, method: str, path: str) -> list[str]:
    """What ``method path`` answers any caller that it should not (see the module's docstring)."""
    row = ROWS[_row_key(method, path)]
    failures: list[str] = []
    for caller in CALLERS:
        partition = _partition_of(path, _home(caller))
        allowed = _may_act(caller, partition)
        visible = {partition} if allowed else set()
        forbidden = set().union(*(site.markers[p] for p in (A, B) if p not in visible))
        other = B if partition == A else A
        if allowed:
            hidden = [site.solo[other]]
            if "{share_id}" in path:  # the other partition's share of the twin, under the twin's UID
                hidden.append(Target(site.twin[partition].study, site.twin[partition].series,
                                     site.twin[partition].sop, site.twin[other].share_id))
        else:
            hidden = [site.twin[partition], site.solo[partition]]
        if row.writes and allowed:
            continue  # would store into the partition it may act in: the DICOMweb tests cover that
        absent = _send(site, caller, method, path, row, ABSENT)
        for target in hidden if _aimed(path, row) else []:
            answer = _send(site, caller, method, path, row, target)
            may = "may" if allowed else "may not"
            where = f"{caller} ({may} act in {partition}) {method} {_fill(path, target, row)}"
            if answer.status != absent.status or answer.length != absent.length:
                failures.append(f"{where}: {answer.status} (list of {answer.length}) where never-stored data gets "
                                f"{absent.status} (list of {absent.length}): {answer.body[:120]!r}")
            if row.writes and answer.status < 400:
                failures.append(f"{where}: {answer.status}, stored where it may not act")
            if leaked := _leaks(answer, forbidden, target):
                failures.append(f"{where}: the answer holds {leaked}")
        if method in ("GET", "HEAD"):  # the twin, where the caller works: its own partition's copy only
            answer = _send(site, caller, method, path, row, site.twin[partition])
            if leaked := _leaks(answer, forbidden, site.twin[partition]):
                failures.append(f"{caller} {method} {_fill(path, site.twin[partition])}: the answer holds {leaked}")
        if leaked := _leaks(absent, forbidden, ABSENT):
            failures.append(f"{caller} {method} {_fill(path, ABSENT)}: the answer holds {leaked}")
    return failures


TWIN_COUNTS = {A: 3, B: 2}


@pytest.mark.parametrize("caller", list(CALLERS))
def test_counts_are_the_partitions_own(site: Site, caller: str) -> None:
    """The twin's instance counts in QIDO-RS are those of the partition searched, never the sum."""
    client = site.client(caller)
    for part, base in ((A, PREFIX), (B, PARTITION_PREFIX.replace("{partition}", B))):
        found = client.get(f"{base}/studies", params={"StudyInstanceUID": site.twin[A].study,
                                                     "includefield": "00201208"})
        counts = [m["00201208"]["Value"][0] for m in found.json()] if found.status_code == 200 else []
        if CALLERS[caller][1] in ("vendor", "share", "job") or not _may_act(caller, part):
            assert counts == [], f"{caller} {base}"
        else:
            assert counts == [TWIN_COUNTS[part]], f"{caller} {base}"


def test_the_installations_figures_are_for_the_default_partitions_admins(site: Site) -> None:
    assert site.client("admin").get("/metrics").status_code == 200
    assert site.client("n-admin").get("/metrics").status_code == 403


def test_a_correction_stays_in_its_partition(site: Site) -> None:
    """North's admin corrects north's own study: the change is north's alone, in the index and the feed.
    (Runs after the matrix: it changes the archive.)"""
    solo = site.solo[B]
    made = site.client("n-admin").post("/api/corrections", json={"kind": "update-study", "study_uid": solo.study,
                                                                 "study_description": "northmark corrected"})
    assert made.status_code == 201, made.text
    default_feed = site.client("admin").get("/api/changefeed", params={"since": "0", "limit": "1000"})
    north_feed = site.client("n-admin").get("/api/changefeed", params={"since": "0", "limit": "1000"})
    assert solo.study not in default_feed.text
    assert any(e["StudyInstanceUid"] == solo.study and e["Action"] == "update" for e in north_feed.json())
