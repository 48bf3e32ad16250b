"""Differential test of ingest against pydicom: every file of pydicom's bundled test data and of
the factory's edge-case corpus goes through the one ingest path, by import and as a data set
received over the network (no File Meta Information: ``Part10Source.from_prefixed_file`` behind
the archive's meta). For each stored instance the stored bytes equal the received ones, and the
indexed attributes, the DICOM JSON metadata and every frame equal what pydicom reads from them.

"What pydicom reads" is its full read (``dcmread``) converted element by element in its default,
lenient mode (``DataElement.to_json_dict``); an element pydicom cannot convert at all is left out.
The pixel data element is always a BulkDataURI in the archive's metadata, with the VR pydicom gives
it. Index values are the text of those values with NUL characters dropped, cut to the column size.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.multival import MultiValue
from sqlalchemy import Engine, select

from pacs.access import AccessScope
from pacs.dicomfile import dataset_offset
from pacs.dimse.store import archive_meta
from pacs.index.db import make_engine, upgrade
from pacs.index.models import Instance, Patient, Series, Study
from pacs.index.records import PLACEHOLDER_PATIENT_PREFIX
from pacs.ingest import IngestResult, IngestService, Outcome, Part10Source
from pacs.retrieve import find_instances, read_frames
from pacs.storage.filesystem import FilesystemStore
from tests.factories import edge_case_corpus

_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
PYDICOM_FILES = sorted(p for p in map(Path, get_testdata_files()) if p.is_file())

_NOT_DICOM = "not a DICOM Part 10 file (no DICM prefix or file meta information) nor a DICOM data set"
_NO_STUDY = "StudyInstanceUID is missing"
#: pydicom's test files that ingest refuses, with the reason it gives: none of them holds an
#: instance an archive could keep (no UIDs: DICOMDIRs, fragments of tests; cut short; not DICOM).
REFUSED: dict[str, tuple[Outcome, str]] = {
    "README.txt": (Outcome.NOT_DICOM, _NOT_DICOM),
    "crayons.icc": (Outcome.NOT_DICOM, _NOT_DICOM),
    "rtplan.dump": (Outcome.NOT_DICOM, _NOT_DICOM),
    "rtstruct.dump": (Outcome.NOT_DICOM, _NOT_DICOM),
    "test1.json": (Outcome.NOT_DICOM, _NOT_DICOM),
    "test_PN.json": (Outcome.NOT_DICOM, _NOT_DICOM),
    "zipMR.gz": (Outcome.NOT_DICOM, _NOT_DICOM),
    "dicomdirtests/README.txt": (Outcome.NOT_DICOM, _NOT_DICOM),
    "dicomdirtests/TINY_ALPHA/README": (Outcome.NOT_DICOM, _NOT_DICOM),
    "no_meta.dcm": (Outcome.NOT_DICOM, _NOT_DICOM),  # a stray byte before the first element
    "MR_truncated.dcm": (Outcome.NOT_DICOM, "the file is truncated inside the pixel data"),
    "rtplan_truncated.dcm": (Outcome.NOT_DICOM, "the file is truncated inside element (300A,00B0)"),
    "JPEGLSNearLossless_08.dcm": (Outcome.INVALID, _NO_STUDY),
    "JPEGLSNearLossless_16.dcm": (Outcome.INVALID, _NO_STUDY),
    "SC_rgb_jls_lossy_line.dcm": (Outcome.INVALID, _NO_STUDY),
    "SC_rgb_jls_lossy_sample.dcm": (Outcome.INVALID, _NO_STUDY),
    "UN_sequence.dcm": (Outcome.INVALID, _NO_STUDY),
    "empty_charset_LEI.dcm": (Outcome.INVALID, _NO_STUDY),
    "meta_missing_tsyntax.dcm": (Outcome.INVALID, _NO_STUDY),
    "nested_priv_SQ.dcm": (Outcome.INVALID, _NO_STUDY),
    "no_meta_group_length.dcm": (Outcome.INVALID, _NO_STUDY),
    "priv_SQ.dcm": (Outcome.INVALID, _NO_STUDY),
    **{f"dicomdirtests/{name}": (Outcome.INVALID, _NO_STUDY) for name in (
        "DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-empty.dcm", "DICOMDIR-implicit", "DICOMDIR-nooffset",
        "DICOMDIR-nopatient", "DICOMDIR-reordered", "TINY_ALPHA/DICOMDIR")},
}
#: What happens to pydicom's test files whose pixel data is unusual (MR_truncated.dcm, cut inside
#: its pixel data, is in REFUSED): how many frames are served by byte range (None: the whole object
#: is decoded instead), and why.
PIXEL_DATA: dict[str, tuple[int | None, str]] = {
    "MR_small_padded.dcm": (1, "8320 bytes where 8192 are needed: stored, the frame is the first 8192"),
    "SC_rgb_small_odd.dcm": (1, "27 bytes and a pad byte: stored, one 27-byte frame"),
    "SC_rgb_small_odd_big_endian.dcm": (1, "27 bytes and a pad byte: stored, one 27-byte frame"),
    "SC_ybr_full_422_uncompressed.dcm": (1, "YBR_FULL_422 holds two samples a pixel (20000 bytes): stored"),
    "badVR.dcm": (1, "NumberOfFrames '1A' cannot be read (pydicom neither): stored, checked and ranged "
                     "as one frame, NumberOfFrames left out of the metadata"),
    "liver_1frame.dcm": (1, "BitsAllocated 1, one frame of whole bytes: stored, ranged"),
    "liver_expb_1frame.dcm": (1, "BitsAllocated 1, one frame of whole bytes: stored, ranged"),
    "image_dfl.dcm": (None, "deflated: stored, frames cannot be ranged"),
    "JPEG2000-embedded-sequence-delimiter.dcm": (1, "a fragment holds the delimiter's bytes: stored, one frame"),
    "J2K_pixelrep_mismatch.dcm": (1, "header and codestream disagree on signedness: stored as received"),
    "examples_ybr_color.dcm": (30, "30 frames, one fragment each: stored, 30 ranged frames"),
    "SC_rgb_jpeg.dcm": (1, "the meta says explicit VR, the data set is implicit VR (pydicom switches): stored"),
}
#: pydicom's data sets without File Meta Information: imported behind the archive's own.
BARE: dict[str, str] = {
    "ExplVR_BigEndNoMeta.dcm": "1.2.840.10008.1.2.2",
    "ExplVR_LitEndNoMeta.dcm": "1.2.840.10008.1.2.1",
    "rtstruct.dcm": "1.2.840.10008.1.2",
}
CORPUS = edge_case_corpus()


def _name(path: Path) -> str:
    return str(path.relative_to(_TEST_FILES))


def _file_meta(sop_class: str, sop_instance: str, ts: str) -> bytes:
    return archive_meta(sop_class, sop_instance, ts, "")


@dataclass
class FreshArchive:
    """An empty index (a copy of a migrated SQLite template) and object store."""

    engine: Engine
    store: FilesystemStore
    ingest: IngestService


@pytest.fixture(scope="module")
def index_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "index.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def fresh(index_template: Path, tmp_path: Path) -> Iterator[Callable[[], FreshArchive]]:
    engines: list[Engine] = []

    def make() -> FreshArchive:
        root = tmp_path / f"archive{len(engines)}"
        root.mkdir()
        shutil.copy(index_template, root / "index.sqlite3")
        engine = make_engine(f"sqlite:///{root / 'index.sqlite3'}")
        engines.append(engine)
        store = FilesystemStore(root / "objects")
        return FreshArchive(engine, store, IngestService(engine, store))

    yield make
    for engine in engines:
        engine.dispose()


# --- what pydicom reads ----------------------------------------------------------------------

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


@dataclass
class Reference:
    columns: dict[str, Any]
    metadata: dict[str, Any]
    frames: list[bytes] | None  # None: frames cannot be ranged (deflated, bit-packed frames)


def _pydicom(part10: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(part10))


def reference(part10: bytes, prefix: str) -> Reference:
    ds = _pydicom(part10)
    pixel_tag = next((t for t in _PIXEL_TAGS if t in ds), None)
    frames = _reference_frames(ds, pixel_tag) if pixel_tag is not None else []
    metadata: dict[str, Any] = {}
    pixel_vr = None
    if pixel_tag is not None:
        pixel_vr = ds[pixel_tag].VR  # pydicom settles an ambiguous VR on access (OB or OW)
        del ds[pixel_tag]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tag in ds.keys():  # noqa: SIM118
            try:
                metadata[f"{tag:08X}"] = ds[tag].to_json_dict(lambda e: f"{prefix}/bulk/{e.tag:08X}", 1024)
            except Exception:  # noqa: S112 - an element pydicom cannot convert is left out
                continue
        if pixel_tag is not None:
            metadata[f"{pixel_tag:08X}"] = {"vr": pixel_vr, "BulkDataURI": f"{prefix}/bulk/{pixel_tag:08X}"}
        columns = _reference_columns(ds, pixel_tag is not None)
    return Reference(columns, json.loads(json.dumps(metadata)), frames)


def _reference_frames(ds: Dataset, pixel_tag: int) -> list[bytes] | None:
    """Each frame's bytes as pydicom finds them; None where they are not byte ranges of the object."""
    elem = ds[pixel_tag]
    count = _int(ds, "NumberOfFrames") or 1
    if ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return None
    if elem.is_undefined_length:
        return list(generate_frames(elem.value, number_of_frames=count))
    subsampled = ds.get("PhotometricInterpretation") in ("YBR_FULL_422", "YBR_PARTIAL_422")
    samples = 2 if subsampled else int(ds.get("SamplesPerPixel", 1))
    bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(pixel_tag) or int(ds.BitsAllocated)
    frame_bits = int(ds.Rows) * int(ds.Columns) * samples * bits
    if frame_bits % 8:
        return None
    size = frame_bits // 8
    return [elem.value[i * size:(i + 1) * size] for i in range(count)]


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    values = list(value) if isinstance(value, MultiValue) else [value]
    return "\\".join(str(v) for v in values).replace("\x00", "").strip(" ")[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        if isinstance(value, MultiValue):
            value = value[0]
        number = int(value) if value not in (None, "") else None
    except Exception:
        return None
    return number if number is not None and -(2**31) <= number < 2**31 else None


def _reference_columns(ds: Dataset, has_pixels: bool) -> dict[str, Any]:
    import hashlib

    study_uid = str(ds.StudyInstanceUID)
    patient_id = _text(ds, "PatientID", 64) or (
        PLACEHOLDER_PATIENT_PREFIX + hashlib.sha1(study_uid.encode()).hexdigest()[:12])
    return {
        "patient_id": patient_id, "issuer": _text(ds, "IssuerOfPatientID", 64),
        "patient_name": _text(ds, "PatientName", 324), "birth_date": _text(ds, "PatientBirthDate", 8),
        "sex": _text(ds, "PatientSex", 16), "study_date": _text(ds, "StudyDate", 8),
        "study_time": _text(ds, "StudyTime", 16), "accession_number": _text(ds, "AccessionNumber", 64),
        "study_id": _text(ds, "StudyID", 16), "study_description": _text(ds, "StudyDescription", 64),
        "referring_physician": _text(ds, "ReferringPhysicianName", 324),
        "institution_name": _text(ds, "InstitutionName", 64),
        "specific_charset": _text(ds, "SpecificCharacterSet", 128), "modality": _text(ds, "Modality", 16),
        "series_number": _int(ds, "SeriesNumber"), "series_description": _text(ds, "SeriesDescription", 64),
        "body_part": _text(ds, "BodyPartExamined", 64), "series_date": _text(ds, "SeriesDate", 8),
        "series_time": _text(ds, "SeriesTime", 16),
        "pps_start_date": _text(ds, "PerformedProcedureStepStartDate", 8),
        "pps_start_time": _text(ds, "PerformedProcedureStepStartTime", 16),
        "sop_class_uid": str(ds.SOPClassUID), "instance_number": _int(ds, "InstanceNumber"),
        "rows": _int(ds, "Rows"), "columns": _int(ds, "Columns"),
        "number_of_frames": _int(ds, "NumberOfFrames") or (1 if has_pixels else None),
        "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
    }


# --- what the archive holds ------------------------------------------------------------------


def _indexed(archive: FreshArchive, sop_uid: str) -> tuple[dict[str, Any], dict[str, Any], bytes, list[bytes] | None]:
    """Index columns, metadata, stored bytes and frames (None when they cannot be ranged)."""
    with archive.engine.connect() as conn:
        row = conn.execute(
            select(Patient.patient_id, Patient.issuer, Patient.patient_name, Patient.birth_date, Patient.sex,
                   Study.study_date, Study.study_time, Study.accession_number, Study.study_id,
                   Study.study_description, Study.referring_physician, Study.institution_name,
                   Study.specific_charset, Series.modality, Series.series_number, Series.series_description,
                   Series.body_part, Series.series_date, Series.series_time, Series.pps_start_date,
                   Series.pps_start_time, Instance.sop_class_uid, Instance.instance_number, Instance.rows,
                   Instance.columns, Instance.number_of_frames, Instance.transfer_syntax_uid,
                   Instance.metadata_json)
            .join(Series, Series.id == Instance.series_fk).join(Study, Study.id == Instance.study_fk)
            .join(Patient, Patient.id == Study.patient_fk).where(Instance.sop_uid == sop_uid)
        ).one()
    columns = dict(row._mapping)
    metadata = json.loads(columns.pop("metadata_json"))
    [inst] = find_instances(archive.engine, AccessScope.everything(), sop_uid=sop_uid)
    stored = archive.store.get_bytes(inst.object_key)
    frames = read_frames(archive.store, inst, range(1, len(inst.frames) + 1)) if inst.frames else None
    return columns, metadata, stored, frames


def _check_stored(archive: FreshArchive, result: IngestResult, received: bytes) -> int | None:
    """Assert ``result`` stored ``received`` as pydicom reads it; the number of ranged frames."""
    assert result.outcome is Outcome.STORED, result
    assert result.sop_instance_uid is not None
    columns, metadata, stored, frames = _indexed(archive, result.sop_instance_uid)
    assert stored == received
    prefix = (f"studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
              f"/instances/{result.sop_instance_uid}")
    expected = reference(received, prefix)
    assert columns == expected.columns
    assert metadata == expected.metadata
    if expected.frames is None or not expected.frames:
        assert frames is None
        return None
    assert frames == expected.frames
    return len(frames)


def _network_form(part10: bytes, tmp_path: Path) -> tuple[bytes, Part10Source]:
    """The data set as it arrives over DIMSE, and the source the listener makes of it: the archive's
    File Meta Information before the received data set, spooled to a file."""
    ds = _pydicom(part10)
    meta = _file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))
    spool = tmp_path / "received.bin"
    spool.write_bytes(part10[dataset_offset(part10):])
    return meta + spool.read_bytes(), Part10Source.from_prefixed_file(meta, spool, "C-STORE")


