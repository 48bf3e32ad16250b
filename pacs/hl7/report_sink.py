"""ORU^R01 results stored as the study's signed report: the HL7 side of :mod:`pacs.reports`.

The result's author (OBR-32, else OBX-16) is the verifying observer and its observation time the
verification time, exactly as a physician's signature in the viewer. Only final (``F``) and
corrected (``C``) results are reports someone signed; a preliminary one is refused, so the RIS
sends the final result later instead of the archive showing an unsigned text as signed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pacs.archive import Archive
from pacs.errors import InvalidQuery
from pacs.hl7.results import ExternalReport, MatchedStudy, ReportSink
from pacs.reports.service import ReportSections, sign_external_report
from pacs.reports.types import MAX_SECTION

#: OBR-25 result statuses that mean "signed": final, corrected (amends the earlier version). An
#: empty status is taken as final, as most RIS that leave it out send only final results.
SIGNED_STATUSES = frozenset({"F", "C", ""})


def report_sink(archive: Archive) -> ReportSink:
    """The :class:`ReportSink` that stores matched ORU results in ``archive`` (returns the SR's UID)."""

    def store(report: ExternalReport, study: MatchedStudy) -> str:
        if report.result_status not in SIGNED_STATUSES:
            raise InvalidQuery(f"result status {report.result_status!r} (OBR-25) is not a signed report: only "
                               "final (F) and corrected (C) results are stored")
        if report.author is None:
            raise InvalidQuery("the result names no author (OBR-32 or OBX-16): a report needs its signer")
        author = " ".join(p for p in (report.author.given_name, report.author.family_name) if p) or report.author.id
        text = "\n".join(report.text)
        if len(text) > MAX_SECTION:
            raise InvalidQuery(f"the report text is {len(text)} characters; at most {MAX_SECTION} are stored")
        view = sign_external_report(archive, study.study_uid, author, ReportSections(findings=text),
                                    report.observed_at or datetime.now(UTC), source="hl7", partition=study.partition)
        return view.sr_uid

    return store
