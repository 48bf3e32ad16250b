"""Tiering: a rule moves a study's objects to another directory or bucket (with a colder S3 storage
class) or to a colder storage class in the archive's bucket; WADO returns byte-identical data after
the move, fsck finds the moved objects where the index says, and deleting the study removes them."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.delete import delete_instances
from pacs.fsck import fsck
from pacs.index.db import utcnow
from pacs.index.models import Instance
from pacs.retention.plan import plan
from pacs.retention.rules import RetentionRule
from pacs.retention.run import run
from pacs.storage.s3 import S3Store
from pacs.storage.tiers import TieredStore, base_key
from tests.factories import PATIENTS, make_ct_study
from tests.pacs.retention.conftest import COLD_CLASS, OpenArchive, store


def _rule(tier: str) -> RetentionRule:
    return RetentionRule(name=f"to-{tier}", action="tier", tier=tier, age_days=365)


def _keys(archive: Archive) -> dict[str, str]:
    with archive.engine.connect() as conn:
        return dict(conn.execute(select(Instance.sop_uid, Instance.object_key)).all())  # type: ignore[arg-type]


def _frames(client: TestClient, ds: object) -> bytes:
    url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"  # type: ignore[attr-defined]
           f"/instances/{ds.SOPInstanceUID}/frames/1")  # type: ignore[attr-defined]
    response = client.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    assert response.status_code == 200, response.text
    boundary = re.search(r'boundary="?([^";]+)', response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    return response.content.replace(boundary.encode(), b"BOUNDARY")


def _wado(client: TestClient, ds: object) -> bytes:
    response = client.get("/wado", params={
        "requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,  # type: ignore[attr-defined]
        "objectUID": ds.SOPInstanceUID, "contentType": "application/dicom"})  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    return response.content


def test_tiering_moves_objects_and_wado_returns_identical_bytes(
        open_archive: OpenArchive, client_of: Callable[[Archive], TestClient]) -> None:  # fmt: skip
    probe = open_archive()
    tiers = list(probe.settings.retention_tiers)  # "cold" (another directory or bucket), on S3 also "ia"
    study = make_ct_study(PATIENTS[0], n_slices=3, rows=16, cols=16, seed=140, study_date="20150301")
    store(probe, study)
    client = client_of(probe)
    before = {ds.SOPInstanceUID: (_wado(client, ds), _frames(client, ds)) for ds in study}
    originals = _keys(probe)

    for tier in tiers:
        archive = open_archive([_rule(tier)])
        assert isinstance(archive.store, TieredStore)
        report = run(archive.engine, archive.store, archive.settings, utcnow())
        assert report.counts == {"move": 1} and report.moved_objects == 3 and not report.errors

        keys = _keys(archive)
        assert {sop: base_key(k) for sop, k in keys.items()} == originals
        assert all(k.startswith(f"_tiers/{tier}/") for k in keys.values())
        assert all(archive.store.primary.head(k) is None for k in originals.values())
        holder = archive.store.tiers[tier]
        assert all(holder.head(k) is not None for k in keys.values())
        if isinstance(holder, S3Store):
            assert {holder.storage_class_of(k) for k in keys.values()} == {COLD_CLASS}
        client = client_of(archive)
        assert {ds.SOPInstanceUID: (_wado(client, ds), _frames(client, ds)) for ds in study} == before
        report_fsck = fsck(archive, deep=True)
        assert report_fsck.problems == 0 and report_fsck.checked_instances == 3
        assert [s.kind for s in plan(archive.engine, [_rule(tier)], utcnow())] == []  # nothing left to move

    result = delete_instances(archive.engine, archive.store, AccessScope.everything(),
                              study_uid=study[0].StudyInstanceUID)  # fmt: skip
    assert result.instances == 3 and not result.objects_left
    assert list(archive.store.list()) == []