def _check_both_routes(make: Callable[[], FreshArchive], path: Path, received: bytes,
                       tmp_path: Path) -> int | None:
    """Import ``path`` and send its data set as DIMSE would; the number of ranged frames."""
    imported = make()
    [result] = imported.ingest.store_files([path], file_meta=_file_meta)
    frames = _check_stored(imported, result, received)
    # The same data set over the network, behind other File Meta Information: the same instance.
    network_bytes, source = _network_form(received, tmp_path)
    again = imported.ingest.store_source(source)
    assert again.outcome is Outcome.DUPLICATE, again
    # Into an empty archive over the network: stored as received, indexed alike.
    over_network = make()
    assert _check_stored(over_network, over_network.ingest.store_source(source), network_bytes) == frames
    return frames


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=_name)
def test_every_pydicom_test_file(path: Path, fresh: Callable[[], FreshArchive], tmp_path: Path) -> None:
    name = _name(path)
    data = path.read_bytes()
    if name in REFUSED:
        outcome, reason = REFUSED[name]
        archive = fresh()
        [result] = archive.ingest.store_files([path], file_meta=_file_meta)
        assert (result.outcome, result.reason) == (outcome, reason) or (
            result.outcome is outcome and reason in result.reason), result
        assert list(archive.store.list()) == [] and not any(archive.store.root.joinpath(".tmp").iterdir())
        return
    if name in BARE:
        archive = fresh()
        [result] = archive.ingest.store_files([path], file_meta=_file_meta)
        assert result.outcome is Outcome.STORED, result
        assert result.sop_instance_uid is not None
        stored = _indexed(archive, result.sop_instance_uid)[2]
        assert stored[dataset_offset(stored):] == data  # the data set byte for byte, behind the built meta
        assert _pydicom(stored).file_meta.TransferSyntaxUID == BARE[name]
        data = stored
        path = tmp_path / "with-meta.dcm"
        path.write_bytes(stored)
    frames = _check_both_routes(fresh, path, data, tmp_path)
    if name in PIXEL_DATA:
        assert frames == PIXEL_DATA[name][0], PIXEL_DATA[name][1]


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[name for name, _ in CORPUS])
def test_every_corpus_file(name: str, data: bytes, fresh: Callable[[], FreshArchive], tmp_path: Path) -> None:
    path = tmp_path / f"{name}.dcm"
    path.write_bytes(data)
    _check_both_routes(fresh, path, data, tmp_path)
