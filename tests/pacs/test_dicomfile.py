"""Reading Part 10 objects: completeness, pixel data layout, bare data sets, the File Meta Information."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from pacs.dicomfile import (
    ParsedInstance,
    bare_dataset_identity,
    dataset_offset,
    detect_transfer_syntax,
    file_meta_bytes,
    parse_part10,
)
from pacs.errors import NotDicom
from tests.factories import edge_case_corpus, encode, make_ct_study, make_multiframe, to_bytes, truncated_bytes


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


def _parse(data: bytes) -> ParsedInstance:
    return parse_part10(io.BytesIO(data), len(data))


@pytest.mark.parametrize("name", ["reportsi.dcm", "reportsi_with_empty_number_tags.dcm"])
def test_a_data_set_ending_in_an_undefined_length_sequence_is_complete(name: str) -> None:
    """Seen in issue 12: SR documents whose last element is a sequence of undefined length were
    refused as 'truncated or has trailing bytes after its last element'."""
    data = Path(get_testdata_file(name)).read_bytes()
    parsed = _parse(data)
    assert parsed.pixel_vr is None and "ContentSequence" in parsed.dataset


def test_an_rt_structure_set_nested_four_deep_is_complete() -> None:
    for name, data in edge_case_corpus():
        if name.startswith("rtstruct-ending-in-sequences"):
            assert "ROIContourSequence" in _parse(data).dataset, name


def test_a_value_cut_short_is_named() -> None:
    data = Path(get_testdata_file("rtplan_truncated.dcm")).read_bytes()
    with pytest.raises(NotDicom, match=r"truncated inside element \(300A,00B0\)"):
        _parse(data)
    ds = make_ct_study(n_slices=1, rows=16, cols=16, seed=9)[0]
    with pytest.raises(NotDicom, match="truncated inside the pixel data"):
        _parse(truncated_bytes(ds))


def test_a_cut_inside_an_element_header_is_noticed() -> None:
    """pydicom skips fewer than 8 trailing bytes; the parse says they are there."""
    complete = Path(get_testdata_file("rtplan.dcm")).read_bytes()
    assert not _parse(complete).partial_tail
    assert _parse(complete + b"\x0a\x30\x00").partial_tail


def _native_ct(**changes: object) -> bytes:
    ds = make_ct_study(n_slices=1, rows=16, cols=16, seed=10)[0]
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def test_short_native_pixel_data_is_reported() -> None:
    ok = _parse(_native_ct())
    assert ok.pixel_problem is None and [f.length for f in ok.frames] == [512]
    short = _parse(_native_ct(PixelData=b"\x00" * 300))
    assert short.pixel_problem == ("the pixel data holds 300 bytes where Rows 16 x Columns 16 x 1 samples x 16 bits "
                                   "x 1 frames need 512")
    assert short.frames == []
    frames = _parse(_native_ct(NumberOfFrames=2))
    assert frames.pixel_problem is not None and "x 2 frames need 1024" in frames.pixel_problem


def test_encapsulated_pixel_data_without_enough_fragments_is_reported() -> None:
    mf = encode(make_multiframe(n_frames=3, rows=16, cols=24), RLELossless)
    assert _parse(to_bytes(mf)).pixel_problem is None
    two = copy.deepcopy(mf)
    two.PixelData = encapsulate([b"\x00" * 10, b"\x00" * 10], has_bot=False)
    assert _parse(to_bytes(two)).pixel_problem == "the encapsulated pixel data has 2 fragments for 3 frames"
    none = copy.deepcopy(mf)
    none.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"  # the Basic Offset Table item alone
    assert _parse(to_bytes(none)).pixel_problem == "the encapsulated pixel data has no fragments"


def test_elements_after_the_pixel_data_are_read() -> None:
    data = dict(edge_case_corpus())["after-pixel-data-explicit-le"]
    ds = _parse(data).dataset
    assert "PixelData" not in ds and 0xFFFCFFFC in ds and 0x7FE11010 in ds


def test_dataset_offset_follows_the_meta_elements() -> None:
    data = _native_ct()
    assert dataset_offset(data) == 144 + int.from_bytes(data[140:144], "little")
    assert dataset_offset(data[dataset_offset(data):]) == 0  # a bare data set starts at once
    assert dataset_offset(data[:150]) == 150  # a head too short for the meta: all of it is meta


@pytest.mark.parametrize(("ts", "first_bytes"), [
    (ExplicitVRLittleEndian, b"\x08\x00\x05\x00CS\x0a\x00"),
    (ImplicitVRLittleEndian, b"\x08\x00\x05\x00\x0a\x00\x00\x00"),
    (ExplicitVRBigEndian, b"\x00\x08\x00\x05CS\x00\x0a"),
    (ExplicitVRLittleEndian, b"\x09\x00\x10\x00LO\x04\x00"),  # a private creator first
])
def test_transfer_syntax_of_a_bare_data_set_is_detected_as_dcmtk_does(ts: str, first_bytes: bytes) -> None:
    assert detect_transfer_syntax(first_bytes) == ts


@pytest.mark.parametrize(("first_bytes", "reason"), [
    (b"\x00\x08\x00\x05\x0a\x00\x00\x00", "implicit VR big endian"),
    (b"This is ", "nor a DICOM data set"),
    (b"\x08", "not a DICOM Part 10 file"),
])
def test_what_is_no_data_set_is_refused_with_its_reason(first_bytes: bytes, reason: str) -> None:
    with pytest.raises(NotDicom, match=reason):
        detect_transfer_syntax(first_bytes)


def test_bare_data_set_identity_and_compressed_pixel_data() -> None:
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        ds = encode(make_ct_study(n_slices=1, rows=16, cols=16, seed=11)[0], ts)
        data = to_bytes(ds)
        bare = data[dataset_offset(data):]
        assert bare_dataset_identity(io.BytesIO(bare), len(bare)) == (ds.SOPClassUID, ds.SOPInstanceUID, ts)
    compressed = to_bytes(encode(make_ct_study(n_slices=1, rows=16, cols=16, seed=11)[0], RLELossless))
    bare = compressed[dataset_offset(compressed):]
    with pytest.raises(NotDicom, match="pixel data is compressed"):
        bare_dataset_identity(io.BytesIO(bare), len(bare))
