"""pacs.transcode: stored objects re-encoded as Explicit/Implicit VR Little Endian, pixels unchanged."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from pacs.errors import Conflict, NotDicom
from pacs.transcode import to_transfer_syntax
from tests.factories import encode, make_ct_study, make_gray8, make_rgb, to_bytes

SOURCES = [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless,
           JPEGLosslessSV1, HTJ2KLossless, ImplicitVRLittleEndian]


@pytest.fixture(scope="module")
def ct() -> pydicom.Dataset:
    return make_ct_study(n_slices=1, rows=32, cols=48, seed=9)[0]


@pytest.mark.parametrize("source", SOURCES, ids=lambda ts: ts.name)
@pytest.mark.parametrize("target", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=lambda ts: ts.name)
def test_lossless_sources_round_trip(ct: pydicom.Dataset, source: str, target: str) -> None:
    out = pydicom.dcmread(io.BytesIO(to_transfer_syntax(to_bytes(encode(ct, source)), target)))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == ct.SOPInstanceUID  # a lossless re-encoding is the same instance
    assert np.array_equal(out.pixel_array, ct.pixel_array)
    assert out.PatientName == ct.PatientName and out.ImagePositionPatient == ct.ImagePositionPatient


def test_same_syntax_is_returned_unchanged(ct: pydicom.Dataset) -> None:
    data = to_bytes(ct)
    assert to_transfer_syntax(data, ExplicitVRLittleEndian) is data


def test_lossy_colour_source_is_decoded() -> None:
    rgb = make_rgb(seed=2)
    out = pydicom.dcmread(io.BytesIO(to_transfer_syntax(to_bytes(encode(rgb, JPEGBaseline8Bit)),
                                                         ExplicitVRLittleEndian)))
    assert out.PhotometricInterpretation == "RGB" and out.pixel_array.shape == rgb.pixel_array.shape
    assert np.abs(out.pixel_array.astype(int) - rgb.pixel_array.astype(int)).mean() < 8
    assert out.LossyImageCompression == "01"  # still marked as lossy


def test_errors() -> None:
    gray = to_bytes(make_gray8(seed=1))
    with pytest.raises(Conflict, match="only to Explicit or Implicit"):
        to_transfer_syntax(gray, JPEGLSLossless)
    with pytest.raises(NotDicom):
        to_transfer_syntax(b"not dicom at all" * 20, ExplicitVRLittleEndian)
    ds = encode(make_gray8(seed=1), JPEGLSLossless)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder here
    with pytest.raises(Conflict, match="cannot decompress"):
        to_transfer_syntax(to_bytes(ds), ExplicitVRLittleEndian)
