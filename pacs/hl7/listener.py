"""The HL7 listener as a background service of ``cloudfilm serve`` (``[hl7] port``, off by default)."""

from __future__ import annotations

import logging

from pacs.access import AccessScope, ScopeProvider
from pacs.archive import Archive
from pacs.hl7.handler import MessageHandler
from pacs.hl7.messages import AckCode, ErrorCode, build_ack, rejected
from pacs.hl7.mllp import MllpServer, Oversized
from pacs.hl7.results import ReportSink

log = logging.getLogger(__name__)


class Hl7Listener:
    """MLLP on ``HL7_HOST:HL7_PORT``: ORU^R01 results to ``report_sink``, ORM^O01/OMI^O23 orders to the
    worklist, ADT^A08/A40 to patient corrections, each answered with its ACK."""

    name = "hl7"

    def __init__(self, archive: Archive, *, report_sink: ReportSink | None = None,
                 scope: ScopeProvider = AccessScope.everything) -> None:
        settings = archive.settings
        if settings.hl7_port is None:
            raise ValueError("the HL7 listener needs CLOUDFILM_HL7_PORT")
        self._settings = settings
        self._handler = MessageHandler(archive.engine, report_sink=report_sink, scope=scope,
                                       application=settings.ae_title, archive=archive)
        self._server = MllpServer(self._handle, self._oversized, host=settings.hl7_host, port=settings.hl7_port,
                                  max_bytes=settings.hl7_max_message_bytes, idle_timeout=settings.hl7_idle_timeout,
                                  max_connections=settings.hl7_max_connections)
        self._started = False

    def start(self) -> None:
        self._server.start()
        self._started = True
        log.info("HL7 (MLLP) listening on %s:%d", self._settings.hl7_host, self.port)

    def wait_ready(self, timeout: float) -> bool:
        return self._started

    def stop(self) -> None:
        self._server.stop()
        self._started = False

    @property
    def port(self) -> int:
        """The bound port (useful when ``HL7_PORT`` is 0)."""
        return self._server.bound_port

    def _handle(self, raw: bytes) -> bytes:
        ack, handled = self._handler.handle(raw)
        level = logging.INFO if handled.ack is AckCode.ACCEPT else logging.WARNING
        log.log(level, "HL7 %s: %s %s", handled.message_type, handled.ack.value, handled.summary)
        return ack

    def _oversized(self, item: Oversized) -> bytes:
        refusal = rejected(ErrorCode.SEGMENT_SEQUENCE, f"the message is {item.size} bytes, more than the "
                           f"{self._settings.hl7_max_message_bytes} this archive accepts")
        return build_ack(None, AckCode.REJECT, refusal, application=self._settings.ae_title, raw=item.head)
