"""The audit trail as DICOM audit messages (PS3.15 A.5, the RFC 3881 based XML schema).

Each event becomes one ``AuditMessage``: EventIdentification (EventID from PS3.15 A.5.3 / CID 400,
action code, outcome indicator), the requesting ActiveParticipant (user or share link, with the
client address), the AuditSourceIdentification of this archive, and ParticipantObjectIdentification
for the study and patient concerned. An export wraps the messages in one ``AuditMessages`` root.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from pacs.accounts.audit import Action, AuditEvent, Outcome


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    scheme: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


def _local(code: str, meaning: str) -> Code:
    return Code(code, "99CLOUDFILM", meaning)


# action -> (EventID, EventActionCode, EventTypeCode or None)   PS3.15 A.5.3.x
_EVENTS: dict[str, tuple[Code, str, Code | None]] = {
    Action.LOGIN: (_dcm("110114", "User Authentication"), "E", _dcm("110122", "Login")),
    Action.LOGOUT: (_dcm("110114", "User Authentication"), "E", _dcm("110123", "Logout")),
    Action.VIEW: (_dcm("110103", "DICOM Instances Accessed"), "R", None),
    Action.SEARCH: (_dcm("110112", "Query"), "E", None),
    Action.C_FIND: (_dcm("110112", "Query"), "E", None),
    Action.DOWNLOAD: (_dcm("110106", "Export"), "R", None),
    Action.C_MOVE: (_dcm("110104", "DICOM Instances Transferred"), "R", None),
    Action.C_GET: (_dcm("110104", "DICOM Instances Transferred"), "R", None),
    Action.STOW: (_dcm("110107", "Import"), "C", None),
    Action.C_STORE: (_dcm("110104", "DICOM Instances Transferred"), "C", None),
    Action.DELETE: (_dcm("110105", "DICOM Study Deleted"), "D", None),
    Action.SHARE_OPEN: (_dcm("110103", "DICOM Instances Accessed"), "R", _local("share-open", "Share link opened")),
    Action.SHARE_CREATE: (_dcm("110113", "Security Alert"), "E", _local("share-create", "Share link created")),
    Action.SHARE_REVOKE: (_dcm("110113", "Security Alert"), "E", _local("share-revoke", "Share link revoked")),
    Action.SHARE_PIN_FAILURE: (_dcm("110114", "User Authentication"), "E", _local("share-pin", "Share PIN entered")),
    Action.SHARE_CLAIM: (_dcm("110110", "Patient Record"), "U", _local("share-claim", "Study claimed by patient")),
    Action.USER_CHANGE: (_dcm("110113", "Security Alert"), "E", _dcm("110137", "User security Attributes Changed")),
    Action.API_KEY: (_dcm("110113", "Security Alert"), "E", _dcm("110137", "User security Attributes Changed")),
    Action.CHANGEFEED: (_dcm("110112", "Query"), "E", _local("changefeed", "Change feed read")),
    Action.WEBHOOK: (_dcm("110113", "Security Alert"), "E", _local("webhook", "Webhook registration")),
    Action.AI_REVIEW: (_dcm("110110", "Patient Record"), "U", _local("ai-review", "AI finding reviewed")),
    Action.ROUTING: (_dcm("110106", "Export"), "E", _local("routing", "Routing read or re-send")),
    Action.RETENTION: (_dcm("110110", "Patient Record"), "U", _local("retention", "Retention rule applied")),
    Action.LEGAL_HOLD: (_dcm("110110", "Patient Record"), "U", _local("legal-hold", "Legal hold set or cleared")),
    Action.PACKAGE_DOWNLOAD: (_dcm("110106", "Export"), "R",
                              _local("package-download", "Algorithm package sent to an edge worker")),
}
_OUTCOMES: dict[str, str] = {Outcome.SUCCESS: "0", Outcome.FAILURE: "4", Outcome.DENIED: "4", Outcome.ERROR: "8"}


def _code(parent: ET.Element, tag: str, code: Code) -> None:
    ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning})


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def audit_message(event: AuditEvent, source_id: str) -> ET.Element:
    """One PS3.15 A.5.1 ``AuditMessage`` for ``event``."""
    event_id, action_code, type_code = _EVENTS.get(
        str(event.action), (_dcm("110113", "Security Alert"), "E", _local(str(event.action), str(event.action)))
    )
    msg = ET.Element("AuditMessage")
    ident = ET.SubElement(msg, "EventIdentification", {
        "EventActionCode": action_code,
        "EventDateTime": (event.at.isoformat() if event.at else ""),
        "EventOutcomeIndicator": _OUTCOMES.get(str(event.outcome), "8"),
    })
    _code(ident, "EventID", event_id)
    if type_code is not None:
        _code(ident, "EventTypeCode", type_code)
    if event.detail:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.detail

    who = event.username or (f"share:{event.share_id}" if event.share_id is not None else "anonymous")
    attrs = {"UserID": who, "UserIsRequestor": "true"}
    if event.source:
        attrs["NetworkAccessPointID"] = event.source
        attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(event.source) else "1"  # IP address / machine name
    participant = ET.SubElement(msg, "ActiveParticipant", attrs)
    if event.role:
        _code(participant, "RoleIDCode", _local(event.role, event.role))

    ET.SubElement(msg, "AuditSourceIdentification", {"AuditSourceID": source_id})

    if event.patient_id:
        patient = ET.SubElement(msg, "ParticipantObjectIdentification", {
            "ParticipantObjectID": event.patient_id, "ParticipantObjectTypeCode": "1",
            "ParticipantObjectTypeCodeRole": "1",
        })
        _code(patient, "ParticipantObjectIDTypeCode", Code("2", "RFC-3881", "Patient Number"))
    if event.study_uid:
        study = ET.SubElement(msg, "ParticipantObjectIdentification", {
            "ParticipantObjectID": event.study_uid, "ParticipantObjectTypeCode": "2",
            "ParticipantObjectTypeCodeRole": "3",
        })
        _code(study, "ParticipantObjectIDTypeCode", _dcm("110180", "Study Instance UID"))
    return msg


def export_xml(events: Iterable[AuditEvent], source_id: str) -> str:
    """The events as ``<AuditMessages>`` holding one PS3.15 A.5 ``AuditMessage`` each (UTF-8 XML)."""
    root = ET.Element("AuditMessages")
    for event in events:
        root.append(audit_message(event, source_id))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
