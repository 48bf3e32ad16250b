"""The hand-encoded File Meta Information is byte for byte what pydicom writes."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pacs.dicomfile import file_meta_bytes, parse_part10
from tests.factories import encode, make_ct_study, to_bytes


def _pydicom_meta(sop_class: str, sop_instance: str, ts: str, impl: str, version: str, source: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = impl
    if version:
        meta.ImplementationVersionName = version
    if source:
        meta.SourceApplicationEntityTitle = source
    buf = DicomBytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "ts", "version", "source"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "CLOUDFILM_0.1.0", "STORESCU"),
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2", "ODD", "A"),
        ("1.2.840.10008.5.1.4.1.1.7", "2.25." + "9" * 59, "1.2.840.10008.1.2.4.90", "CLOUDFILM", ""),
    ],
)
def test_file_meta_matches_pydicom(sop_class: str, sop_instance: str, ts: str, version: str, source: str) -> None:
    impl = "2.25.1291012722190521670963785586830670458"
    ours = file_meta_bytes(sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax_uid=ts,
                           implementation_class_uid=impl, implementation_version_name=version,
                           source_ae_title=source)
    assert ours == _pydicom_meta(sop_class, sop_instance, ts, impl, version, source)


def test_file_meta_refuses_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        file_meta_bytes(sop_class_uid="1.2", sop_instance_uid="1.2.ü", transfer_syntax_uid="1.2.840.10008.1.2",
                        implementation_class_uid="1.2")


def test_deflated_pixel_data_is_found() -> None:
    ct = make_ct_study(n_slices=1, rows=16, cols=16, seed=9)[0]
    with_pixels = to_bytes(encode(ct, DeflatedExplicitVRLittleEndian))
    assert parse_part10(io.BytesIO(with_pixels), len(with_pixels)).pixel_vr == "OW"
    del ct.PixelData
    without = to_bytes(encode(ct, DeflatedExplicitVRLittleEndian))
    assert parse_part10(io.BytesIO(without), len(without)).pixel_vr is None
