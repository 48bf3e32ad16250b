"""Partitions over HTTP (issue 17 item 5): STOW-RS to two base paths keeps the same UIDs twice, and an
access matrix — every DICOMweb read route × accounts of two partitions × both base paths — proves
that no study, and no byte of one, crosses partitions. On SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from sqlalchemy import select

from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.index.models import Instance
from pacs.partitions import PartitionConfig
from pacs.settings import Settings
from tests.conftest import ARCHIVE_BACKENDS, archive_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.viewer_api.conftest import STOW_TYPE, stow_body
from tests.viewer_api.portal.conftest import PASSWORD, bearer
from viewer_api.app import create_app
from viewer_api.auth.routing import app_routes
from viewer_api.dicomweb import PARTITION_PREFIX, dicomweb_router

DEFAULT_TWIN = "Default^Twin"
NORTH_TWIN = "North^Twin"
CALLERS = ("admin", "doc", "northdoc", "northadmin")  # admin: of the default partition, so of every one
HOME = {"admin": None, "doc": "default", "northdoc": "north", "northadmin": "north"}
BASES = {"default": "/dicomweb", "north": "/dicomweb/p/north"}


def _settings(base: Settings) -> Settings:
    return Settings(**(base.model_dump() | {"secret_key": "test-secret-key-0123456789",
                                            "partitions": {"north": PartitionConfig(ae_titles=["NORTH"])}}))


def _named(datasets: list[Dataset], name: str) -> list[Dataset]:
    out = [copy.deepcopy(ds) for ds in datasets]
    for ds in out:
        ds.PatientName = name
    return out


@dataclass
class Site:
    archive: Archive
    twin: list[Dataset]  # stored in both partitions, with another PatientName in each
    solo: dict[str, list[Dataset]]  # partition -> a study only it holds
    clients: dict[str, TestClient] = field(default_factory=dict)


def _open_site(settings: Settings) -> Iterator[Site]:
    with Archive.open(settings) as archive:
        north = archive.partitions.by_slug("north")
        assert north is not None
        twin = make_ct_study(PATIENTS[0], n_slices=2, rows=16, cols=16, seed=4101)
        solo = {"default": make_ct_study(PATIENTS[1], n_slices=1, rows=16, cols=16, seed=4102),
                "north": make_ct_study(PATIENTS[2], n_slices=1, rows=16, cols=16, seed=4103)}
        for ds in [*_named(twin, DEFAULT_TWIN), *solo["default"]]:
            assert archive.ingest.store_bytes(to_bytes(ds)).ok
        for ds in [*_named(twin, NORTH_TWIN), *solo["north"]]:
            assert archive.ingest.store_bytes(to_bytes(ds), partition=north).ok
        create_user(archive.engine, "admin", PASSWORD, "admin")
        create_user(archive.engine, "doc", PASSWORD, "physician")
        create_user(archive.engine, "northdoc", PASSWORD, "physician", partition=north.id)
        create_user(archive.engine, "northadmin", PASSWORD, "admin", partition=north.id)
        app = create_app(archive)
        site = Site(archive, twin, solo)
        for name in CALLERS:
            client = TestClient(app)
            client.headers["Authorization"] = f"Bearer {bearer(client, name)}"
            site.clients[name] = client
        try:
            yield site
        finally:
            for client in site.clients.values():
                client.close()


@pytest.fixture(scope="module", params=ARCHIVE_BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    for base in archive_settings(str(request.param), tmp_path_factory.mktemp("partitions"), request):
        yield from _open_site(_settings(base))


def _may_act(caller: str, partition: str) -> bool:
    return HOME[caller] in (None, partition)


def _read_routes() -> list[str]:
    """Every GET route of a partition's DICOMweb tree (the default tree has the same routes)."""
    app = FastAPI()
    app.include_router(dicomweb_router(PARTITION_PREFIX))
    paths = {r.path for r in app_routes(app)
             if "GET" in r.methods and r.path.startswith(PARTITION_PREFIX) and "{rest" not in r.path}
    return sorted(p.removeprefix(PARTITION_PREFIX) for p in paths)


READ_ROUTES = _read_routes()


def _fill(path: str, ds: Dataset) -> str:
    values = {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID,
              "frames": "1", "tag": "7FE00010"}
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def test_the_matrix_covers_the_read_routes() -> None:
    assert len(READ_ROUTES) >= 20 and "/studies" in READ_ROUTES and "/studies/{study}/metadata" in READ_ROUTES


