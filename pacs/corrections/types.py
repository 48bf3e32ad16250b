"""What crosses the corrections service's boundary: who asks, what to change, what was changed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from pacs.accounts.principal import Principal
from pacs.errors import Conflict


class Kind(StrEnum):
    UPDATE_PATIENT = "update-patient"
    UPDATE_STUDY = "update-study"
    MERGE_PATIENTS = "merge-patients"
    MOVE_STUDY = "move-study"
    REVERT = "revert"


class Unchanged(Conflict):
    """The stored objects already hold the values asked for: nothing was rewritten or recorded."""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a correction, for the correction row and the audit trail."""

    name: str
    role: str = ""
    user_id: int | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.label, principal.role or "", principal.user_id)


@dataclass(frozen=True, slots=True)
class PatientKey:
    """A patient as the index keys it: (PatientID, IssuerOfPatientID)."""

    patient_id: str
    issuer: str = ""

    def __str__(self) -> str:
        return self.patient_id + (f" ({self.issuer})" if self.issuer else "")


@dataclass(frozen=True, slots=True)
class PatientChanges:
    """New patient attribute values; ``None`` leaves an attribute as it is, "" empties it."""

    patient_name: str | None = None
    patient_id: str | None = None
    issuer: str | None = None
    birth_date: str | None = None
    sex: str | None = None

    def values(self) -> dict[str, str]:
        return {_PATIENT_KEYWORDS[f.name]: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass(frozen=True, slots=True)
class StudyChanges:
    accession_number: str | None = None
    study_description: str | None = None

    def values(self) -> dict[str, str]:
        return {_STUDY_KEYWORDS[f.name]: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


_PATIENT_KEYWORDS = {"patient_name": "PatientName", "patient_id": "PatientID", "issuer": "IssuerOfPatientID",
                     "birth_date": "PatientBirthDate", "sex": "PatientSex"}
_STUDY_KEYWORDS = {"accession_number": "AccessionNumber", "study_description": "StudyDescription"}


@dataclass(frozen=True, slots=True)
class VersionView:
    """An earlier object of an instance, kept when correction ``correction_id`` replaced it."""

    sop_uid: str
    version: int
    study_uid: str
    series_uid: str
    object_key: str
    size_bytes: int
    sha256: str
    correction_id: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CorrectionView:
    id: int
    kind: str
    source: str
    actor: str
    target: str
    reverts_id: int | None
    before: dict[str, Any]
    after: dict[str, Any]
    instance_count: int
    study_uids: list[str]
    created_at: datetime
