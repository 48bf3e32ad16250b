"""One HL7 message in, its ACK out: parse, dispatch by message type, map the typed outcome to AA/AE/AR.

ORU^R01 → a report matched to its study and handed to the :class:`~pacs.hl7.results.ReportSink`;
ORM^O01 and OMI^O23 → worklist orders;
ADT^A08 and ADT^A40 → patient corrections (:mod:`pacs.hl7.adt`). Any other type is rejected (AR,
HL7 table 0357 code 200).
The archive's own failures (the index unreachable) are AE, which a sender retries; nothing is
acknowledged AA before it is stored.

Each message works in one partition (:mod:`pacs.partitions`): the one ``[hl7.partitions]`` maps its
Sending Facility (MSH-4.1) to, else the default partition. Results are matched, orders scheduled and
patients corrected there only, so an accession number both hospitals use goes to the sender's study.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pacs.access import DEFAULT_PARTITION, AccessScope, ScopeProvider
from pacs.archive import Archive
from pacs.errors import CloudfilmError, InvalidDataset, InvalidQuery, NotFound, StorageUnavailable
from pacs.hl7.adt import apply_adt
from pacs.hl7.messages import AckCode, ErrorCode, Inbound, Refusal, build_ack, failed, parse_message, rejected
from pacs.hl7.orders import apply_orders, parse_orders
from pacs.hl7.results import ReportSink, match_study, parse_oru

log = logging.getLogger(__name__)

#: (message type, trigger event) -> handler name; the ORU's trigger is R01 only.
SUPPORTED = {("ORU", "R01"): "result", ("ORM", "O01"): "order", ("OMI", "O23"): "order",
             ("ADT", "A08"): "patient", ("ADT", "A40"): "patient"}


@dataclass(frozen=True, slots=True)
class Handled:
    """What became of one message: its ACK code, the refusal if any, a sentence for the log."""

    ack: AckCode
    refusal: Refusal | None
    summary: str
    message_type: str


class MessageHandler:
    """Turns one message's bytes into its ACK's bytes; thread-safe (one short transaction per message)."""

    def __init__(self, engine: Engine, *, report_sink: ReportSink | None = None,
                 scope: ScopeProvider = AccessScope.everything, application: str = "CLOUDFILM",
                 archive: Archive | None = None) -> None:
        """``report_sink``: where matched ORU reports are stored; without one, ORU results are refused
        (AE) after matching, so a RIS keeps them queued until the archive stores reports."""
        self._engine = engine
        self._sink = report_sink
        self._scope = scope
        self._application = application
        self._archive = archive  # ADT corrections rewrite stored objects: they need the whole archive

    def handle(self, raw: bytes) -> tuple[bytes, Handled]:
        inbound: Inbound | None = None
        try:
            inbound = parse_message(raw)
            summary = self._dispatch(inbound)
            handled = Handled(AckCode.ACCEPT, None, summary, f"{inbound.message_type}^{inbound.trigger}")
        except Refusal as refusal:
            kind = f"{inbound.message_type}^{inbound.trigger}" if inbound is not None else "?"
            handled = Handled(refusal.ack, refusal, refusal.reason, kind)
        ack = build_ack(inbound, handled.ack, handled.refusal, application=self._application, raw=raw)
        return ack, handled

    def _partition(self, inbound: Inbound) -> int:
        """The partition the sending facility is mapped to (the default one when unmapped)."""
        if self._archive is None:
            return DEFAULT_PARTITION
        slug = self._archive.settings.hl7_partitions.get(inbound.field("MSH.F4.R1.C1"))
        partition = self._archive.partitions.by_slug(slug) if slug else None
        return partition.id if partition is not None else DEFAULT_PARTITION

    def _dispatch(self, inbound: Inbound) -> str:
        kind = SUPPORTED.get((inbound.message_type, inbound.trigger))
        if kind is None:
            if any(t == inbound.message_type for t, _ in SUPPORTED):
                raise rejected(ErrorCode.UNSUPPORTED_EVENT_CODE,
                               f"trigger event {inbound.trigger[:3]!r} of {inbound.message_type} is not supported",
                               "MSH^1^9")
            raise rejected(ErrorCode.UNSUPPORTED_MESSAGE_TYPE,
                           f"message type {inbound.message_type[:3]!r} is not supported "
                           "(ORU^R01, ORM^O01, OMI^O23, ADT^A08, ADT^A40 are)",
                           "MSH^1^9")
        partition = self._partition(inbound)
        try:
            if kind == "result":
                return self._result(inbound, partition)
            if kind == "patient":
                if self._archive is None:
                    raise failed(ErrorCode.INTERNAL_ERROR, "this listener does not apply patient updates")
                return apply_adt(self._archive, inbound, partition)
            return apply_orders(self._engine, parse_orders(inbound), partition)
        except (StorageUnavailable, SQLAlchemyError) as exc:
            log.exception("HL7 %s: the archive failed", inbound.control_id)
            raise failed(ErrorCode.INTERNAL_ERROR, "the archive cannot store it now; send it again later") from exc

    def _result(self, inbound: Inbound, partition: int) -> str:
        report = parse_oru(inbound)
        scope = self._scope().in_partition(partition)
        try:
            study = match_study(self._engine, report, lambda: scope)
        except InvalidQuery as exc:
            raise rejected(ErrorCode.DATA_TYPE, str(exc), "OBR^1^3") from exc
        if self._sink is None:
            raise failed(ErrorCode.INTERNAL_ERROR, "this archive does not store reports received over HL7 yet")
        try:
            stored = self._sink(report, study)
        except (InvalidDataset, InvalidQuery) as exc:
            raise rejected(ErrorCode.DATA_TYPE, str(exc)) from exc
        except NotFound as exc:
            raise failed(ErrorCode.UNKNOWN_KEY, str(exc)) from exc
        except StorageUnavailable:
            raise
        except CloudfilmError as exc:
            raise failed(ErrorCode.INTERNAL_ERROR, str(exc)) from exc
        return f"report {stored} stored in study {study.study_uid} (accession {study.accession_number})"
