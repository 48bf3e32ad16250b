"""Checks on the synthetic test-data factory every other suite relies on."""

from __future__ import annotations

import io
import re
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments, generate_frames, parse_basic_offsets
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut
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

from tests import factories as f

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
DCIODVFY = "/usr/bin/dciodvfy"


def _reread(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(f.to_bytes(ds)))


def _volume_hu(datasets: list[Dataset]) -> tuple[np.ndarray, list[float]]:
    """HU volume ordered by slice position (superior first), with the z of each slice."""
    ordered = sorted(datasets, key=lambda d: -float(d.ImagePositionPatient[2]))
    vol = np.stack([apply_modality_lut(d.pixel_array, d) for d in ordered])
    return vol, [float(d.ImagePositionPatient[2]) for d in ordered]


def _voxel(ds: Dataset, zs: list[float], point: tuple[float, float, float]) -> tuple[int, int, int]:
    x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    k = int(np.argmin([abs(z - point[2]) for z in zs]))
    return k, round((point[1] - y0) / row_spacing), round((point[0] - x0) / col_spacing)


def _sources() -> dict[str, Dataset]:
    return {
        "ct": f.make_ct_study(n_slices=1, rows=48, cols=40, lesion="random")[0],
        "ct_signed": f.make_ct_study(n_slices=1, rows=32, cols=32, signed=True)[0],
        "mr": f.make_ct_study(n_slices=1, rows=32, cols=32, modality="MR")[0],
        "gray8": f.make_gray8(33, 41),  # odd sizes; JPEG 2000 here needs >= 32
        "rgb": f.make_rgb(33, 47),
        "palette": f.make_palette(32, 32),
        "multiframe": f.make_multiframe(3, 32, 35),
    }


SOURCES = _sources()


# --------------------------------------------------------------------------------------------
# determinism and identity


def test_same_seed_gives_same_uids_and_pixels() -> None:
    a = f.make_ct_case(n_slices=4, lesion="random", seed=5)
    b = f.make_ct_case(n_slices=4, lesion="random", seed=5)
    assert a.study_uid == b.study_uid
    assert a.lesion == b.lesion
    assert [d.SOPInstanceUID for d in a.datasets] == [d.SOPInstanceUID for d in b.datasets]
    assert [d.SeriesInstanceUID for d in a.datasets] == [d.SeriesInstanceUID for d in b.datasets]
    assert all(x.PixelData == y.PixelData for x, y in zip(a.datasets, b.datasets, strict=True))
    assert f.to_bytes(a.datasets[0]) == f.to_bytes(b.datasets[0])


def test_other_seed_or_arguments_give_other_uids_and_pixels() -> None:
    base = f.make_ct_case(f.PATIENTS[0], n_slices=2, seed=1)
    other_seed = f.make_ct_case(f.PATIENTS[0], n_slices=2, seed=2)
    other_size = f.make_ct_case(f.PATIENTS[0], n_slices=3, seed=1)
    assert len({base.study_uid, other_seed.study_uid, other_size.study_uid}) == 3
    assert base.datasets[0].PixelData != other_seed.datasets[0].PixelData


def test_uids_are_valid_and_distinct() -> None:
    case = f.make_ct_case(n_slices=5, series_count=3)
    uids = [d.SOPInstanceUID for d in case.datasets]
    assert len(set(uids)) == 15
    for ds in case.datasets:
        for value in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
            assert UID_RE.match(value) and len(value) <= 64, value
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == f.CT_IMAGE_STORAGE
    assert UID_RE.match(f.IMPLEMENTATION_CLASS_UID)


def test_series_share_study_and_frame_of_reference() -> None:
    case = f.make_ct_case(n_slices=3, series_count=2)
    assert len(case.series_uids) == 2
    assert {d.SeriesInstanceUID for d in case.datasets} == set(case.series_uids)
    assert {d.StudyInstanceUID for d in case.datasets} == {case.study_uid}
    assert len({d.FrameOfReferenceUID for d in case.datasets}) == 1
    assert sorted({int(d.SeriesNumber) for d in case.datasets}) == [1, 2]


