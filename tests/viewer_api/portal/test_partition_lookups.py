"""Reports, corrections, rejections and the worklist API in a partitioned archive (issue 17 item 5): with
a study whose UIDs both partitions hold, a report signed in one partition is that partition's alone
(its versions, its SR/PDF/KOS in its twin, QIDO in each base path), a correction made in one leaves the
other's twin untouched (QIDO through both base paths) and is listed, read and reverted there only,
and worklist orders are per partition. On SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.corrections import service as corrections
from pacs.partitions import PartitionConfig
from pacs.settings import Settings
from tests.conftest import ARCHIVE_BACKENDS, archive_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.viewer_api.portal.conftest import PASSWORD, bearer
from viewer_api.app import create_app

CALLERS = ("admin", "doc", "northdoc", "northadmin")
BASES = {"default": "/dicomweb", "north": "/dicomweb/p/north"}
NAMES = {"default": "Default^Twin", "north": "North^Twin"}


@dataclass
class Site:
    archive: Archive
    twin: list[Dataset]
    clients: dict[str, TestClient] = field(default_factory=dict)

    @property
    def study_uid(self) -> str:
        return str(self.twin[0].StudyInstanceUID)


@pytest.fixture(params=ARCHIVE_BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    for base in archive_settings(str(request.param), tmp_path_factory.mktemp("lookups"), request):
        settings = Settings(**(base.model_dump() | {"secret_key": "test-secret-key-0123456789",
                                                    "partitions": {"north": PartitionConfig(ae_titles=["NORTH"])}}))
        with Archive.open(settings) as archive:
            north = archive.partitions.by_slug("north")
            assert north is not None
            twin = make_ct_study(PATIENTS[0], n_slices=2, rows=16, cols=16, seed=5101)
            for slug, into in (("default", archive.partitions.default), ("north", north)):
                for ds in twin:
                    copied = copy.deepcopy(ds)
                    copied.PatientName = NAMES[slug]
                    copied.AccessionNumber = "TWIN1"
                    assert archive.ingest.store_bytes(to_bytes(copied), partition=into).ok
            create_user(archive.engine, "admin", PASSWORD, "admin")
            create_user(archive.engine, "doc", PASSWORD, "physician")
            create_user(archive.engine, "northdoc", PASSWORD, "physician", partition=north.id)
            create_user(archive.engine, "northadmin", PASSWORD, "admin", partition=north.id)
            app = create_app(archive)
            site = Site(archive, twin)
            for name in CALLERS:
                client = TestClient(app)
                client.headers["Authorization"] = f"Bearer {bearer(client, name)}"
                site.clients[name] = client
            try:
                yield site
            finally:
                for client in site.clients.values():
                    client.close()


def _study(site: Site, caller: str, partition: str) -> dict[str, str]:
    """The twin as QIDO-RS answers ``caller`` in ``partition``'s base path: name, accession, modalities."""
    response = site.clients[caller].get(f"{BASES[partition]}/studies", params={
        "StudyInstanceUID": site.study_uid, "includefield": "00080061"})
    assert response.status_code == 200, response.text
    (found,) = response.json()
    return {"name": found["00100010"]["Value"][0]["Alphabetic"], "accession": found["00080050"]["Value"][0],
            "modalities": "\\".join(found["00080061"]["Value"])}


