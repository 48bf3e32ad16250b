"""The catalogue of attributes the index can match and return, by query level (PS3.4 C.6)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from pacs.errors import InvalidQuery
from pacs.index.models import Instance, Patient, Series, Study


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]


_DEPTH = {Level.PATIENT: 0, Level.STUDY: 1, Level.SERIES: 2, Level.IMAGE: 3}


@dataclass(frozen=True, slots=True)
class Attribute:
    """One matchable attribute: where it lives in the index, and how it matches."""

    keyword: str
    tag: int
    vr: str
    level: Level
    column: Any | None  # None: computed (counts, ModalitiesInStudy) or return-only
    norm_column: Any | None = None  # PN: the case- and accent-folded column to match on
    patient_column: Any | None = None  # the same attribute on the patients table (PATIENT level)


def _attr(
    keyword: str, level: Level, column: Any | None, norm: Any | None = None, patient: Any | None = None
) -> Attribute:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return Attribute(keyword, tag, dictionary_VR(tag), level, column, norm, patient)


CATALOGUE: dict[str, Attribute] = {
    a.keyword: a
    for a in (
        _attr("PatientName", Level.PATIENT, Study.patient_name, Study.patient_name_norm, Patient.patient_name),
        _attr("PatientID", Level.PATIENT, Study.patient_id, patient=Patient.patient_id),
        _attr("IssuerOfPatientID", Level.PATIENT, Study.issuer, patient=Patient.issuer),
        _attr("PatientBirthDate", Level.PATIENT, Study.birth_date, patient=Patient.birth_date),
        _attr("PatientSex", Level.PATIENT, Study.sex, patient=Patient.sex),
        _attr("NumberOfPatientRelatedStudies", Level.PATIENT, None),
        _attr("NumberOfPatientRelatedSeries", Level.PATIENT, None),
        _attr("NumberOfPatientRelatedInstances", Level.PATIENT, None),
        _attr("StudyInstanceUID", Level.STUDY, Study.study_uid),
        _attr("StudyDate", Level.STUDY, Study.study_date),
        _attr("StudyTime", Level.STUDY, Study.study_time),
        _attr("AccessionNumber", Level.STUDY, Study.accession_number),
        _attr("StudyID", Level.STUDY, Study.study_id),
        _attr("StudyDescription", Level.STUDY, Study.study_description),
        _attr("ReferringPhysicianName", Level.STUDY, Study.referring_physician, Study.referring_physician_norm),
        _attr("InstitutionName", Level.STUDY, Study.institution_name),
        _attr("ModalitiesInStudy", Level.STUDY, None),
        _attr("NumberOfStudyRelatedSeries", Level.STUDY, Study.series_count),
        _attr("NumberOfStudyRelatedInstances", Level.STUDY, Study.instance_count),
        _attr("SeriesInstanceUID", Level.SERIES, Series.series_uid),
        _attr("Modality", Level.SERIES, Series.modality),
        _attr("SeriesNumber", Level.SERIES, Series.series_number),
        _attr("SeriesDescription", Level.SERIES, Series.series_description),
        _attr("BodyPartExamined", Level.SERIES, Series.body_part),
        _attr("SeriesDate", Level.SERIES, Series.series_date),
        _attr("SeriesTime", Level.SERIES, Series.series_time),
        _attr("PerformedProcedureStepStartDate", Level.SERIES, Series.pps_start_date),
        _attr("PerformedProcedureStepStartTime", Level.SERIES, Series.pps_start_time),
        _attr("NumberOfSeriesRelatedInstances", Level.SERIES, Series.instance_count),
        _attr("SOPInstanceUID", Level.IMAGE, Instance.sop_uid),
        _attr("SOPClassUID", Level.IMAGE, Instance.sop_class_uid),
        _attr("InstanceNumber", Level.IMAGE, Instance.instance_number),
        _attr("Rows", Level.IMAGE, Instance.rows),
        _attr("Columns", Level.IMAGE, Instance.columns),
        _attr("NumberOfFrames", Level.IMAGE, Instance.number_of_frames),
    )
}

#: The unique key of each level (PS3.4 C.2.2.1).
UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

#: What QIDO-RS returns by default at each level (PS3.18 Table 10.6.3-3..5), on top of query keys.
QIDO_DEFAULTS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
                    "NumberOfPatientRelatedInstances"),
    Level.STUDY: ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                  "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                  "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyDescription"),
    Level.SERIES: ("StudyInstanceUID", "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                   "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime"),
    Level.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "InstanceNumber",
                  "Rows", "Columns", "NumberOfFrames"),
}


def resolve_keyword(key: str) -> str:
    """A keyword from a keyword or an 8-hex-digit tag (``PatientName`` or ``00100010``)."""
    text = key.strip()
    if len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text):
        keyword = keyword_for_tag(int(text, 16))
        if not keyword:
            raise InvalidQuery(f"{text} is not a known DICOM attribute")
        return keyword
    if tag_for_keyword(text) is None:
        raise InvalidQuery(f"{text!r} is not a known DICOM attribute keyword")
    return text


def visible_at(level: Level) -> dict[str, Attribute]:
    """Catalogue attributes at ``level`` and above."""
    return {k: a for k, a in CATALOGUE.items() if a.level.depth <= level.depth}