def test_explicit_study_uid_and_accession_are_used() -> None:
    datasets = f.make_ct_study(n_slices=2, study_uid="1.2.826.0.1.3680043.8.498.1", accession="ACC42")
    assert {d.StudyInstanceUID for d in datasets} == {"1.2.826.0.1.3680043.8.498.1"}
    assert {d.AccessionNumber for d in datasets} == {"ACC42"}


# --------------------------------------------------------------------------------------------
# geometry, pixel values and lesions


def test_ct_geometry_and_attributes() -> None:
    datasets = f.make_ct_study(n_slices=6, rows=80, cols=100)
    first = datasets[0]
    assert first.Modality == "CT" and first.ImageType[2] == "AXIAL"
    assert first.Rows == 80 and first.Columns == 100
    fov = float(first.PixelSpacing[1]) * first.Columns
    assert abs(fov - 350.0) < 0.5
    zs = [float(d.ImagePositionPatient[2]) for d in datasets]
    assert all(b - a == pytest.approx(-float(first.SliceThickness)) for a, b in zip(zs, zs[1:], strict=False))
    assert [float(d.SliceLocation) for d in datasets] == zs
    assert [int(d.InstanceNumber) for d in datasets] == list(range(1, 7))
    assert first.RescaleIntercept == -1024 and first.RescaleSlope == 1 and first.RescaleType == "HU"
    assert first.PixelRepresentation == 0 and first.BitsStored == 12 and first.HighBit == 11
    assert first.SpecificCharacterSet == "ISO_IR 192"


def test_tissue_values_are_plausible_ct_numbers() -> None:
    datasets = f.make_ct_study(n_slices=3, rows=128, cols=128)
    hu = apply_modality_lut(datasets[1].pixel_array, datasets[1])
    assert abs(np.median(hu[:4, :4]) + 1000) < 30  # air in the corner
    assert abs(np.median(hu[34:38, 60:68]) - 40) < 30  # anterior mediastinum: soft tissue
    assert hu.max() > 500  # spine
    assert (hu < -700).sum() > 0.3 * hu.size  # air and lungs


def test_signed_variant_stores_hu() -> None:
    ds = f.make_ct_study(n_slices=1, signed=True)[0]
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16 and ds.RescaleIntercept == 0
    arr = ds.pixel_array
    assert arr.dtype == np.int16 and arr.min() < -900


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_given_lesion_is_bright_at_its_centre(modality: Literal["CT", "MR"]) -> None:
    lesion = f.Lesion((0.0, -80.0, 0.0), 15.0)
    case = f.make_ct_case(n_slices=21, rows=128, cols=128, lesion=lesion, modality=modality, slice_thickness=2.5)
    assert case.lesion == lesion
    vol, zs = _volume_hu(case.datasets)
    k, r, c = _voxel(case.datasets[0], zs, lesion.center_mm)
    inside = vol[k, r - 1 : r + 2, c - 1 : c + 2].mean()
    for dx, dy in ((1.6, 0), (-1.6, 0), (0, 1.6), (0, -1.6)):
        point = (lesion.center_mm[0] + dx * lesion.radius_mm, lesion.center_mm[1] + dy * lesion.radius_mm, 0.0)
        _, ro, co = _voxel(case.datasets[0], zs, point)
        assert inside - vol[k, ro - 1 : ro + 2, co - 1 : co + 2].mean() > 80
    if modality == "CT":
        assert abs(inside - lesion.hu) < 20
    normal = f.make_ct_case(n_slices=21, rows=128, cols=128, modality=modality, slice_thickness=2.5)
    normal_vol, _ = _volume_hu(normal.datasets)
    assert inside - normal_vol[k, r - 1 : r + 2, c - 1 : c + 2].mean() > 80


