"""The shapes of a report as it crosses boundaries: what a physician writes, and a version as read back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from pacs.jobs import aware
from pacs.reports.models import ReportRow

Status = Literal["draft", "signed", "superseded"]
#: Plain text per section; a DICOM UT value holds far more, but a report is read by people.
MAX_SECTION = 20_000


class ReportSections(BaseModel):
    """The four sections of every template (plain text; empty sections are left out of the documents)."""

    model_config = ConfigDict(extra="forbid")

    clinical_information: str = Field(default="", max_length=MAX_SECTION)
    technique: str = Field(default="", max_length=MAX_SECTION)
    findings: str = Field(default="", max_length=MAX_SECTION)
    impression: str = Field(default="", max_length=MAX_SECTION)

    @field_validator("*")
    @classmethod
    def _plain(cls, value: str) -> str:
        """Line breaks kept, other control characters dropped (they break DICOM text and PDFs)."""
        text = value.replace("\r\n", "\n").replace("\r", "\n")
        return "".join(c for c in text if c in "\n\t" or c.isprintable()).strip()

    def titled(self) -> list[tuple[str, str]]:
        """(heading, text) of the sections that hold text, in reading order."""
        return [(SECTION_TITLES[name], text) for name, text in self.model_dump().items() if text]

    def is_empty(self) -> bool:
        return not any(self.model_dump().values())


SECTION_TITLES: dict[str, str] = {
    "clinical_information": "Clinical information",
    "technique": "Technique",
    "findings": "Findings",
    "impression": "Impression",
}


class KeyImage(BaseModel):
    """An image of the study the report cites (a Key Object Selection entry once signed)."""

    model_config = ConfigDict(extra="forbid")

    series_uid: str = Field(min_length=1, max_length=64)
    sop_uid: str = Field(min_length=1, max_length=64)
    sop_class_uid: str = Field(default="", max_length=64)  # filled in from the index when saved


class CitedFinding(BaseModel):
    """An AI finding a physician accepted (or accepted with changes), as the report cites it.

    ``document_uid`` is the physician's review SR of the finding, the object the report references.
    """

    model_config = ConfigDict(extra="forbid")

    document_uid: str = Field(min_length=1, max_length=64)
    label: str = Field(default="", max_length=64)
    decision: str = Field(default="accepted", max_length=16)
    reviewer: str = Field(default="", max_length=64)
    plugin: str = Field(default="", max_length=130)

    def sentence(self) -> str:
        how = "accepted" if self.decision == "accepted" else "accepted with changes"
        by = f" by {self.reviewer}" if self.reviewer else ""
        tool = f" ({self.plugin})" if self.plugin else ""
        return f"AI finding {how}{by}: {self.label}{tool}"


class DraftRequest(BaseModel):
    """A draft as the physician saves it; findings are cited by their review document's UID."""

    model_config = ConfigDict(extra="forbid")

    sections: ReportSections = Field(default_factory=ReportSections)
    modality: str = Field(default="", max_length=16)
    key_images: list[KeyImage] = Field(default_factory=list, max_length=50)
    ai_findings: list[str] = Field(default_factory=list, max_length=50)  # review document UIDs


class ReportView(BaseModel):
    """One version of a study's report, as the API, the viewer and the patient page show it."""

    id: int
    study_uid: str
    status: Status
    version: int | None
    supersedes_id: int | None
    superseded_by_id: int | None = None
    modality: str
    title: str
    sections: ReportSections
    key_images: list[KeyImage]
    ai_findings: list[CitedFinding]
    author: str
    signer_name: str
    signed_by: str
    signed_at: datetime | None
    sr_uid: str
    pdf_uid: str
    kos_uid: str
    source: str
    created_at: datetime
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def amended(self) -> bool:
        """A signed version that replaces an earlier one."""
        return self.supersedes_id is not None and self.status != "draft"

    @property
    def text(self) -> str:
        """The report as plain text (headings, then each section)."""
        return "\n\n".join(f"{title}\n{body}" for title, body in self.sections.titled())


def view_of(row: ReportRow, title: str, superseded_by_id: int | None = None) -> ReportView:
    return ReportView(
        id=row.id, study_uid=row.study_uid, status=row.status, version=row.version,  # type: ignore[arg-type]
        supersedes_id=row.supersedes_id, superseded_by_id=superseded_by_id, modality=row.modality, title=title,
        sections=ReportSections.model_validate_json(row.sections_json),
        key_images=[KeyImage(**k) for k in json.loads(row.key_images_json or "[]")],
        ai_findings=[CitedFinding(**f) for f in json.loads(row.ai_findings_json or "[]")],
        author=row.author, signer_name=row.signer_name, signed_by=row.signed_by, signed_at=_aware(row.signed_at),
        sr_uid=row.sr_uid, pdf_uid=row.pdf_uid, kos_uid=row.kos_uid, source=row.source,
        created_at=_aware(row.created_at) or row.created_at, updated_at=_aware(row.updated_at) or row.updated_at,
    )  # fmt: skip


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else aware(moment)
