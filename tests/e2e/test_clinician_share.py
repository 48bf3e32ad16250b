"""Sharing a study with the next hospital (issue 13): two ``cloudfilm serve`` archives on loopback.

Archive A shares one study with a clinician: the share answers with A's DICOMweb URL and a bearer
token. dicomweb-client and the requests OHIF makes read that study with it and nothing else (no
other study, no STOW-RS, no DELETE, no JSON API, no pages); every use lands in A's audit trail;
revoked and expired tokens are refused. ``cloudfilm import-share`` then pulls the study into archive
B: every instance byte for byte (the SHA-256 of the stored objects match), and again nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1, RLELossless
from sqlalchemy import select, update

from pacs.accounts.models import Share
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.index.models import Instance, Study
from pacs.settings import Settings
from tests.cli import run_cli, serving
from tests.factories import PATIENTS, encode, make_ct_study, make_multiframe, to_bytes

pytestmark = pytest.mark.slow

PASSWORD = "admin-password-of-hospital-a"
BOUNDARY = "clinician-share-test"


@dataclass(frozen=True)
class Hospital:
    url: str
    data_dir: Path

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir)


def _env(data_dir: Path) -> dict[str, str]:
    return {"CLOUDFILM_SECRET_KEY": f"secret-key-of-{data_dir.parent.name}-0123456789",
            "CLOUDFILM_ADMIN_PASSWORD": PASSWORD,
            "CLOUDFILM_STABLE_AGE": "86400"}  # no AI job adds results to the study while the test compares copies


@pytest.fixture(scope="module")
def hospitals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hospital, Hospital]]:
    root = tmp_path_factory.mktemp("hospitals")
    a_dir, b_dir = root / "a" / "data", root / "b" / "data"
    with serving(a_dir, env=_env(a_dir)) as (a_url, _a_log), serving(b_dir, env=_env(b_dir)) as (b_url, _b_log):
        yield Hospital(a_url, a_dir), Hospital(b_url, b_dir)


def _admin(url: str) -> dict[str, str]:
    token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": PASSWORD}, timeout=30)
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


@dataclass(frozen=True)
class Shared:
    a: Hospital
    study_uid: str
    other_uid: str
    datasets: list[Dataset]
    url: str  # the share's DICOMweb URL
    token: str
    share_id: int


def _share(a: Hospital, study_uid: str, **body: object) -> dict[str, object]:
    made = httpx.post(f"{a.url}/api/studies/{study_uid}/shares", headers=_admin(a.url), timeout=30,
                      json={"for_clinician": True, "recipient": "Dr. Ana Ruiz, Hospital del Mar", **body})
    assert made.status_code == 201, made.text
    answer: dict[str, object] = made.json()
    return answer


@pytest.fixture(scope="module")
def shared(hospitals: tuple[Hospital, Hospital]) -> Shared:
    a, _b = hospitals
    ct = make_ct_study(PATIENTS[2], n_slices=3, rows=32, cols=32, seed=1301)
    study = str(ct[0].StudyInstanceUID)
    # stored transfer syntaxes other than the default, so "as stored" and "byte for byte" mean something
    lossless = encode(make_ct_study(PATIENTS[2], n_slices=1, rows=32, cols=32, seed=1302, study_uid=study)[0],
                      JPEGLosslessSV1)
    rle = encode(make_ct_study(PATIENTS[2], n_slices=1, rows=32, cols=32, seed=1303, study_uid=study)[0], RLELossless)
    multi = make_multiframe(n_frames=3, rows=32, cols=32, seed=1305, study_uid=study, patient=PATIENTS[2])
    other = make_ct_study(PATIENTS[3], n_slices=2, rows=32, cols=32, seed=1304)
    datasets = [*ct, lossless, rle, multi]
    admin = DICOMwebClient(f"{a.url}/dicomweb", headers=_admin(a.url))
    stored = admin.store_instances([*datasets, *other])
    assert len(stored.ReferencedSOPSequence) == len(datasets) + len(other)
    share = _share(a, study, expires_in_days=2)
    assert share["for_clinician"] is True and share["recipient"] == "Dr. Ana Ruiz, Hospital del Mar"
    assert share["dicomweb_url"] == f"{a.url}/dicomweb"
    token = str(share["dicomweb_token"])
    assert token.startswith("cfs_") and token not in str(share["url"])
    listed = httpx.get(f"{a.url}/api/studies/{study}/shares", headers=_admin(a.url), timeout=30).json()
    assert [s["dicomweb_token"] for s in listed if s["id"] == share["id"]] == [token]  # shown again, never stored
    return Shared(a, study, str(other[0].StudyInstanceUID), datasets, str(share["dicomweb_url"]), token,
                  int(share["id"]))  # type: ignore[call-overload]


def _client(shared: Shared, token: str | None = None) -> DICOMwebClient:
    return DICOMwebClient(shared.url, headers={"Authorization": f"Bearer {token or shared.token}"})


def _status(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except requests.HTTPError as exc:
        return int(exc.response.status_code)
    return 200


def test_dicomweb_client_reads_the_shared_study_with_the_token(shared: Shared) -> None:
    client = _client(shared)
    studies = client.search_for_studies()
    assert [s["0020000D"]["Value"][0] for s in studies] == [shared.study_uid]  # the one study, nothing else
    assert client.search_for_studies(search_filters={"StudyInstanceUID": shared.other_uid}) == []
    assert len(client.search_for_series(shared.study_uid)) == len({d.SeriesInstanceUID for d in shared.datasets})
    assert len(client.search_for_instances(shared.study_uid)) == len(shared.datasets)
    assert {i["00080018"]["Value"][0] for i in client.search_for_instances()} == {
        str(d.SOPInstanceUID) for d in shared.datasets}
    assert len(client.retrieve_study_metadata(shared.study_uid)) == len(shared.datasets)
    by_uid = {str(d.SOPInstanceUID): d for d in shared.datasets}
    for ds in client.retrieve_study(shared.study_uid):
        sent = by_uid[str(ds.SOPInstanceUID)]
        assert ds.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID  # as stored
    lossless = shared.datasets[3]
    as_stored = client.retrieve_instance(shared.study_uid, lossless.SeriesInstanceUID, lossless.SOPInstanceUID,
                                         media_types=(("application/dicom", "*"),))
    assert as_stored.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    decoded = client.retrieve_instance(shared.study_uid, lossless.SeriesInstanceUID, lossless.SOPInstanceUID,
                                       media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert (decoded.pixel_array == lossless.pixel_array).all()
    frames = client.retrieve_instance_frames(shared.study_uid, lossless.SeriesInstanceUID, lossless.SOPInstanceUID,
                                             frame_numbers=[1])
    assert len(frames) == 1 and frames[0]
    rendered = client.retrieve_instance_rendered(shared.study_uid, lossless.SeriesInstanceUID,
                                                 lossless.SOPInstanceUID, media_types=("image/png",))
    assert rendered.startswith(b"\x89PNG")


def test_the_token_opens_nothing_else(shared: Shared) -> None:
    client = _client(shared)
    other = shared.other_uid
    # another study does not exist for it (404, as for any caller outside its scope)
    assert _status(lambda: client.retrieve_study_metadata(other)) == 404
    assert _status(lambda: client.retrieve_study(other)) == 404
    assert _status(lambda: client.search_for_series(other)) == 200 and client.search_for_series(other) == []
    # no STOW-RS, into its own study or any
    intruder = make_ct_study(PATIENTS[2], n_slices=1, rows=16, cols=16, seed=1310, study_uid=shared.study_uid)
    assert _status(lambda: client.store_instances(intruder)) == 403
    assert _status(lambda: client.store_instances(intruder, study_instance_uid=shared.study_uid)) == 403
    base = shared.url.removesuffix("/dicomweb")
    bearer = {"Authorization": f"Bearer {shared.token}"}
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(intruder[0])
            + f"\r\n--{BOUNDARY}--\r\n".encode())
    stow = httpx.post(f"{shared.url}/studies", content=body, timeout=30, headers=bearer | {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'})
    assert stow.status_code == 403 and "only reads its one study" in stow.text
    # no DELETE, no JSON API, no pages, no WADO-URI outside the DICOMweb base URL
    for method, path in (("DELETE", f"/dicomweb/studies/{shared.study_uid}"),
                         ("DELETE", f"/dicomweb/studies/{other}"),
                         ("PUT", f"/dicomweb/studies/{shared.study_uid}"),
                         ("GET", f"/api/studies/{shared.study_uid}/shares"),
                         ("POST", f"/api/studies/{shared.study_uid}/shares"),
                         ("GET", "/api/audit"), ("GET", "/api/auth/me"), ("GET", "/api/auth/keys"),
                         ("GET", "/api/changefeed?since=0"), ("GET", "/api/plugins"), ("GET", "/metrics"),
                         ("GET", f"/viewer/studies/{shared.study_uid}"), ("GET", "/viewer/worklist"),
                         ("GET", f"/api/studies/{shared.study_uid}/archive.zip"),
                         ("GET", f"/wado?requestType=WADO&studyUID={shared.study_uid}")):
        answer = httpx.request(method, base + path, headers=bearer, timeout=30)
        assert answer.status_code == 403, f"{method} {path}: {answer.status_code} {answer.text[:200]}"
    with Archive.open(shared.a.settings, create=False) as archive, archive.engine.connect() as conn:
        assert conn.execute(select(Study.id).where(Study.study_uid == shared.study_uid)).first() is not None
        assert len(conn.execute(select(Instance.id)).all()) == len(shared.datasets) + 2  # nothing stored, nothing gone


def test_the_requests_ohif_makes_work_with_the_token(shared: Shared) -> None:
    """OHIF 3 (``?token=`` sets ``Authorization: Bearer``) opening the study: the same requests, headers and all."""
    bearer = {"Authorization": f"Bearer {shared.token}"}
    ds = shared.datasets[4]  # RLE: OHIF asks for frames as stored, transfer-syntax=*
    multi = shared.datasets[5]
    series_path = f"/studies/{shared.study_uid}/series/{ds.SeriesInstanceUID}"
    instance_path = f"{series_path}/instances/{ds.SOPInstanceUID}"
    with httpx.Client(base_url=shared.url, headers=bearer, timeout=30) as ohif:
        found = ohif.get("/studies", params={"StudyInstanceUID": shared.study_uid, "limit": "101", "offset": "0",
                                             "fuzzymatching": "false", "includefield": "00081030,00080060"},
                         headers={"Accept": "application/dicom+json"})
        assert found.status_code == 200 and found.json()[0]["0020000D"]["Value"] == [shared.study_uid]
        series = ohif.get(f"/studies/{shared.study_uid}/series", params={"includefield": "0008103E,0020000E"},
                          headers={"Accept": "application/dicom+json"})
        assert series.status_code == 200 and len(series.json()) == len({d.SeriesInstanceUID for d in shared.datasets})
        assert ohif.get(f"/studies/{shared.study_uid}/metadata").status_code == 200
        assert ohif.get(f"{series_path}/metadata").status_code == 200
        frame = ohif.get(f"{instance_path}/frames/1", headers={
            "Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
        assert frame.status_code == 200 and frame.headers["content-type"].startswith("multipart/related")
        multi_frame = ohif.get(f"/studies/{shared.study_uid}/series/{multi.SeriesInstanceUID}/instances/"
                               f"{multi.SOPInstanceUID}/frames/3", headers={
                                   "Accept": 'multipart/related; type="application/octet-stream"'})
        assert multi_frame.status_code == 200
        for rendered in (f"{instance_path}/rendered", f"{series_path}/thumbnail", f"{instance_path}/thumbnail"):
            image = ohif.get(rendered, headers={"Accept": "image/jpeg"})
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg", rendered
        assert ohif.head(f"/studies/{shared.study_uid}/metadata").status_code == 200


def test_every_use_of_the_token_is_audited(shared: Shared, hospitals: tuple[Hospital, Hospital]) -> None:
    a, _b = hospitals
    client = _client(shared)
    lossless = shared.datasets[3]
    client.retrieve_instance_frames(shared.study_uid, lossless.SeriesInstanceUID, lossless.SOPInstanceUID,
                                    frame_numbers=[1])
    assert _status(lambda: client.retrieve_study_metadata(shared.other_uid)) == 404
    assert len(client.search_for_studies()) == 1
    intruder = make_ct_study(PATIENTS[2], n_slices=1, rows=16, cols=16, seed=1311, study_uid=shared.study_uid)
    assert _status(lambda: client.store_instances(intruder)) == 403
    httpx.get(f"{a.url}/api/audit", headers={"Authorization": f"Bearer {shared.token}"}, timeout=30)
    events = httpx.get(f"{a.url}/api/audit", params={"limit": "10000"}, headers=_admin(a.url), timeout=30).json()
    mine = [e for e in events if e["share_id"] == shared.share_id and e["action"] != "share-create"]
    frames = [e for e in mine if "/frames/1" in e["detail"] and lossless.SOPInstanceUID in e["detail"]]
    assert frames and frames[0]["action"] == "share-token" and frames[0]["outcome"] == "success"
    assert frames[0]["study_uid"] == shared.study_uid
    assert any(e["action"] == "view" and e["study_uid"] == shared.other_uid and e["outcome"] == "failure"
               for e in mine)  # the 404 for the other study
    assert any(e["detail"].startswith("GET /api/audit 403") and e["outcome"] == "denied" for e in mine)
    assert any(e["action"] == "search" for e in mine)  # QIDO-RS /studies, as the route declares it
    assert any(e["action"] == "stow" and e["outcome"] == "denied" for e in mine)


def test_revoked_and_expired_tokens_are_refused(shared: Shared, hospitals: tuple[Hospital, Hospital]) -> None:
    a, _b = hospitals
    revoked = _share(a, shared.study_uid)
    revoked_token = str(revoked["dicomweb_token"])
    assert len(_client(shared, revoked_token).search_for_studies()) == 1
    gone = httpx.delete(f"{a.url}/api/studies/{shared.study_uid}/shares/{revoked['id']}", headers=_admin(a.url),
                        timeout=30)
    assert gone.status_code == 204
    assert _status(lambda: _client(shared, revoked_token).search_for_studies()) == 401
    refused = httpx.get(f"{shared.url}/studies/{shared.study_uid}/metadata", timeout=30,
                        headers={"Authorization": f"Bearer {revoked_token}"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")

    expired = _share(a, shared.study_uid)
    expired_token = str(expired["dicomweb_token"])
    assert len(_client(shared, expired_token).search_for_studies()) == 1
    with Archive.open(a.settings, create=False) as archive, archive.engine.begin() as conn:
        conn.execute(update(Share).where(Share.id == expired["id"]).values(expires_at=utcnow() - timedelta(minutes=1)))
    assert _status(lambda: _client(shared, expired_token).retrieve_study_metadata(shared.study_uid)) == 401
    assert _status(lambda: _client(shared, "cfs_" + "A" * 27).search_for_studies()) == 401  # never issued

    events = httpx.get(f"{a.url}/api/audit", params={"limit": "10000"}, headers=_admin(a.url), timeout=30).json()
    for share_id, refused_as in ((revoked["id"], {"search", "view"}), (expired["id"], {"view"})):
        refusals = [e for e in events if e["share_id"] == share_id and e["outcome"] == "denied"]
        assert {e["action"] for e in refusals} == refused_as, share_id


def _stored_objects(settings: Settings, study_uid: str) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (SHA-256 of the stored object's bytes, the SHA-256 the index keeps)."""
    with Archive.open(settings, create=False) as archive:
        with archive.engine.connect() as conn:
            rows = conn.execute(select(Instance.sop_uid, Instance.object_key, Instance.sha256)
                                .join(Study, Study.id == Instance.study_fk).where(Study.study_uid == study_uid)).all()
        return {sop: (hashlib.sha256(archive.store.get_bytes(key)).hexdigest(), sha) for sop, key, sha in rows}