@pytest.mark.parametrize("seed", range(6))
def test_random_lesion_lies_in_the_body_and_is_hyperdense(seed: int) -> None:
    case = f.make_ct_case(n_slices=20, rows=96, cols=96, lesion="random", seed=seed)
    lesion = case.lesion
    assert lesion is not None
    assert 0.04 * 350 - 0.1 <= lesion.radius_mm <= 0.08 * 350 + 0.1
    vol, zs = _volume_hu(case.datasets)
    assert min(zs) <= lesion.center_mm[2] <= max(zs)
    k, r, c = _voxel(case.datasets[0], zs, lesion.center_mm)
    assert 0 <= r < 96 and 0 <= c < 96
    centre = vol[k, r - 1 : r + 2, c - 1 : c + 2].mean()
    assert abs(centre - lesion.hu) < 25
    ring = []
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        point = (
            lesion.center_mm[0] + 1.5 * lesion.radius_mm * np.cos(angle),
            lesion.center_mm[1] + 1.5 * lesion.radius_mm * np.sin(angle),
            lesion.center_mm[2],
        )
        _, ro, co = _voxel(case.datasets[0], zs, point)
        ring.append(vol[k, ro, co])
    assert centre - float(np.median(ring)) > 80


def test_mr_override() -> None:
    case = f.make_ct_case(n_slices=3, modality="MR", lesion="random", seed=2)
    ds = case.datasets[0]
    assert ds.SOPClassUID == f.MR_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "MR" and "RescaleIntercept" not in ds
    assert ds.ScanningSequence == "SE" and ds.MRAcquisitionType == "2D"
    with pytest.raises(ValueError):
        f.make_ct_case(modality="US")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# patients and study sets


def test_patients_include_non_ascii_names() -> None:
    assert len(f.PATIENTS) >= 6
    assert sum(1 for p in f.PATIENTS if not p.name.isascii()) >= 4
    assert any("=" in p.name for p in f.PATIENTS)
    assert len({p.patient_id for p in f.PATIENTS}) == len(f.PATIENTS)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("patient", f.PATIENTS, ids=[p.patient_id for p in f.PATIENTS])
def test_non_ascii_names_survive_a_file_roundtrip(patient: f.PatientSpec, syntax: str, tmp_path: Path) -> None:
    ds = f.make_ct_study(patient, n_slices=1, rows=16, cols=16, transfer_syntax=syntax)[0]
    [path] = f.write_files([ds], tmp_path)
    back = pydicom.dcmread(path)
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert str(back.PatientName) == patient.name
    assert back.PatientID == patient.patient_id
    assert back.get("IssuerOfPatientID") == patient.issuer
    assert patient.name.encode("utf-8") in path.read_bytes()


def test_study_set_spreads_over_patients_dates_and_modalities() -> None:
    cases = f.make_study_set(n_studies=20, n_slices=2, rows=16, cols=16, seed=3)
    assert len(cases) == 20
    assert len({c.study_uid for c in cases}) == 20
    by_patient: dict[str, list[f.CtCase]] = {}
    for c in cases:
        by_patient.setdefault(c.patient.patient_id, []).append(c)
        assert {d.StudyInstanceUID for d in c.datasets} == {c.study_uid}
        assert {d.Modality for d in c.datasets} == {c.modality}
        assert {d.PatientID for d in c.datasets} == {c.patient.patient_id}
    assert len(by_patient) == len(f.PATIENTS)
    assert all(len(v) >= 2 and len({c.study_date for c in v}) == len(v) for v in by_patient.values())
    modalities = [c.modality for c in cases]
    assert modalities.count("CT") > modalities.count("MR") > 0
    with_lesion = [c for c in cases if c.lesion is not None]
    assert 0 < len(with_lesion) < len(cases)
    again = f.make_study_set(n_studies=20, n_slices=2, rows=16, cols=16, seed=3)
    assert [c.study_uid for c in again] == [c.study_uid for c in cases]
    assert [c.lesion for c in again] == [c.lesion for c in cases]


def test_study_set_modality_override() -> None:
    cases = f.make_study_set(n_studies=3, n_slices=1, rows=16, cols=16, modalities=["MR"])
    assert {c.modality for c in cases} == {"MR"}
    assert {c.datasets[0].SOPClassUID for c in cases} == {f.MR_IMAGE_STORAGE}


# --------------------------------------------------------------------------------------------
# transfer syntaxes

LOSSLESS = [uid for uid in f.LOSSLESS_TRANSFER_SYNTAXES if f.can_encode(uid)]


