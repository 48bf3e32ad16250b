"""ORM^O01 and OMI^O23 orders as worklist entries (issue 17 item 6).

Each OBR (with the ORC before it) is one order. ORC-1 says what to do: ``NW`` (new), ``XO``
(changed) and ``SC`` (status changed) create or update the entry with the order's accession
number; ``CA``, ``OC``, ``DC`` and ``OD`` cancel it. Where the values come from (IHE RAD TF-2
Procedure Scheduled, with OMI's IPC segment winning over OBR where both have a value):

| worklist | ORM^O01 | OMI^O23 |
|---|---|---|
| patient ID, issuer, name, birth date, sex | PID-3.1, PID-3.4, PID-5, PID-7, PID-8 | same |
| accession number | OBR-18, else ORC-3 / OBR-3 (filler order number) | IPC-1 |
| requested procedure ID and description | OBR-19, OBR-4 (text, else code) | IPC-2, OBR-4 |
| scheduled procedure step ID | OBR-20 | IPC-4 |
| scheduled station AE title | OBR-21 | IPC-9 |
| modality | OBR-24 | IPC-5 |
| scheduled start | TQ1-7, else OBR-27.4, else ORC-7.4, else OBR-36 | same |
| study instance UID | ZDS-1 | IPC-3 |
| referring physician | OBR-16 | same |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import hl7
from sqlalchemy import Engine

from pacs.access import DEFAULT_PARTITION
from pacs.errors import NotFound
from pacs.hl7.messages import ErrorCode, Inbound, failed, rejected, segment_field
from pacs.worklist import orders
from pacs.worklist.orders import InvalidOrder, Order


class OrderAction(Enum):
    SCHEDULE = "schedule"
    CANCEL = "cancel"


_ACTIONS = {"NW": OrderAction.SCHEDULE, "XO": OrderAction.SCHEDULE, "SC": OrderAction.SCHEDULE,
            "CA": OrderAction.CANCEL, "OC": OrderAction.CANCEL, "DC": OrderAction.CANCEL, "OD": OrderAction.CANCEL}
HL7_SEX = {"M": "M", "F": "F", "O": "O", "A": "O", "N": "O", "U": "", "": ""}


@dataclass(frozen=True, slots=True)
class OrderMessage:
    action: OrderAction
    order: Order


def parse_orders(inbound: Inbound) -> list[OrderMessage]:
    """The orders of an ORM^O01 / OMI^O23; :class:`~pacs.hl7.messages.Refusal` (AR) when malformed."""
    message = inbound.message
    pids = inbound.segments("PID")
    if not pids:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, "the order message has no PID segment")
    pid = pids[0]
    orcs, obrs = inbound.segments("ORC"), inbound.segments("OBR")
    if not orcs or not obrs:
        raise rejected(ErrorCode.SEGMENT_SEQUENCE, "the order message needs an ORC and an OBR segment")
    ipcs, tq1s, zdss = inbound.segments("IPC"), inbound.segments("TQ1"), inbound.segments("ZDS")
    patient = {
        "patient_id": segment_field(message, pid, 3),
        "issuer": segment_field(message, pid, 3, 4),
        "patient_name": person_name(message, pid, 5),
        "birth_date": segment_field(message, pid, 7)[:8],
        "sex": HL7_SEX.get(segment_field(message, pid, 8).upper()[:1], ""),
    }
    found: list[OrderMessage] = []
    for i, obr in enumerate(obrs):
        orc = orcs[i] if i < len(orcs) else orcs[0]
        control = segment_field(message, orc, 1).upper()
        action = _ACTIONS.get(control)
        if action is None:
            raise rejected(ErrorCode.TABLE_VALUE_NOT_FOUND,
                           f"order control {control[:4]!r} is not supported (NW, XO, SC, CA, OC, DC, OD are)",
                           f"ORC^{i + 1}^1")
        ipc = ipcs[i] if i < len(ipcs) else None
        start = _scheduled_start(message, tq1s[i] if i < len(tq1s) else None, obr, orc)

        def ipc_or(field: int, fallback: str, ipc: hl7.Segment | None = ipc) -> str:
            return (segment_field(message, ipc, field) if ipc is not None else "") or fallback

        accession = ipc_or(1, segment_field(message, obr, 18) or segment_field(message, orc, 3)
                           or segment_field(message, obr, 3))
        if not accession:
            raise rejected(ErrorCode.REQUIRED_FIELD_MISSING,
                           "the order has no accession number (OBR-18, ORC-3, OBR-3 or IPC-1)", f"OBR^{i + 1}^18")
        order = Order(
            accession_number=accession, **patient,
            requested_procedure_id=ipc_or(2, segment_field(message, obr, 19)),
            requested_procedure=segment_field(message, obr, 4, 2) or segment_field(message, obr, 4, 1),
            step_id=ipc_or(4, segment_field(message, obr, 20)),
            station_aet=ipc_or(9, segment_field(message, obr, 21)),
            modality=ipc_or(5, segment_field(message, obr, 24)).upper(),
            start_date=start[:8], start_time=start[8:14],
            study_uid=ipc_or(3, segment_field(message, zdss[i], 1) if i < len(zdss) else ""),
            referring_physician=person_name(message, obr, 16, offset=1),
            placer_order=segment_field(message, orc, 2), filler_order=segment_field(message, orc, 3))
        found.append(OrderMessage(action, order))
    return found


def apply_orders(engine: Engine, received: list[OrderMessage], partition: int = DEFAULT_PARTITION) -> str:
    """Schedule or cancel each order in ``partition`` (the sender's); a sentence for the log. Refusals: AR
    for a value the worklist cannot carry, AE for a cancel of an order it does not hold."""
    done: list[str] = []
    for item in received:
        try:
            if item.action is OrderAction.SCHEDULE:
                entry, created = orders.schedule(engine, item.order, source="hl7", partition=partition)
                done.append(f"{'scheduled' if created else 'updated'} {entry.accession_number}")
            else:
                entry = orders.cancel(engine, item.order.accession_number, partition=partition)
                done.append(f"cancelled {entry.accession_number}")
        except InvalidOrder as exc:
            raise rejected(ErrorCode.DATA_TYPE, str(exc)) from exc
        except NotFound as exc:
            raise failed(ErrorCode.UNKNOWN_KEY, str(exc), "OBR^1^18") from exc
    return ", ".join(done)


def person_name(message: hl7.Message, segment: hl7.Segment, field: int, offset: int = 0) -> str:
    """An XPN (or an XCN, whose ID comes first: ``offset=1``) as a DICOM PN: Family^Given^Middle^Prefix^Suffix."""
    family, given, middle, suffix, prefix = (segment_field(message, segment, field, offset + c) for c in range(1, 6))
    return "^".join((family, given, middle, prefix, suffix)).rstrip("^")


def _scheduled_start(message: hl7.Message, tq1: hl7.Segment | None, obr: hl7.Segment, orc: hl7.Segment) -> str:
    """The scheduled start as HL7 DTM digits (YYYYMMDDHHMMSS), without fraction or offset."""
    candidates = [segment_field(message, tq1, 7) if tq1 is not None else "", segment_field(message, obr, 27, 4),
                  segment_field(message, orc, 7, 4), segment_field(message, obr, 36)]
    for value in candidates:
        digits = value.split(".", 1)[0].split("+", 1)[0].split("-", 1)[0]
        if digits:
            if not digits.isdigit() or len(digits) < 8:
                raise rejected(ErrorCode.DATA_TYPE, f"the scheduled start {value[:26]!r} is not a date-time")
            return digits
    return ""