def test_import_share_copies_the_study_byte_for_byte_once(shared: Shared, hospitals: tuple[Hospital, Hospital]) -> None:
    a, b = hospitals
    env = {"CLOUDFILM_DATA_DIR": str(b.data_dir)}
    first = run_cli("import-share", shared.url, shared.token, env=env)
    n = len(shared.datasets)
    assert first.returncode == 0, first.stderr
    assert f"study {shared.study_uid}: {n} instances, {n} stored, 0 already here, 0 rejected" in first.stdout

    source, copy = _stored_objects(a.settings, shared.study_uid), _stored_objects(b.settings, shared.study_uid)
    assert set(copy) == {str(d.SOPInstanceUID) for d in shared.datasets}
    assert copy == source  # every object byte for byte, as A stores it (JPEG Lossless and RLE included)
    assert all(actual == indexed for actual, indexed in copy.values())
    with Archive.open(b.settings, create=False) as archive, archive.engine.connect() as conn:
        assert conn.execute(select(Study.study_uid)).scalars().all() == [shared.study_uid]  # not the other one

    # B serves it like any other study
    listed = httpx.get(f"{b.url}/dicomweb/studies", headers=_admin(b.url), timeout=30).json()
    assert [s["0020000D"]["Value"][0] for s in listed] == [shared.study_uid]

    again = run_cli("import-share", f"{shared.url}/studies/{shared.study_uid}", "-", env=env,
                    input_text=shared.token + "\n")
    assert again.returncode == 0, again.stderr
    assert f"{n} instances, 0 stored, {n} already here, 0 rejected" in again.stdout
    assert _stored_objects(b.settings, shared.study_uid) == copy


def test_import_share_refuses_a_bad_token_in_one_sentence(shared: Shared, hospitals: tuple[Hospital, Hospital]) -> None:
    _a, b = hospitals
    env = {"CLOUDFILM_DATA_DIR": str(b.data_dir.parent / "empty")}
    refused = run_cli("import-share", shared.url, "cfs_not-a-token", env=env)
    assert refused.returncode == 1
    assert "the share token was refused: it is mistyped, expired or revoked" in refused.stderr
    assert "Traceback" not in refused.stderr
    nowhere = run_cli("import-share", "ftp://example.org/dicomweb", shared.token, env=env)
    assert nowhere.returncode == 1 and "is not an http:// or https:// DICOMweb URL" in nowhere.stderr
