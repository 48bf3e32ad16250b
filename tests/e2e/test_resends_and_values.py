"""Issue 12 across the entry points: one instance sent again by another route or calling AE is a
success everywhere (C-STORE 0x0000, STOW-RS 200, import "duplicate"); only another data set under
its SOP Instance UID is a conflict; text the index cannot hold is stored, never an orphan object.
On SQLite + filesystem and PostgreSQL + S3, with the real DICOM listener and the real app."""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config
from sqlalchemy import func, select

from pacs.fsck import fsck
from pacs.index.models import Instance, Study
from tests.cli import run_cli, settings_env
from tests.conftest import archive_settings
from tests.factories import CT_IMAGE_STORAGE, make_ct_study, write_files
from tests.pacs.dimse.support import Node, context, dataset_bytes, dicom_settings, running, stored_bytes
from viewer_api.app import create_app

BOUNDARY = "resend-boundary"
BACKENDS = ["sqlite-fs", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])]
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE, FAILURE_REASON = "00081198", "00081199", "00081197"


@dataclass
class Site:
    node: Node
    client: TestClient
    env: dict[str, str]


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """The listener and the app on one archive; peers send files' data sets as they are."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    for base in archive_settings(str(request.param), tmp_path, request):
        settings = dicom_settings(base, auth_disabled=True)
        with running(settings) as node, TestClient(create_app(node.archive)) as client:
            yield Site(node, client, settings_env(settings))


def _c_store(site: Site, files: list[Path], calling_aet: str) -> list[int]:
    assoc = site.node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)], aet=calling_aet)
    try:
        return [int(assoc.send_c_store(path).Status) for path in files]
    finally:
        assoc.release()


def _stow(site: Site, files: list[Path]) -> tuple[int, dict]:
    body = bytearray()
    for path in files:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + path.read_bytes() + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    resp = site.client.post("/dicomweb/studies", content=bytes(body), headers={"Content-Type": content_type})
    return resp.status_code, resp.json()


def _import(site: Site, files: list[Path]) -> str:
    result = run_cli("import", *map(str, files), env=site.env)
    return result.stdout + result.stderr


def _instances(site: Site) -> int:
    with site.node.archive.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Instance)).scalar_one())


def _first(route: str, site: Site, files: list[Path]) -> None:
    if route == "c-store":
        assert _c_store(site, files, "MODALITY1") == [0x0000] * len(files)
    elif route == "stow":
        status, body = _stow(site, files)
        assert status == 200 and FAILED_SOP_SEQUENCE not in body, body
    else:
        assert f"{len(files)} stored, 0 duplicate, 0 rejected" in _import(site, files)


@pytest.mark.slow
@pytest.mark.parametrize("first_route", ["c-store", "stow", "import"])
def test_a_resend_by_any_route_or_calling_ae_is_a_success(site: Site, first_route: str, tmp_path: Path) -> None:
    """Seen in issue 12: stored by storescu and sent again by STOW-RS, 409 / 0x0111; sent again by
    storescu under another calling AE, a warning. Only the File Meta Information differed."""
    study = make_ct_study(n_slices=3, rows=32, cols=32, seed=120)
    files = write_files(study, tmp_path / "study")
    _first(first_route, site, files)
    kept = [stored_bytes(site.node, ds.SOPInstanceUID) for ds in study]

    assert _c_store(site, files, "MODALITY2") == [0x0000] * 3
    assert _c_store(site, files, "MODALITY1") == [0x0000] * 3
    status, body = _stow(site, files)
    assert status == 200 and FAILED_SOP_SEQUENCE not in body, body
    assert len(body[REFERENCED_SOP_SEQUENCE]["Value"]) == 3
    assert "0 stored, 3 duplicate, 0 rejected" in _import(site, files)
    assert _instances(site) == 3
    assert [stored_bytes(site.node, ds.SOPInstanceUID) for ds in study] == kept

    # Another data set under the same SOP Instance UID is the one conflict.
    changed: Dataset = copy.deepcopy(study[0])
    changed.SeriesDescription = "something else"
    [other] = write_files([changed], tmp_path / "changed")
    assert _c_store(site, [other], "MODALITY3") == [0xB006]
    status, body = _stow(site, [other])
    assert status == 409 and [i[FAILURE_REASON]["Value"][0] for i in body[FAILED_SOP_SEQUENCE]["Value"]] == [0x0111]
    assert _instances(site) == 3
    report = fsck(site.node.archive, deep=True, repair=False, grace_s=0)
    assert report.problems == 0, report


def test_nul_in_indexed_text_over_c_store(site: Site, tmp_path: Path) -> None:
    """Seen in issue 12 on PostgreSQL: 0xC211 and an orphan object. The instance is stored as sent,
    the index keeps the text without its NUL characters."""
    ds = make_ct_study(n_slices=1, rows=32, cols=32, seed=121)[0]
    ds.PatientName, ds.PatientID, ds.StudyDescription = "Nul^In\x00Name", "ID\x00NUL", "Desc\x00ription"
    [path] = write_files([ds], tmp_path / "nul")
    assert _c_store(site, [path], "MODALITY1") == [0x0000]
    with site.node.archive.engine.connect() as conn:
        study = conn.execute(select(Study)).one()
    assert (study.patient_name, study.patient_id, study.study_description) == ("Nul^InName", "IDNUL", "Description")
    assert dataset_bytes(stored_bytes(site.node, ds.SOPInstanceUID)) == dataset_bytes(path.read_bytes())
    report = fsck(site.node.archive, deep=True, repair=False, grace_s=0)
    assert report.problems == 0, report


def test_pixel_data_shorter_than_the_image_is_refused_over_c_store(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen in issue 12: a file cut in half, read by pydicom and re-encoded by pynetdicom (its pixel
    data element then short but whole) was acknowledged with 0x0000; its frames answered 400 forever."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)  # pynetdicom encodes the data set
    half = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(half[: len(half) // 2]))
    assert 0 < len(ds.PixelData) < 8192
    assoc = site.node.associate([context(ds.SOPClassUID, ExplicitVRLittleEndian)], aet="MODALITY1")
    try:
        rsp = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert rsp.Status == 0xA900 and "the pixel data holds" in rsp.ErrorComment
    assert _instances(site) == 0 and list(site.node.archive.store.list()) == []
