"""STOW-RS takes the storage SOP classes C-STORE takes, retired ones included (pacs.dimse.contexts)."""

from __future__ import annotations

import copy

from fastapi.testclient import TestClient
from pydicom.uid import UID, generate_uid

from pacs.archive import Archive
from pacs.dimse.contexts import EXTRA_STORAGE_CLASSES
from tests.factories import make_ct_study, to_bytes
from tests.viewer_api.conftest import STOW_TYPE, stow_body


def test_retired_storage_classes_are_stored(client: TestClient, dw_archive: Archive) -> None:
    base = make_ct_study(n_slices=1, rows=16, cols=16, seed=1210)[0]
    items = []
    for uid in EXTRA_STORAGE_CLASSES:
        ds = copy.deepcopy(base)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(uid)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        items.append(ds)
    resp = client.post("/dicomweb/studies", content=stow_body(items), headers={"Content-Type": STOW_TYPE})
    assert resp.status_code == 200, resp.text
    stored = {dw_archive.store.get_bytes(obj.key) for obj in dw_archive.store.list()}
    assert stored == {to_bytes(ds) for ds in items}
