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
from viewer_api.viewer.model import StudyHeader

NOTE = ("These images are for your doctors. Show them to the doctor treating you; "
        "only a physician's report says what they mean.")  # fmt: skip
REPORT_NOT_READY = "Your report is not ready yet."


@dataclass(frozen=True, slots=True)
class PatientView:
    """The card above a patient's or a share visitor's viewer."""

    institution: str
    exam_date: str  # YYYY-MM-DD, or "" when the study has none
    shared_by: str  # "" when not opened through a share link (or its creator is gone)
    expires_at: datetime | None  # the share link's expiry
    note: str = NOTE
    report: ReportView | None = None  # the latest signed version
    report_pdf: str = ""  # its PDF's URL

    @property
    def report_status(self) -> str:
        if self.report is None:
            return REPORT_NOT_READY
        if self.report.amended:
            return f"Amended report (version {self.report.version}); it replaces the earlier version."
        return "Signed report"


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
