"""The reports service: what entry points (the viewer API, an HL7 listener, the CLI) call.

Reading (:mod:`pacs.reports.reading`): :func:`list_versions`, :func:`get_version`,
:func:`latest_signed`, :func:`report_pdf`, :func:`signed_studies`, :func:`study_template`. Writing, staff only (the
entry point checks the role): :func:`create_draft`, :func:`update_draft`, :func:`start_amendment`
(:mod:`pacs.reports.drafts`) and :func:`sign_draft` (:mod:`pacs.reports.signing`). A report signed
elsewhere, e.g. an HL7 ORU^R01 result from a RIS, is stored with :func:`sign_external_report`:

    sign_external_report(archive, study_uid, "Jane Doe",
                         ReportSections(findings="…", impression="…"), signed_at)

which writes the SR, the PDF and the ``report.signed`` event exactly as a signature in the viewer
does, with the author as verifying observer, superseding the current signed version if any.
"""

from __future__ import annotations

from pacs.reports.drafts import create_draft, start_amendment, update_draft
from pacs.reports.reading import get_version, latest_signed, list_versions, report_pdf, signed_studies, study_template
from pacs.reports.signing import sign_draft, sign_external_report
from pacs.reports.templates import ReportTemplate, template_for
from pacs.reports.types import CitedFinding, DraftRequest, KeyImage, ReportSections, ReportView

__all__ = [
    "CitedFinding", "DraftRequest", "KeyImage", "ReportSections", "ReportTemplate", "ReportView", "create_draft",
    "get_version", "latest_signed", "list_versions", "report_pdf", "sign_draft", "sign_external_report",
    "signed_studies", "start_amendment", "study_template", "template_for", "update_draft",
]  # fmt: skip
