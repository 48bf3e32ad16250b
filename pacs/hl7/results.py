"""ORU^R01 results from a RIS (issue 13 item 2): the report as an :class:`ExternalReport`, matched
to a study of the archive, handed to a :class:`ReportSink` that stores it.

The report's study is named by OBR-3 (filler order number, the RIS's accession number) or OBR-18
(placer field 1, where IHE puts the accession), or by a Study Instance UID in ZDS-1 or in an OBX
of type ``ST``/``RP`` whose identifier says "Study Instance UID" (the DICOM code 110180). The text
is every OBX of type ``TX``, ``FT``, ``ST`` or ``CE`` other than that UID, line by line, in order.
The author who verified it is OBR-32 (principal result interpreter) or else the first OBX-16
(responsible observer); the observation date-time is OBR-7, else OBX-14. Matching goes through the
query engine and its access scope, so a study hidden from DICOM peers (benchmark copies) is hidden
from the RIS too, and only the sender's partition is searched (:mod:`pacs.hl7.handler` picks it from
the Sending Facility): a study with the same accession number in another hospital is never matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

import hl7
from sqlalchemy import Engine

from pacs.access import DEFAULT_PARTITION, AccessScope, ScopeProvider
from pacs.hl7.messages import ErrorCode, Inbound, failed, rejected, segment_field
from pacs.query import Level, QueryRequest, run_query
from pacs.uids import is_valid_uid

_TEXT_TYPES = frozenset({"TX", "FT", "ST", "CE", "CWE"})
_STUDY_UID_CODES = frozenset({"110180", "STUDY INSTANCE UID", "STUDYINSTANCEUID", "STUDY_UID"})
RESULT_STATUSES = {"F": "final", "C": "corrected", "P": "preliminary", "R": "not verified", "X": "cancelled"}


@dataclass(frozen=True, slots=True)
class ReportAuthor:
    """An XCN (OBR-32's first component is an NDL whose first part is the same ID^family^given)."""

    id: str
    family_name: str
    given_name: str

    @property
    def dicom_name(self) -> str:
        """As a DICOM PN (Family^Given), the Verifying Observer Name of the stored SR."""
        return f"{self.family_name}^{self.given_name}".rstrip("^")


@dataclass(frozen=True, slots=True)
class ExternalReport:
    """A signed result from a RIS, as parsed from ORU^R01."""

    control_id: str  # MSH-10, to trace the report back to its message
    sending_application: str
    accession_number: str
    study_uid: str
    patient_id: str
    procedure: str  # OBR-4 text (or code)
    text: tuple[str, ...]  # the report, one line per element
    author: ReportAuthor | None
    observed_at: datetime | None
    result_status: str  # OBR-25: F final, C corrected, P preliminary ...


@dataclass(frozen=True, slots=True)
class MatchedStudy:
    """The study a report was matched to."""

    study_uid: str
    accession_number: str
    patient_id: str
    patient_name: str
    partition: int = DEFAULT_PARTITION  # the partition it lies in (pacs.partitions)


class ReportSink(Protocol):
    """Stores a matched, signed report (pacs.reports offers it); raises a :class:`~pacs.errors.CloudfilmError`
    with a sentence when it cannot, which the sender reads in the ACK."""

    def __call__(self, report: ExternalReport, study: MatchedStudy) -> str:
        """Store ``report`` in ``study``; returns the stored report's identifier (its SOP Instance UID)."""
        ...


def parse_hl7_datetime(value: str) -> datetime | None:
    """HL7 DTM ``YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]``; no offset means UTC. ``None`` if invalid."""
    value = value.strip()
    if not value:
        return None
    offset = None
    if len(value) > 5 and value[-5] in "+-" and value[-4:].isdigit():
        sign = -1 if value[-5] == "-" else 1
        offset = timezone(sign * timedelta(hours=int(value[-4:-2]), minutes=int(value[-2:])))
        value = value[:-5]
    value = value.split(".", 1)[0]
    formats = {4: "%Y", 6: "%Y%m", 8: "%Y%m%d", 10: "%Y%m%d%H", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    fmt = formats.get(len(value))
    if fmt is None or not value.isdigit():
        return None
    try:
        parsed = datetime.strptime(value, fmt)
    except ValueError:
        return None
    return parsed.replace(tzinfo=offset or UTC)


def parse_oru(inbound: Inbound) -> ExternalReport:
    """The report of an ORU^R01; :class:`~pacs.hl7.messages.Refusal` (AR) when it cannot be one."""
    message = inbound.message
    obrs = inbound.segments("OBR")
    if not obrs:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, "the ORU message has no OBR segment")
    obr = obrs[0]
    accession = segment_field(message, obr, 3) or segment_field(message, obr, 18)
    study_uid = ""
    lines: list[str] = []
    observer: ReportAuthor | None = None
    observed_obx = ""
    for obx in inbound.segments("OBX"):
        kind = segment_field(message, obx, 2).upper()
        ident = {segment_field(message, obx, 3, 1).upper(), segment_field(message, obx, 3, 2).upper()}
        value = _obx_value(message, obx, kind)
        if ident & _STUDY_UID_CODES and kind in ("ST", "RP", "UI"):
            study_uid = study_uid or value
            continue
        if kind in _TEXT_TYPES:
            lines.extend(value.split("\n") if value else [""])
        if observer is None:
            observer = _author(message, obx, 16)
        observed_obx = observed_obx or segment_field(message, obx, 14)
    for zds in inbound.segments("ZDS"):
        study_uid = study_uid or segment_field(message, zds, 1)
    if study_uid and not is_valid_uid(study_uid):
        raise rejected(ErrorCode.DATA_TYPE, f"the Study Instance UID {study_uid[:64]!r} is not a valid UID")
    if not accession and not study_uid:
        raise rejected(ErrorCode.REQUIRED_FIELD_MISSING,
                       "the result names no study: OBR-3 or OBR-18 (accession number) or a Study Instance UID",
                       "OBR^1^3")
    while lines and not lines[-1].strip():
        lines.pop()
    if not any(line.strip() for line in lines):
        raise rejected(ErrorCode.REQUIRED_FIELD_MISSING, "the result holds no report text (OBX of type TX, FT or ST)",
                       "OBX^1^5")
    observed_text = segment_field(message, obr, 7) or observed_obx
    observed_at = parse_hl7_datetime(observed_text)
    if observed_text and observed_at is None:
        raise rejected(ErrorCode.DATA_TYPE, f"the observation date-time {observed_text[:26]!r} is not a date-time",
                       "OBR^1^7")
    procedure = segment_field(message, obr, 4, 2) or segment_field(message, obr, 4, 1)
    return ExternalReport(
        control_id=inbound.control_id, sending_application=inbound.field("MSH.F3.R1.C1"),
        accession_number=accession, study_uid=study_uid, patient_id=inbound.field("PID.F3.R1.C1"),
        procedure=procedure, text=tuple(lines), author=_author(message, obr, 32) or observer,
        observed_at=observed_at, result_status=segment_field(message, obr, 25).upper())


def _obx_value(message: hl7.Message, obx: hl7.Segment, kind: str) -> str:
    """OBX-5 as text: repetitions joined by new lines, FT/TX line breaks (``\\.br\\``) as new lines; the
    text (else the code) of a coded value."""
    if len(obx) <= 5:
        return ""
    repetition_sep, component_sep = message.separators[2], message.separators[3]
    parts: list[str] = []
    for repetition in str(obx[5]).split(repetition_sep):
        if kind in ("CE", "CWE"):
            components = repetition.split(component_sep)
            repetition = components[1] if len(components) > 1 and components[1] else components[0]
        raw = repetition.replace(f"{message.esc}.br{message.esc}", "\n").replace(f"{message.esc}.BR{message.esc}", "\n")
        parts.append(message.unescape(raw).rstrip())
    return "\n".join(parts).strip("\n")


def _author(message: hl7.Message, segment: hl7.Segment, field: int) -> ReportAuthor | None:
    """OBR-32 is NDL (its first component an ID&family&given in sub-components); OBX-16 is XCN."""
    if field == 32:
        parts = [segment_field(message, segment, field, 1, subcomponent=c) for c in (1, 2, 3)]
    else:
        parts = [segment_field(message, segment, field, c) for c in (1, 2, 3)]
    if not any(parts):
        return None
    return ReportAuthor(id=parts[0], family_name=parts[1], given_name=parts[2])


def match_study(engine: Engine, report: ExternalReport, scope: ScopeProvider = AccessScope.everything) -> MatchedStudy:
    """The one study ``report`` names (by Study Instance UID, else Accession Number, and the patient ID
    when both sides have one); :class:`Refusal` (AE) when none or several match."""
    filters = ({"StudyInstanceUID": report.study_uid} if report.study_uid
               else {"AccessionNumber": report.accession_number})
    request = QueryRequest(Level.STUDY, filters, return_keys=("AccessionNumber", "PatientID", "PatientName"),
                           limit=3, scope=scope())
    matches = list(run_query(engine, request))
    named = f"Study Instance UID {report.study_uid}" if report.study_uid else \
        f"accession number {report.accession_number}"
    if not matches:
        raise failed(ErrorCode.UNKNOWN_KEY, f"no study with {named} is in the archive",
                     "OBR^1^3" if not report.study_uid else "")
    if len(matches) > 1:
        raise failed(ErrorCode.UNKNOWN_KEY, f"{len(matches)} studies have {named}; send the Study Instance UID",
                     "OBR^1^3")
    match = matches[0]
    patient_id = str(match.get("PatientID") or "")
    if report.patient_id and patient_id and report.patient_id != patient_id:
        raise failed(ErrorCode.UNKNOWN_KEY, f"the study with {named} belongs to another patient ID than PID-3",
                     "PID^1^3")
    return MatchedStudy(study_uid=str(match.get("StudyInstanceUID")), accession_number=str(
        match.get("AccessionNumber") or ""), patient_id=patient_id, patient_name=str(match.get("PatientName") or ""),
        partition=request.scope.partition)