def test_a_report_signed_in_one_partition_stays_in_it(site: Site) -> None:
    north, home = site.clients["northdoc"], site.clients["doc"]
    base = f"/api/studies/{site.study_uid}/reports"
    key = {"series_uid": str(site.twin[0].SeriesInstanceUID), "sop_uid": str(site.twin[0].SOPInstanceUID)}
    draft = north.post(base, json={"sections": {"findings": "North finding."}, "key_images": [key]})
    assert draft.status_code == 201, draft.text
    signed = north.post(f"{base}/{draft.json()['id']}/sign")
    assert signed.status_code == 200, signed.text
    assert signed.json()["version"] == 1 and signed.json()["kos_uid"]

    # north lists it; the default partition's twin has no report, and its staff cannot reach north's
    assert [(v["status"], v["version"]) for v in north.get(base).json()["versions"]] == [("signed", 1)]
    assert home.get(base).json()["versions"] == []
    report_id = signed.json()["id"]
    assert home.get(f"{base}/{report_id}").status_code == 404
    assert home.post(f"{base}/{report_id}/amend").status_code == 404
    # the SR, PDF and KOS went into north's twin only
    assert set(_study(site, "northdoc", "north")["modalities"].split("\\")) == {"CT", "SR", "DOC", "KO"}
    assert _study(site, "doc", "default")["modalities"] == "CT"

    # the default partition writes its own report of its twin: version 1 there, north's untouched
    own = home.post(base, json={"sections": {"impression": "Default impression."}})
    assert own.status_code == 201, own.text
    assert own.json()["supersedes_id"] is None  # north's signed version is not this twin's
    assert home.post(f"{base}/{own.json()['id']}/sign").json()["version"] == 1
    assert [(v["status"], v["version"]) for v in north.get(base).json()["versions"]] == [("signed", 1)]
    assert north.get(f"{base}/{own.json()['id']}").status_code == 404


def test_a_correction_in_one_partition_leaves_the_others_twin_untouched(site: Site) -> None:
    north_admin, admin = site.clients["northadmin"], site.clients["admin"]
    done = north_admin.post("/api/corrections", json={"kind": "update-study", "study_uid": site.study_uid,
                                                      "accession_number": "NORTH9"})
    assert done.status_code == 201, done.text
    correction_id = done.json()["id"]
    assert _study(site, "northadmin", "north")["accession"] == "NORTH9"
    assert _study(site, "admin", "north")["accession"] == "NORTH9"  # a global admin through north's base path
    assert _study(site, "doc", "default")["accession"] == "TWIN1"
    assert _study(site, "admin", "default")["accession"] == "TWIN1"

    # north's correction is north's: listed, read and reverted there, not in the default partition
    assert [c["id"] for c in north_admin.get("/api/corrections").json()] == [correction_id]
    assert admin.get("/api/corrections").json() == []
    assert admin.get(f"/api/corrections/{correction_id}").status_code == 404
    assert admin.post(f"/api/corrections/{correction_id}/revert").status_code == 404
    versions = north_admin.get(f"/api/corrections/{correction_id}").json()["versions"]
    assert sorted(v["sop_uid"] for v in versions) == sorted(str(ds.SOPInstanceUID) for ds in site.twin)
    north = site.archive.partitions.by_slug("north").id  # type: ignore[union-attr]
    kept = corrections.versions_of(site.archive.engine, correction_id=correction_id, partition=north)
    assert kept and all(v.object_key.startswith("_versions/p/north/") for v in kept)
    assert corrections.versions_of(site.archive.engine, correction_id=correction_id) == []

    # a patient update in the default partition renames the default twin only
    renamed = admin.post("/api/corrections", json={
        "kind": "update-patient", "patient": {"patient_id": PATIENTS[0].patient_id, "issuer": ""},
        "patient_name": "Renamed^Default"})
    assert renamed.status_code == 201, renamed.text
    assert _study(site, "doc", "default")["name"] == "Renamed^Default"
    assert _study(site, "northdoc", "north")["name"] == NAMES["north"]

    reverted = north_admin.post(f"/api/corrections/{correction_id}/revert")
    assert reverted.status_code == 201, reverted.text
    assert _study(site, "northdoc", "north")["accession"] == "TWIN1"
    assert _study(site, "doc", "default")["name"] == "Renamed^Default"


def test_worklist_orders_belong_to_the_callers_partition(site: Site) -> None:
    north_admin, admin = site.clients["northadmin"], site.clients["admin"]
    order = {"accession_number": "ACC1", "patient_id": "PN", "patient_name": "North^Nina", "modality": "CT"}
    assert north_admin.post("/api/worklist", json=order).status_code == 201
    assert admin.get("/api/worklist").json() == []
    assert admin.get("/api/worklist/ACC1").status_code == 404
    assert admin.delete("/api/worklist/ACC1").status_code == 404
    # the same accession number in the default partition is another order
    assert admin.post("/api/worklist", json=order | {"patient_id": "PD"}).status_code == 201
    assert [e["patient_id"] for e in north_admin.get("/api/worklist").json()] == ["PN"]
    assert [e["patient_id"] for e in admin.get("/api/worklist").json()] == ["PD"]