@pytest.mark.parametrize(("route", "caller", "partition"), list(itertools.product(READ_ROUTES, CALLERS, BASES)))
def test_no_route_crosses_partitions(site: Site, route: str, caller: str, partition: str) -> None:
    client = site.clients[caller]
    other = "default" if partition == "north" else "north"
    foreign_name = (NORTH_TWIN if partition == "default" else DEFAULT_TWIN).encode()
    if "{study}" not in route:  # searches: the studies listed are this partition's, if the caller may act here
        response = client.get(BASES[partition] + route, params={"limit": "1000"})
        assert response.status_code in (200, 204), response.text[:200]
        listed = {item["0020000D"]["Value"][0] for item in (response.json() if response.status_code == 200 else [])}
        expected = ({str(site.twin[0].StudyInstanceUID), str(site.solo[partition][0].StudyInstanceUID)}
                    if _may_act(caller, partition) else set())
        assert listed == expected
        assert foreign_name not in response.content
        return
    search = route.endswith(("/series", "/instances"))  # QIDO-RS inside a study: no match is an empty answer

    def found(path: str) -> bool:
        response = client.get(BASES[partition] + path)
        assert foreign_name not in response.content, f"{caller} {partition}{route}"
        if search and response.status_code in (200, 204):
            return response.status_code == 200 and bool(response.json())
        assert response.status_code < 400 or response.status_code == 404, f"{caller} {partition}{route}: " \
                                                                          f"{response.text[:200]}"
        return response.status_code != 404

    # the other partition's own study does not exist here, for anybody
    assert not found(_fill(route, site.solo[other][0])), f"{caller} {partition}{route}"
    # the study both hold: this partition's version to those who may act here, nothing to the others
    assert found(_fill(route, site.twin[0])) == _may_act(caller, partition), f"{caller} {partition}{route}"


def test_an_unknown_partition_is_not_found(site: Site) -> None:
    response = site.clients["admin"].get("/dicomweb/p/nowhere/studies")
    assert response.status_code == 404


def test_wado_uri_and_the_viewer_api_work_in_the_callers_own_partition(site: Site) -> None:
    ds = site.solo["north"][0]
    url = (f"/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
           f"&objectUID={ds.SOPInstanceUID}&contentType=application/dicom")
    assert site.clients["northdoc"].get(url).status_code == 200
    assert site.clients["doc"].get(url).status_code == 404
    twin = site.twin[0]
    twin_url = (f"/wado?requestType=WADO&studyUID={twin.StudyInstanceUID}&seriesUID={twin.SeriesInstanceUID}"
                f"&objectUID={twin.SOPInstanceUID}&contentType=application/dicom")
    assert NORTH_TWIN.encode() in site.clients["northdoc"].get(twin_url).content
    assert DEFAULT_TWIN.encode() in site.clients["doc"].get(twin_url).content


def test_share_links_stay_in_their_partition(site: Site) -> None:
    north_uid = str(site.solo["north"][0].StudyInstanceUID)
    made = site.clients["northdoc"].post(f"/api/studies/{north_uid}/shares", json={"expires_in_days": 2})
    assert made.status_code == 201, made.text
    assert site.clients["doc"].get(f"/api/studies/{north_uid}/shares").status_code == 404
    assert [s["id"] for s in site.clients["northdoc"].get(f"/api/studies/{north_uid}/shares").json()] == [
        made.json()["id"]]
    # the twin study's links of one partition are not listed in the other
    twin_uid = str(site.twin[0].StudyInstanceUID)
    twin_share = site.clients["doc"].post(f"/api/studies/{twin_uid}/shares", json={"expires_in_days": 2})
    assert twin_share.status_code == 201
    assert site.clients["northdoc"].get(f"/api/studies/{twin_uid}/shares").json() == []
    # a visitor of the north link sees the north study (and the north version only)
    visitor = TestClient(site.clients["doc"].app)
    token = made.json()["url"].rsplit("/", 1)[1]
    assert visitor.get(f"/s/{token}").status_code == 200
    assert visitor.get(f"/dicomweb/p/north/studies/{north_uid}/metadata").status_code == 200
    assert visitor.get(f"/dicomweb/studies/{north_uid}/metadata").status_code == 404


def test_stow_to_two_base_paths_keeps_both(settings: Settings) -> None:
    _stow_twice(_settings(settings))


