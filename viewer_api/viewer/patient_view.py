"""What a patient or a share visitor is told around the images (issue 13: the patient's film is safe).

Who made the images (the hospital: ``CLOUDFILM_INSTITUTION_NAME``, else the InstitutionName the
modality sent), who shared them and until when the link works, the exam date, a note that the
images are for their doctors, and the report: the latest signed version (its text and a link to its
PDF, marked when it amends an earlier one); until a physician has signed one, "Your report is not
ready yet", never AI output in its place. AI findings reach these callers only as the access scope
releases them (:mod:`pacs.access`): the ones a physician accepted, marked as reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pacs.accounts.shares import ShareInfo
from pacs.reports.service import ReportView
from pacs.settings import Settings
from viewer_api.i18n import english
from viewer_api.viewer.model import StudyHeader

NOTE_KEY = "patient.note"
NOTE = english(NOTE_KEY)
REPORT_NOT_READY = english("patient.report_not_ready")


@dataclass(frozen=True, slots=True)
class PatientView:
    """The card above a patient's or a share visitor's viewer."""

    institution: str
    exam_date: str  # YYYY-MM-DD, or "" when the study has none
    shared_by: str  # "" when not opened through a share link (or its creator is gone)
    expires_at: datetime | None  # the share link's expiry
    note_key: str = NOTE_KEY  # the catalogue key of the note (viewer_api/i18n/messages.json)
    report: ReportView | None = None  # the latest signed version
    report_pdf: str = ""  # its PDF's URL

    @property
    def report_status_key(self) -> str:
        """The catalogue key of the report's status line (fields in :attr:`report_status_fields`)."""
        if self.report is None:
            return "patient.report_not_ready"
        return "patient.report_amended" if self.report.amended else "patient.report_signed"

    @property
    def report_status_fields(self) -> dict[str, object]:
        return {"version": self.report.version} if self.report is not None and self.report.amended else {}

    @property
    def note(self) -> str:
        return english(self.note_key)

    @property
    def report_status(self) -> str:
        """The status line in English (the page shows it in the reader's language)."""
        return english(self.report_status_key, **self.report_status_fields)


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else ""


def patient_view(settings: Settings, header: StudyHeader, share: ShareInfo | None,
                 report: ReportView | None = None) -> PatientView:  # fmt: skip
    return PatientView(
        institution=settings.institution_name or header.institution,
        exam_date=_date(header.study_date),
        shared_by=share.created_by_name if share else "",
        expires_at=share.expires_at if share else None,
        report=report,
        report_pdf=f"/api/studies/{header.study_uid}/reports/{report.id}/pdf" if report is not None else "",
    )
