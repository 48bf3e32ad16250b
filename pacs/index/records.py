"""What the index keeps of one instance, extracted from its parsed header."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from pacs.dicomfile import ParsedInstance
from pacs.dicomjson import dump, header_model
from pacs.errors import InvalidDataset
from pacs.names import normalize_pn
from pacs.uids import require_uid

#: PatientID used in the index when a dataset has none (the stored object keeps its bytes).
#: One placeholder per study, so unidentified patients are never merged into one record.
PLACEHOLDER_PATIENT_PREFIX = "NOID-"


@dataclass(frozen=True, slots=True)
class PatientValues:
    patient_id: str
    issuer: str
    patient_name: str
    patient_name_norm: str
    birth_date: str
    sex: str


@dataclass(frozen=True, slots=True)
class StudyValues:
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician: str
    referring_physician_norm: str
    institution_name: str
    specific_charset: str


@dataclass(frozen=True, slots=True)
class SeriesValues:
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    body_part: str
    series_date: str
    series_time: str
    pps_start_date: str
    pps_start_time: str


@dataclass(slots=True)
class InstanceRecord:
    """Everything one ingest commit writes for one instance."""

    patient: PatientValues
    study: StudyValues
    series: SeriesValues
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    transfer_syntax_uid: str
    object_key: str
    size_bytes: int
    sha256: str  # of the stored object
    dataset_sha256: str  # of the data set, the bytes after the File Meta Information: what makes two sends the same
    metadata_json: str
    frames_json: str
    encapsulated: bool
    replace: bool = field(default=False)  # overwrite an existing instance (CLOUDFILM_OVERWRITE)
    partition: int = field(default=1)  # pacs.partitions: the partition it is stored into


@dataclass(frozen=True, slots=True)
class Identity:
    """The four UIDs every instance must carry, validated (PS3.5 9.1)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


def identity_of(ds: Dataset) -> Identity:
    """Validate and return the instance's UIDs; raises InvalidDataset naming the bad attribute."""
    return Identity(
        study_uid=_uid(ds, "StudyInstanceUID"),
        series_uid=_uid(ds, "SeriesInstanceUID"),
        sop_uid=_uid(ds, "SOPInstanceUID"),
        sop_class_uid=_uid(ds, "SOPClassUID"),
    )


def _uid(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:  # pydicom's conversion of a damaged value
        raise InvalidDataset(f"{keyword} cannot be read") from exc
    return require_uid(value, keyword)


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
#: The DICOM JSON key (``GGGGEEEE``) of each attribute the index keeps.
_TAGS = {keyword: f"{tag_for_keyword(keyword):08X}" for keyword in (
    "AccessionNumber", "BodyPartExamined", "Columns", "InstanceNumber", "InstitutionName", "IssuerOfPatientID",
    "Modality", "NumberOfFrames", "PatientBirthDate", "PatientID", "PatientName", "PatientSex",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "ReferringPhysicianName", "Rows",
    "SeriesDate", "SeriesDescription", "SeriesNumber", "SeriesTime", "SpecificCharacterSet", "StudyDate",
    "StudyDescription", "StudyID", "StudyTime",
)}


def _values(model: dict[str, Any], keyword: str) -> list[Any]:
    element = model.get(_TAGS[keyword])
    return (element.get("Value") or []) if element else []


def _text(model: dict[str, Any], keyword: str, limit: int) -> str:
    """The element's value as DICOM text: values joined by ``\\``, person name groups by ``=``.

    NUL characters are dropped: PostgreSQL text cannot hold them, and the stored object and the
    DICOM JSON metadata keep the value as received."""
    parts = []
    for value in _values(model, keyword):
        if isinstance(value, dict):  # PN: the groups up to the last one present
            present = [i for i, group in enumerate(_PN_GROUPS) if group in value]
            parts.append("=".join(value.get(g, "") for g in _PN_GROUPS[: present[-1] + 1]) if present else "")
        else:
            parts.append(str(value))
    return "\\".join(parts).replace("\x00", "").strip(" ")[:limit]


def _int(model: dict[str, Any], keyword: str) -> int | None:
    values = _values(model, keyword)
    if not values or values[0] is None or values[0] == "":
        return None
    try:
        number = int(values[0])
    except (TypeError, ValueError):
        return None
    return number if -(2**31) <= number < 2**31 else None


def build_record(parsed: ParsedInstance, ident: Identity, *, object_key: str, size: int, sha256: str,
                 dataset_sha256: str) -> InstanceRecord:
    ds = parsed.dataset
    bulk_prefix = f"studies/{ident.study_uid}/series/{ident.series_uid}/instances/{ident.sop_uid}"
    # Index columns are read from the instance's DICOM JSON model, built once from the raw elements.
    model = header_model(ds, bulk_prefix, parsed.pixel_vr, parsed.pixel_tag)
    patient_id = _text(model, "PatientID", 64)
    if not patient_id:
        patient_id = PLACEHOLDER_PATIENT_PREFIX + hashlib.sha1(ident.study_uid.encode()).hexdigest()[:12]
    name = _text(model, "PatientName", 324)
    referring = _text(model, "ReferringPhysicianName", 324)
    return InstanceRecord(
        patient=PatientValues(
            patient_id=patient_id,
            issuer=_text(model, "IssuerOfPatientID", 64),
            patient_name=name,
            patient_name_norm=normalize_pn(name)[:324],
            birth_date=_text(model, "PatientBirthDate", 8),
            sex=_text(model, "PatientSex", 16),
        ),
        study=StudyValues(
            study_uid=ident.study_uid,
            study_date=_text(model, "StudyDate", 8),
            study_time=_text(model, "StudyTime", 16),
            accession_number=_text(model, "AccessionNumber", 64),
            study_id=_text(model, "StudyID", 16),
            study_description=_text(model, "StudyDescription", 64),
            referring_physician=referring,
            referring_physician_norm=normalize_pn(referring)[:324],
            institution_name=_text(model, "InstitutionName", 64),
            specific_charset=_text(model, "SpecificCharacterSet", 128),
        ),
        series=SeriesValues(
            series_uid=ident.series_uid,
            modality=_text(model, "Modality", 16),
            series_number=_int(model, "SeriesNumber"),
            series_description=_text(model, "SeriesDescription", 64),
            body_part=_text(model, "BodyPartExamined", 64),
            series_date=_text(model, "SeriesDate", 8),
            series_time=_text(model, "SeriesTime", 16),
            pps_start_date=_text(model, "PerformedProcedureStepStartDate", 8),
            pps_start_time=_text(model, "PerformedProcedureStepStartTime", 16),
        ),
        sop_uid=ident.sop_uid,
        sop_class_uid=ident.sop_class_uid,
        instance_number=_int(model, "InstanceNumber"),
        rows=_int(model, "Rows"),
        columns=_int(model, "Columns"),
        number_of_frames=_int(model, "NumberOfFrames") or (1 if parsed.pixel_vr else None),
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        object_key=object_key,
        size_bytes=size,
        sha256=sha256,
        dataset_sha256=dataset_sha256,
        metadata_json=dump(model),
        frames_json=json.dumps([[f.offset, f.length] for f in parsed.frames], separators=(",", ":")),
        encapsulated=parsed.encapsulated,
    )
