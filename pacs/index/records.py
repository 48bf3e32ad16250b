"""What the index keeps of one instance, extracted from its parsed header."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pacs.dicomfile import ParsedInstance
from pacs.dicomjson import header_json
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
    sha256: str
    metadata_json: str
    frames_json: str
    encapsulated: bool
    replace: bool = field(default=False)  # overwrite an existing instance (CLOUDFILM_OVERWRITE)


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
        study_uid=require_uid(ds.get("StudyInstanceUID"), "StudyInstanceUID"),
        series_uid=require_uid(ds.get("SeriesInstanceUID"), "SeriesInstanceUID"),
        sop_uid=require_uid(ds.get("SOPInstanceUID"), "SOPInstanceUID"),
        sop_class_uid=require_uid(ds.get("SOPClassUID"), "SOPClassUID"),
    )


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if -(2**31) <= number < 2**31 else None


def build_record(parsed: ParsedInstance, ident: Identity, *, object_key: str, size: int, sha256: str) -> InstanceRecord:
    ds = parsed.dataset
    patient_id = _text(ds, "PatientID", 64)
    if not patient_id:
        patient_id = PLACEHOLDER_PATIENT_PREFIX + hashlib.sha1(ident.study_uid.encode()).hexdigest()[:12]
    name = _text(ds, "PatientName", 324)
    referring = _text(ds, "ReferringPhysicianName", 324)
    bulk_prefix = f"studies/{ident.study_uid}/series/{ident.series_uid}/instances/{ident.sop_uid}"
    return InstanceRecord(
        patient=PatientValues(
            patient_id=patient_id,
            issuer=_text(ds, "IssuerOfPatientID", 64),
            patient_name=name,
            patient_name_norm=normalize_pn(name)[:324],
            birth_date=_text(ds, "PatientBirthDate", 8),
            sex=_text(ds, "PatientSex", 16),
        ),
        study=StudyValues(
            study_uid=ident.study_uid,
            study_date=_text(ds, "StudyDate", 8),
            study_time=_text(ds, "StudyTime", 16),
            accession_number=_text(ds, "AccessionNumber", 64),
            study_id=_text(ds, "StudyID", 16),
            study_description=_text(ds, "StudyDescription", 64),
            referring_physician=referring,
            referring_physician_norm=normalize_pn(referring)[:324],
            institution_name=_text(ds, "InstitutionName", 64),
            specific_charset=_text(ds, "SpecificCharacterSet", 128),
        ),
        series=SeriesValues(
            series_uid=ident.series_uid,
            modality=_text(ds, "Modality", 16),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription", 64),
            body_part=_text(ds, "BodyPartExamined", 64),
            series_date=_text(ds, "SeriesDate", 8),
            series_time=_text(ds, "SeriesTime", 16),
            pps_start_date=_text(ds, "PerformedProcedureStepStartDate", 8),
            pps_start_time=_text(ds, "PerformedProcedureStepStartTime", 16),
        ),
        sop_uid=ident.sop_uid,
        sop_class_uid=ident.sop_class_uid,
        instance_number=_int(ds, "InstanceNumber"),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        number_of_frames=_int(ds, "NumberOfFrames") or (1 if parsed.pixel_vr else None),
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        object_key=object_key,
        size_bytes=size,
        sha256=sha256,
        metadata_json=header_json(ds, bulk_prefix, parsed.pixel_vr),
        frames_json=json.dumps([[f.offset, f.length] for f in parsed.frames], separators=(",", ":")),
        encapsulated=parsed.encapsulated,
    )