@pytest.mark.parametrize("syntax", LOSSLESS, ids=[UID(u).name for u in LOSSLESS])
@pytest.mark.parametrize("source", list(SOURCES))
def test_lossless_encodings_roundtrip(source: str, syntax: UID) -> None:
    original = SOURCES[source]
    encoded = f.encode(original, syntax)
    back = _reread(encoded)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.SOPInstanceUID == original.SOPInstanceUID
    assert back.PhotometricInterpretation == original.PhotometricInterpretation
    assert np.array_equal(back.pixel_array, original.pixel_array)
    # and back again to native little endian from the encoded form
    assert np.array_equal(f.encode(back, ExplicitVRLittleEndian).pixel_array, original.pixel_array)
    assert "PixelData" not in original or original.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize("syntax", [s for s in LOSSLESS if UID(s).is_compressed])
def test_encapsulation_has_offset_table_and_one_even_fragment_per_frame(syntax: UID) -> None:
    original = SOURCES["multiframe"]
    back = _reread(f.encode(original, syntax))
    elem = back["PixelData"]
    assert elem.VR == "OB" and elem.is_undefined_length
    buffer = io.BytesIO(back.PixelData)
    offsets = parse_basic_offsets(buffer)
    assert len(offsets) == 3 and offsets[0] == 0
    fragments = list(generate_fragments(buffer))
    assert len(fragments) == 3
    assert all(len(frag) % 2 == 0 for frag in fragments)
    positions = np.cumsum([0] + [len(frag) + 8 for frag in fragments[:-1]])
    assert list(positions) == offsets
    assert len(list(generate_frames(back.PixelData, number_of_frames=3))) == 3


def test_big_endian_swaps_words_and_palette_luts() -> None:
    palette = SOURCES["palette"]
    back = _reread(f.encode(palette, ExplicitVRBigEndian))
    for colour in ("Red", "Green", "Blue"):
        le = np.frombuffer(palette[f"{colour}PaletteColorLookupTableData"].value, "<u2")
        be = np.frombuffer(back[f"{colour}PaletteColorLookupTableData"].value, ">u2")
        assert np.array_equal(le, be)
    raw = f.to_bytes(f.encode(SOURCES["ct"], ExplicitVRBigEndian))
    assert b"\x7f\xe0\x00\x10OW" in raw


def test_deflated_is_really_deflated() -> None:
    ds = f.make_ct_study(n_slices=1, rows=64, cols=64)[0]
    deflated = f.to_bytes(f.encode(ds, DeflatedExplicitVRLittleEndian))
    assert len(deflated) < len(f.to_bytes(ds))
    assert b"CT THORAX" not in deflated[300:]


@pytest.mark.parametrize("source", ["gray8", "rgb"])
def test_jpeg_baseline_is_close(source: str) -> None:
    original = SOURCES[source]
    back = _reread(f.encode(original, JPEGBaseline8Bit))
    assert back.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert back.LossyImageCompression == "01"
    expected_pi = "YBR_FULL_422" if source == "rgb" else "MONOCHROME2"
    assert back.PhotometricInterpretation == expected_pi
    diff = np.abs(back.pixel_array.astype(np.int32) - original.pixel_array.astype(np.int32))
    assert diff.mean() < 4


@pytest.mark.parametrize("source", ["ct", "multiframe", "palette"])
def test_jpeg_baseline_refuses_what_it_cannot_hold(source: str) -> None:
    with pytest.raises(f.UnsupportedEncoding):
        f.encode(SOURCES[source], JPEGBaseline8Bit)


def test_tiny_images_are_refused_by_jpeg_2000_not_crashed() -> None:
    with pytest.raises(f.UnsupportedEncoding, match=">= 32"):
        f.encode(f.make_gray8(31, 17), JPEG2000Lossless)
    assert np.array_equal(f.encode(f.make_gray8(31, 17), RLELossless).pixel_array, f.make_gray8(31, 17).pixel_array)


def test_unsupported_syntaxes_raise_clearly() -> None:
    if f.can_encode(HTJ2KLossless):  # an HTJ2K encoder is installed: then it must round-trip
        assert np.array_equal(f.encode(SOURCES["ct"], HTJ2KLossless).pixel_array, SOURCES["ct"].pixel_array)
        return
    with pytest.raises(f.UnsupportedEncoding, match="High-Throughput"):
        f.encode(SOURCES["ct"], HTJ2KLossless)
    assert not issubclass(f.UnsupportedEncoding, NotImplementedError)


