"""Every DICOMweb operation through the reference Python client (dicomweb-client) against the real
server on a loopback port, on SQLite + filesystem and on PostgreSQL + SeaweedFS S3."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

from pacs.archive import Archive
from tests.conftest import ARCHIVE_BACKENDS, archive_settings
from tests.factories import PATIENTS, encode, make_ct_study, make_multiframe, make_rgb, multiframe_pixels
from tests.viewer_api.conftest import RunningServer

pytestmark = pytest.mark.slow


@pytest.fixture(params=ARCHIVE_BACKENDS)
def backend_archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    for settings in archive_settings(str(request.param), tmp_path, request):
        with Archive.open(settings.model_copy(update={"auth_disabled": True})) as archive:
            yield archive


def test_every_operation_through_dicomweb_client(
    backend_archive: Archive, serve: Callable[[Archive], RunningServer]
) -> None:
    server = serve(backend_archive)
    client = DICOMwebClient(f"{server.url}/dicomweb")
    ct = make_ct_study(PATIENTS[1], n_slices=6, seed=11)
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    j2k = encode(make_ct_study(PATIENTS[1], n_slices=1, seed=12, study_uid=study)[0], JPEG2000Lossless)
    jls = encode(make_ct_study(PATIENTS[1], n_slices=1, seed=13, study_uid=study)[0], JPEGLSLossless)
    rgb = make_rgb(study_uid=study, patient=PATIENTS[1], transfer_syntax=JPEGBaseline8Bit)
    multi = make_multiframe(n_frames=5, study_uid=study, patient=PATIENTS[1])
    other = make_ct_study(PATIENTS[4], n_slices=2, seed=14, modality="MR")

    # STOW-RS, to /studies and to /studies/{study}
    stored = client.store_instances(ct[:3])
    assert len(stored.ReferencedSOPSequence) == 3 and "FailedSOPSequence" not in stored
    stored = client.store_instances([*ct[3:], j2k, jls, rgb, multi], study_instance_uid=study)
    assert len(stored.ReferencedSOPSequence) == 7
    assert stored.RetrieveURL == f"{server.url}/dicomweb/studies/{study}"
    client.store_instances(other)

    # QIDO-RS at every level
    studies = client.search_for_studies(search_filters={"PatientName": "müller*"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in studies] == [study]
    assert studies[0]["00100010"]["Value"][0]["Alphabetic"] == "Müller^Jürgen"
    assert studies[0]["00201208"]["Value"] == [10]
    assert len(client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})) == 1
    assert len(client.search_for_studies(limit=1, offset=1)) == 1
    assert {s["0020000E"]["Value"][0] for s in client.search_for_series(study)} >= {series}
    assert len(client.search_for_series(search_filters={"Modality": "MR"})) == 1
    assert len(client.search_for_instances(study, series)) == 6
    assert len(client.search_for_instances(study)) == 10
    assert len(client.search_for_instances(search_filters={"SOPInstanceUID": j2k.SOPInstanceUID})) == 1

    # WADO-RS retrieve: as stored, and decompressed on request
    got = client.retrieve_study(study)
    assert len(got) == 10
    assert {str(d.file_meta.TransferSyntaxUID) for d in got} >= {JPEG2000Lossless, ExplicitVRLittleEndian}
    assert len(client.retrieve_series(study, series)) == 6
    as_ele = client.retrieve_instance(study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID,
                                      media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert as_ele.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(as_ele.pixel_array, j2k.pixel_array)

    # metadata at three levels, bulk data at the URIs it gives
    meta = client.retrieve_study_metadata(study)
    assert len(meta) == 10
    assert len(client.retrieve_series_metadata(study, series)) == 6
    one = client.retrieve_instance_metadata(study, series, ct[0].SOPInstanceUID)
    uri = one["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{server.url}/dicomweb/studies/")
    assert client.retrieve_bulkdata(uri)[0] == ct[0].PixelData

    # frames: native, compressed as stored, decompressed on request, several at once
    frame = client.retrieve_instance_frames(study, series, ct[0].SOPInstanceUID, [1])[0]
    assert frame == ct[0].PixelData
    codestream = client.retrieve_instance_frames(study, jls.SeriesInstanceUID, jls.SOPInstanceUID, [1],
                                                 media_types=("image/jls",))[0]  # fmt: skip
    assert codestream[:2] == b"\xff\xd8"
    decoded = client.retrieve_instance_frames(
        study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, [1],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
    )[0]
    assert np.array_equal(np.frombuffer(decoded, "<u2").reshape(j2k.Rows, j2k.Columns), j2k.pixel_array)
    frames = client.retrieve_instance_frames(study, multi.SeriesInstanceUID, multi.SOPInstanceUID, [2, 5])
    expected = multiframe_pixels(5, multi.Rows, multi.Columns)
    assert [np.frombuffer(f, "<u2")[0] for f in frames] == [expected[1, 0, 0], expected[4, 0, 0]]

    # rendered: instance, frame and series
    jpeg = client.retrieve_instance_rendered(study, series, ct[0].SOPInstanceUID, media_types=("image/jpeg",))
    assert Image.open(io.BytesIO(jpeg)).size == (ct[0].Columns, ct[0].Rows)
    png = client.retrieve_instance_frames_rendered(study, multi.SeriesInstanceUID, multi.SOPInstanceUID, [3],
                                                   media_types=("image/png",), params={"viewport": "32,32"})
    assert Image.open(io.BytesIO(png)).size == (32, 32)
    colour = client.retrieve_instance_rendered(study, rgb.SeriesInstanceUID, rgb.SOPInstanceUID,
                                               media_types=("image/png",))  # fmt: skip
    assert Image.open(io.BytesIO(colour)).mode == "RGB"
    assert client.retrieve_series_rendered(study, series, media_types=("image/gif",))[:3] == b"GIF"
    thumb = requests.get(f"{server.url}/dicomweb/studies/{study}/thumbnail", timeout=30)
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 128

    # delete: instance, series, study
    client.delete_instance(study, series, ct[0].SOPInstanceUID)
    assert len(client.search_for_instances(study, series)) == 5
    client.delete_series(study, series)
    assert client.search_for_series(study, search_filters={"SeriesInstanceUID": series}) == []
    client.delete_study(study)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    with pytest.raises(requests.HTTPError) as gone:
        client.retrieve_study_metadata(study)
    assert gone.value.response.status_code == 404
    assert len(client.search_for_studies()) == 1
    left = [o.key for o in backend_archive.store.list()]
    assert len(left) == 2 and all(k.startswith(other[0].StudyInstanceUID + "/") for k in left)
