"""ADT^A08 (update patient information) and ADT^A40 (merge patient) as corrections (:mod:`pacs.corrections`).

| message | names the patient | new values / merged away |
|---|---|---|
| A08 | PID-3.1 (ID), PID-3.4 (issuer) | PID-5 name, PID-7 birth date, PID-8 sex (empty fields are left as they are) |
| A40 | PID-3 (the surviving patient) | MRG-1 (the prior patient ID, MRG-1.4 its issuer) |

An ADT feed carries every patient of the hospital and the archive holds a few: a patient it does not
hold, or values it already has, are acknowledged (AA) with nothing done. Each change is a correction
made by ``hl7:<sending application>``, audited with the values before and after, and revertible.
"""

from __future__ import annotations

from pacs.access import DEFAULT_PARTITION
from pacs.archive import Archive
from pacs.corrections import service
from pacs.corrections.types import Actor, PatientChanges, PatientKey, Unchanged
from pacs.errors import NotFound
from pacs.hl7.messages import ErrorCode, Inbound, rejected, segment_field
from pacs.hl7.orders import HL7_SEX, person_name


def apply_adt(archive: Archive, inbound: Inbound, partition: int = DEFAULT_PARTITION) -> str:
    """Apply one A08 or A40 to ``partition``'s patients (the sender's); a sentence for the log and the ACK.
    :class:`Refusal` (AR) when malformed."""
    message = inbound.message
    pids = inbound.segments("PID")
    if not pids:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, f"the ADT^{inbound.trigger} message has no PID segment")
    pid = pids[0]
    patient = PatientKey(segment_field(message, pid, 3), segment_field(message, pid, 3, 4))
    if not patient.patient_id:
        raise rejected(ErrorCode.REQUIRED_FIELD_MISSING, "PID-3 (the patient ID) is empty", "PID^1^3")
    actor = Actor(f"hl7:{inbound.field('MSH.F3')}"[:64], "")
    try:
        if inbound.trigger == "A40":
            return _merge(archive, inbound, patient, actor, partition)
        changes = PatientChanges(
            patient_name=person_name(message, pid, 5) or None,
            birth_date=segment_field(message, pid, 7)[:8] or None,
            sex=HL7_SEX.get(segment_field(message, pid, 8).upper()[:1]) or None,
        )
        if not changes.values():
            return f"patient {patient}: the A08 carries no values to update"
        done = service.update_patient(archive, actor, patient, changes, source="hl7", partition=partition)
    except NotFound:
        return f"patient {patient} has no studies here; nothing to update"
    except Unchanged:
        return f"patient {patient} already holds these values"
    return f"correction {done.id}: patient {patient} updated in {done.instance_count} instance(s)"


def _merge(archive: Archive, inbound: Inbound, survivor: PatientKey, actor: Actor, partition: int) -> str:
    message = inbound.message
    mrgs = inbound.segments("MRG")
    if not mrgs:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, "the ADT^A40 message has no MRG segment")
    prior = PatientKey(segment_field(message, mrgs[0], 1), segment_field(message, mrgs[0], 1, 4))
    if not prior.patient_id:
        raise rejected(ErrorCode.REQUIRED_FIELD_MISSING, "MRG-1 (the prior patient ID) is empty", "MRG^1^1")
    if prior == survivor:
        raise rejected(ErrorCode.DATA_TYPE, "MRG-1 names the patient PID-3 names", "MRG^1^1")
    if not service.patient_exists(archive.engine, survivor, partition=partition):  # the prior one takes the new ID
        done = service.update_patient(archive, actor, prior, PatientChanges(
            patient_id=survivor.patient_id, issuer=survivor.issuer), source="hl7", partition=partition)  # fmt: skip
    else:
        done = service.merge_patients(archive, actor, prior, survivor, source="hl7", partition=partition)
    return f"correction {done.id}: patient {prior} merged into {survivor} ({done.instance_count} instance(s))"