def _stow_twice(settings: Settings) -> None:
    with Archive.open(settings) as archive:
        north = archive.partitions.by_slug("north")
        assert north is not None
        create_user(archive.engine, "admin", PASSWORD, "admin")
        create_user(archive.engine, "doc", PASSWORD, "physician")
        create_user(archive.engine, "northdoc", PASSWORD, "physician", partition=north.id)
        app = create_app(archive)
        study = make_ct_study(PATIENTS[3], n_slices=2, rows=16, cols=16, seed=4200)
        with TestClient(app) as doc, TestClient(app) as northdoc:
            doc.headers["Authorization"] = f"Bearer {bearer(doc, 'doc')}"
            northdoc.headers["Authorization"] = f"Bearer {bearer(northdoc, 'northdoc')}"
            headers = {"Content-Type": STOW_TYPE}
            stored = doc.post("/dicomweb/studies", content=stow_body(_named(study, DEFAULT_TWIN)), headers=headers)
            assert stored.status_code == 200, stored.text
            stored = northdoc.post("/dicomweb/p/north/studies", content=stow_body(_named(study, NORTH_TWIN)),
                                   headers=headers)
            assert stored.status_code == 200, stored.text
            assert stored.json()["00081190"]["Value"][0].endswith(
                f"/dicomweb/p/north/studies/{study[0].StudyInstanceUID}")
            # a physician of the default partition may not store into north's base path
            refused = doc.post("/dicomweb/p/north/studies", content=stow_body(_named(study, "Intruder^X")),
                               headers=headers)
            assert refused.status_code >= 400
            uid = study[0].StudyInstanceUID
            mine = doc.get("/dicomweb/studies", params={"StudyInstanceUID": uid, "includefield": "00100010"})
            theirs = northdoc.get("/dicomweb/p/north/studies", params={"StudyInstanceUID": uid,
                                                                       "includefield": "00100010"})
            assert [m["00100010"]["Value"][0]["Alphabetic"] for m in mine.json()] == [DEFAULT_TWIN]
            assert [m["00100010"]["Value"][0]["Alphabetic"] for m in theirs.json()] == [NORTH_TWIN]
            sop = study[0]
            path = f"/studies/{uid}/series/{sop.SeriesInstanceUID}/instances/{sop.SOPInstanceUID}"
            accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
            assert NORTH_TWIN.encode() in northdoc.get("/dicomweb/p/north" + path, headers=accept).content
            body = doc.get("/dicomweb" + path, headers=accept).content
            assert DEFAULT_TWIN.encode() in body and NORTH_TWIN.encode() not in body
            assert NORTH_TWIN.encode() not in doc.get("/dicomweb/p/north" + path, headers=accept).content
            # deleting north's copy leaves the default partition's
            with TestClient(app) as admin:
                admin.headers["Authorization"] = f"Bearer {bearer(admin, 'admin')}"
                assert admin.delete(f"/dicomweb/p/north/studies/{uid}").status_code in (200, 204)
                assert admin.get(f"/dicomweb/p/north/studies/{uid}/metadata").status_code == 404
                assert DEFAULT_TWIN.encode() in admin.get(f"/dicomweb/studies/{uid}/metadata").content
            kept = _keys(archive, 1)
            assert len(kept) == 2 and all(archive.store.head(key) is not None for key in kept)
            assert _keys(archive, north.id) == [] and list(archive.store.list("p/north/")) == []


def test_the_change_feed_holds_only_the_callers_partition(site: Site) -> None:
    def feed(caller: str) -> list[dict[str, object]]:
        response = site.clients[caller].get("/api/changefeed", params={"limit": "1000", "includeMetadata": "true"})
        assert response.status_code == 200, response.text
        return list(response.json())

    twin = str(site.twin[0].StudyInstanceUID)
    north = feed("northadmin")
    default = feed("admin")  # an admin of the default partition reads the default partition's feed
    assert {e["StudyInstanceUid"] for e in north} == {twin, str(site.solo["north"][0].StudyInstanceUID)}
    assert {e["StudyInstanceUid"] for e in default} == {twin, str(site.solo["default"][0].StudyInstanceUID)}
    # the twin's events: each feed's own instances, current, with its own metadata
    assert all(e["State"] == "current" for e in north + default)
    assert NORTH_TWIN in str(north) and DEFAULT_TWIN not in str(north)
    assert DEFAULT_TWIN in str(default) and NORTH_TWIN not in str(default)
    assert site.clients["northdoc"].get("/api/changefeed").status_code == 403  # feeds are for admins


def _keys(archive: Archive, partition: int) -> list[str]:
    with archive.engine.connect() as conn:
        return list(conn.execute(select(Instance.object_key).where(Instance.partition_fk == partition)).scalars())