def test_jpeg_lossless_handles_full_16_bit_range() -> None:
    ds = f.make_multiframe(2, 24, 24)
    ds.BitsStored, ds.HighBit = 16, 15
    arr = np.random.default_rng(0).integers(0, 65536, (2, 24, 24), dtype=np.uint16)
    arr[0, 0, :5] = [0, 32768, 0, 65535, 32767]  # difference 32768 is category 16 with no extra bits
    ds.PixelData = arr.tobytes()
    assert np.array_equal(f.encode(ds, JPEGLosslessSV1).pixel_array, arr)


@pytest.mark.parametrize("source", ["ct", "ct_signed", "rgb", "multiframe"])
def test_jpeg_lossless_decodes_with_dcmtk(source: str, tmp_path: Path) -> None:
    original = SOURCES[source]
    [path] = f.write_files([f.encode(original, JPEGLosslessSV1)], tmp_path)
    out = tmp_path / "decoded.dcm"
    subprocess.run(["dcmdjpeg", str(path), str(out)], check=True, capture_output=True)
    assert np.array_equal(pydicom.dcmread(out).pixel_array, original.pixel_array)


def test_transfer_syntax_argument_of_generators() -> None:
    ds = f.make_ct_study(n_slices=1, transfer_syntax=JPEGLosslessSV1)[0]
    assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    rgb = f.make_rgb(transfer_syntax=JPEGBaseline8Bit)
    assert rgb.PhotometricInterpretation == "YBR_FULL_422"


def test_new_instance_uid_option() -> None:
    ds = SOURCES["gray8"]
    lossy = f.encode(ds, JPEGBaseline8Bit, new_instance_uid=True)
    assert lossy.SOPInstanceUID != ds.SOPInstanceUID
    assert lossy.file_meta.MediaStorageSOPInstanceUID == lossy.SOPInstanceUID


# --------------------------------------------------------------------------------------------
# other image kinds


def test_multiframe_frames_differ_and_are_indexed() -> None:
    ds = f.make_multiframe(n_frames=10, rows=32, cols=40)
    assert ds.SOPClassUID == f.MULTIFRAME_GRAY_WORD_SC_STORAGE and ds.NumberOfFrames == 10
    arr = ds.pixel_array
    assert arr.shape == (10, 32, 40)
    assert np.array_equal(arr, f.multiframe_pixels(10, 32, 40))
    assert [int(arr[i, 0, 0]) for i in range(10)] == list(range(10))
    flat = {arr[i].tobytes() for i in range(10)}
    assert len(flat) == 10


def test_rgb_and_palette_instances() -> None:
    rgb = SOURCES["rgb"]
    assert rgb.PhotometricInterpretation == "RGB" and rgb.SamplesPerPixel == 3 and rgb.PlanarConfiguration == 0
    assert np.array_equal(rgb.pixel_array, f.rgb_pixels(33, 47))
    pal = SOURCES["palette"]
    assert pal.PhotometricInterpretation == "PALETTE COLOR"
    assert list(pal.RedPaletteColorLookupTableDescriptor) == [256, 0, 16]
    colour = apply_color_lut(pal.pixel_array, pal)
    assert colour.shape == (32, 32, 3) and colour.dtype == np.uint16 and colour.max() > 60000


# --------------------------------------------------------------------------------------------
# files and broken input


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1])
def test_to_bytes_is_part10_in_the_datasets_syntax(syntax: str) -> None:
    raw = f.to_bytes(f.encode(SOURCES["ct"], syntax))
    assert raw[:128] == bytes(128) and raw[128:132] == b"DICM"
    back = pydicom.dcmread(io.BytesIO(raw))
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.file_meta.ImplementationClassUID == f.IMPLEMENTATION_CLASS_UID


def test_write_files(tmp_path: Path) -> None:
    datasets = f.make_ct_study(n_slices=4, rows=16, cols=16)
    paths = f.write_files(datasets, tmp_path / "study")
    assert [p.name for p in paths] == ["00000.dcm", "00001.dcm", "00002.dcm", "00003.dcm"]
    assert [pydicom.dcmread(p).SOPInstanceUID for p in paths] == [d.SOPInstanceUID for d in datasets]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian, JPEGLosslessSV1])
def test_truncated_bytes(syntax: str) -> None:
    ds = f.encode(f.make_ct_study(n_slices=1)[0], syntax)
    full = f.to_bytes(ds)
    tag = b"\x7f\xe0\x00\x10" if syntax == ExplicitVRBigEndian else b"\xe0\x7f\x10\x00"
    pixel_at = full.rfind(tag)
    mid_pixels = f.truncated_bytes(ds)
    mid_header = f.truncated_bytes(ds, where="header")
    mid_meta = f.truncated_bytes(ds, where="file_meta")
    assert full.startswith(mid_pixels) and pixel_at + 12 < len(mid_pixels) < len(full)
    assert full.startswith(mid_header) and 200 < len(mid_header) < pixel_at
    meta_end = 144 + int.from_bytes(full[140:144], "little")
    assert full.startswith(mid_meta) and 132 < len(mid_meta) < meta_end
    with pytest.raises(Exception), warnings.catch_warnings():  # noqa: B017 - any read/decode failure
        warnings.simplefilter("ignore")
        pydicom.dcmread(io.BytesIO(mid_pixels)).pixel_array  # noqa: B018


def test_without_removes_and_leaves_the_original_alone() -> None:
    ds = f.make_ct_study(n_slices=1)[0]
    stripped = f.without(ds, "StudyInstanceUID")
    assert "StudyInstanceUID" not in stripped and "StudyInstanceUID" in ds
    no_syntax = f.without(ds, "TransferSyntaxUID")
    assert "TransferSyntaxUID" not in no_syntax.file_meta and "TransferSyntaxUID" in ds.file_meta


@pytest.mark.parametrize("keyword", ["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_with_bad_uid_is_written_verbatim(keyword: str) -> None:
    ds = f.make_ct_study(n_slices=1)[0]
    bad = f.with_bad_uid(ds, keyword)
    assert ds[keyword].value != "1.2.3/../../etc"
    raw = f.to_bytes(bad)
    assert b"1.2.3/../../etc" in raw
    with pydicom_config.disable_value_validation():
        back = pydicom.dcmread(io.BytesIO(raw))
        assert back[keyword].value == "1.2.3/../../etc"
        if keyword == "SOPInstanceUID":
            assert back.file_meta.MediaStorageSOPInstanceUID == "1.2.3/../../etc"


# --------------------------------------------------------------------------------------------
# validity and speed


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize(
    "kind",
    ["ct", "ct_signed", "ct_jpeg_lossless", "ct_jpeg_ls", "mr", "gray8", "rgb", "rgb_jpeg", "palette", "multiframe"],
)
def test_dciodvfy_finds_no_errors(kind: str, tmp_path: Path) -> None:
    makers: dict[str, Callable[[], Dataset]] = {
        "ct": lambda: f.make_ct_study(n_slices=3, lesion="random")[1],
        "ct_signed": lambda: f.make_ct_study(n_slices=3, signed=True)[1],
        "ct_jpeg_lossless": lambda: f.make_ct_study(n_slices=1, transfer_syntax=JPEGLosslessSV1)[0],
        "ct_jpeg_ls": lambda: f.make_ct_study(n_slices=1, transfer_syntax=JPEGLSLossless)[0],
        "mr": lambda: f.make_ct_study(n_slices=3, modality="MR")[1],
        "gray8": f.make_gray8,
        "rgb": f.make_rgb,
        "rgb_jpeg": lambda: f.make_rgb(transfer_syntax=JPEGBaseline8Bit),
        "palette": f.make_palette,
        "multiframe": f.make_multiframe,
    }
    ds = makers[kind]()
    [path] = f.write_files([ds], tmp_path)
    assert _dciodvfy_errors(path) == []


@pytest.mark.slow
def test_large_study_is_fast() -> None:
    start = time.perf_counter()
    case = f.make_ct_case(n_slices=200, rows=512, cols=512, lesion="random", seed=11)
    elapsed = time.perf_counter() - start
    assert len(case.datasets) == 200
    assert case.datasets[0].pixel_array.shape == (512, 512)
    assert elapsed < 15, f"took {elapsed:.1f} s"
